"""Makespan estimates by list scheduling on the task graph.

The same rules the engine follows, on paper: ``sequential`` runs one instance
at a time; ``phased`` runs the phases in order with a barrier between them,
each phase list-scheduled; ``dag`` starts every instance as soon as its
requirements are met. Ready instances start critical-path-first (highest rank,
then lowest id) within the ``parallelism`` cap and every pool's
``concurrency`` cap (an instance holds one slot in each capped pool of its
task) and every pool's start ``rate`` (the engine's own token buckets, in
simulated time (``StaticLimits``, the same buckets the engine uses); an
adaptive rate is taken as configured, since throttling
cannot be foreseen). A quorum requirement is met when ``at_least`` of its nodes
have finished.

Event-driven with heaps: O((nodes + edges) log nodes), fine for 100,000 nodes.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

from fleetrun.plan._expand import longest_paths
from fleetrun.plan._graph import Graph
from fleetrun.plan._pools import StaticLimits

MODES = ("sequential", "phased", "dag")


def phase_layers(graph: Graph) -> tuple[tuple[int, ...], ...]:
    """The node ids of each phase as ``phased`` mode runs them, in phase order.

    A node's phase is its task's phase, moved later when it needs a node of a
    later phase (a plan the loader would reject for ``phased``; moving keeps the
    estimate finite rather than deadlocked). A task without a phase runs in the
    phase of its latest requirement (the first phase when it has none).
    Phases that end up empty are omitted.
    """
    index = {name: i for i, name in enumerate(graph.plan.phases)}
    eff = [0] * len(graph.nodes)
    for wave in graph.waves:
        for i in wave:
            node = graph.nodes[i]
            p = index.get(node.phase, 0) if node.phase is not None else 0
            for req in node.requires:
                for d in req.nodes:
                    if eff[d] > p:
                        p = eff[d]
            eff[i] = p
    buckets: dict[int, list[int]] = {}
    for i, p in enumerate(eff):
        buckets.setdefault(p, []).append(i)
    return tuple(tuple(buckets[p]) for p in sorted(buckets))


def _schedule(
    graph: Graph,
    members: Sequence[int],
    durations: Sequence[float],
    rank: Sequence[float],
    parallelism: int | None,
    limits: StaticLimits,
    start: float,
) -> float:
    """List-schedule ``members`` from time ``start``; requirements outside them count as met.

    Returns the time the last member finishes.
    """
    if not members:
        return start
    node_pools = limits.pools_of_task
    inside = set(members)
    # waiting[(j, r)]: finishes still missing before requirement r of node j is met.
    waiting: dict[tuple[int, int], int] = {}
    unmet: dict[int, int] = {}
    # on_finish[i]: the (node, requirement index) pairs that node i counts towards.
    on_finish: dict[int, list[tuple[int, int]]] = {}
    for j in members:
        count = 0
        for r, req in enumerate(graph.nodes[j].requires):
            missing = req.at_least - sum(1 for d in req.nodes if d not in inside)
            if missing <= 0:
                continue
            waiting[(j, r)] = missing
            count += 1
            for d in req.nodes:
                if d in inside:
                    on_finish.setdefault(d, []).append((j, r))
        if count:
            unmet[j] = count

    # Ready instances wait in one heap per combination of capped pools, so that an
    # instance blocked on a full pool never holds back one that could start.
    ready: dict[tuple[int, ...], list[tuple[float, int]]] = {}

    def make_ready(j: int) -> None:
        heapq.heappush(ready.setdefault(node_pools[graph.nodes[j].task], []), (-rank[j], j))

    for j in members:
        if j not in unmet:
            make_ready(j)

    limit = parallelism if parallelism else len(members)
    running: list[tuple[float, int]] = []
    now = start
    end = start
    done = 0
    while done < len(members):
        # Start what may start, best first. Invariant: len(running) <= limit,
        # and ``limits`` keeps every pool within its cap and its rate.
        wake = math.inf  # when a rate token frees up for a ready instance
        while len(running) < limit:
            best: tuple[float, int] | None = None
            best_key: tuple[int, ...] = ()
            for key, heap in ready.items():
                if not heap or (best is not None and heap[0] >= best):
                    continue
                wait = limits.wait_time(key, now)
                if wait == 0.0:
                    best, best_key = heap[0], key
                elif wait < math.inf:
                    wake = min(wake, now + wait)
            if best is None:
                break
            heapq.heappop(ready[best_key])
            limits.acquire(best_key, now)
            heapq.heappush(running, (now + durations[best[1]], best[1]))
        if len(running) < limit and wake < (running[0][0] if running else math.inf):
            # Only a rate holds the next start back; the nudge makes the
            # refilled bucket hold a whole token despite rounding.
            now = wake + 1e-9
            continue
        if not running:
            break  # nothing runs and nothing can start: unreachable for a valid graph
        now, i = heapq.heappop(running)
        finished = [i]
        while running and running[0][0] <= now:
            finished.append(heapq.heappop(running)[1])
        for i in finished:
            done += 1
            end = now
            limits.release(node_pools[graph.nodes[i].task])
            for j, r in on_finish.get(i, ()):
                left = waiting[(j, r)] - 1
                waiting[(j, r)] = left
                if left == 0:
                    unmet[j] -= 1
                    if unmet[j] == 0:
                        make_ready(j)
    return end


def simulate(
    graph: Graph, mode: str, parallelism: int | None, durations: Sequence[float] | None = None
) -> float:
    """Estimated makespan of ``graph`` in ``mode`` (``sequential``, ``phased`` or ``dag``).

    ``parallelism`` caps running instances (None or 0: no cap beyond the pools).
    ``durations`` gives one duration per node instead of the estimates; ranks are
    then recomputed from them, as the engine would with measured durations.
    Raises ``ValueError`` for an unknown mode or a wrong number of durations.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if durations is None:
        durs: Sequence[float] = [node.estimate for node in graph.nodes]
        rank: Sequence[float] = graph.rank
    else:
        if len(durations) != len(graph.nodes):
            raise ValueError(f"{len(durations)} durations for {len(graph.nodes)} nodes")
        durs = durations
        order = [i for wave in graph.waves for i in wave]
        rank = longest_paths(order, graph.dependents, durs)
    if mode == "sequential":
        return float(sum(durs))
    if mode == "dag":
        members: Sequence[Sequence[int]] = (range(len(graph.nodes)),)
    else:
        members = phase_layers(graph)
    # One set of pools for the whole run: a rate bucket emptied in one phase
    # is still refilling when the next phase begins.
    limits = StaticLimits(graph, 0.0)
    end = 0.0
    for m in members:
        end = _schedule(graph, list(m), durs, rank, parallelism, limits, end)
    return end
