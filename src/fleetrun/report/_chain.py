"""Measured-schedule helpers for reports: the critical path, readiness, overlap.

All three read recorded times only. ``start[i]``/``end[i]`` are an instance's
first attempt start and last attempt end; ``dur[i]`` its task time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set

from fleetrun.plan import Graph

_EPS = 1e-6
"""Tolerance when comparing a requirement's end with a dependent's start."""


def longest_chain(
    graph: Graph,
    ran: Set[int],
    dur: Mapping[int, float],
    start: Mapping[int, float],
    end: Mapping[int, float],
) -> tuple[float, list[int]]:
    """The longest chain of ``dur`` along the graph's dependencies among ``ran``.

    An edge d -> i counts only when d ended before i started: i waited for it.
    That is always true of a plain requirement and leaves out the quorum
    members a dependent did not wait for, so the chain is a real lower bound
    of the run's wall time. Returns (length, node ids first to last); ties go
    to the earlier node in plan order.
    """
    best: dict[int, float] = {}
    prev: dict[int, int] = {}
    for wave in graph.waves:
        for i in wave:
            if i not in ran:
                continue
            top, via = 0.0, -1
            for req in graph.nodes[i].requires:
                for d in req.nodes:
                    waited_for = d in best and d in end and end[d] <= start[i] + _EPS
                    if waited_for and (best[d] > top or (best[d] == top and via >= 0 and d < via)):
                        top, via = best[d], d
            best[i] = dur.get(i, 0.0) + top
            if via != -1:
                prev[i] = via
    if not best:
        return 0.0, []
    last = min(best, key=lambda i: (-best[i], i))
    path = [last]
    while path[-1] in prev:
        path.append(prev[path[-1]])
    path.reverse()
    return sum(dur.get(i, 0.0) for i in path), path


def ready_at(
    graph: Graph,
    node: int,
    end: Mapping[int, float],
    pending: Set[int],
    run_start: float,
) -> float:
    """When ``node``'s requirements were all met, as recorded.

    A requirement is met when its ``at_least``-th member ended. Members in
    ``pending`` (part of this run, never ended) never count; any other member
    without an end (reused from an earlier run, or not part of this one)
    counts as met when the run started. Nothing required: the run's start.
    """
    ready = run_start
    for req in graph.nodes[node].requires:
        times = sorted(end.get(d, run_start) for d in req.nodes if d in end or d not in pending)
        if not times or req.at_least <= 0:
            continue
        met = times[min(req.at_least, len(times)) - 1]
        ready = max(ready, met)
    return ready


def peak_overlap(intervals: Iterable[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end at t comes before a start at t)."""
    marks = []
    for a, b in intervals:
        marks.append((a, 1))
        marks.append((max(a, b), -1))
    marks.sort()
    peak = running = 0
    for _, delta in marks:
        running += delta
        peak = max(peak, running)
    return peak
