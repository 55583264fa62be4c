"""Splitting the fleet into rollout waves (pure; used by the engine and the planner).

As Ansible's ``serial``: sizes are taken in order and the last one repeats
until every target has a wave. Only targets that some task fans out over
take part (the fleet, in plan order). A percentage is of the whole fleet,
truncated, at least 1; a group takes its members that no earlier wave took
(in fleet order); a count takes the next targets in fleet order. A wave that
would be empty (a group whose members all went earlier) is left out; when the
last size is a group and targets remain, they form one last wave.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fleetrun.plan._graph import Graph
from fleetrun.plan._model import ALL_TARGETS, Plan, Rollout


def wave_targets(
    plan: Plan, rollout: Rollout | None = None, opened: int = 0
) -> list[tuple[str, ...]]:
    """The targets of each wave, in order (one wave of every target without a rollout).

    ``opened``: how many waves had already opened in the run being continued
    (``retry``, ``--resume``). Those waves proved the change, so their targets
    form the first wave together; the waves that never opened keep their
    order and gates.
    """
    waves = _split(plan, rollout if rollout is not None else plan.rollout)
    if opened > 1:
        first = tuple(t for wave in waves[:opened] for t in wave)
        waves = [first, *waves[opened:]]
    return waves


def _split(plan: Plan, rollout: Rollout | None) -> list[tuple[str, ...]]:
    used = {t for task in plan.tasks.values() for t in task.targets or ()}
    fleet = [t for t in plan.targets if t in used]
    if rollout is None or not rollout.waves or not fleet:
        return [tuple(fleet)] if fleet else []
    taken: set[str] = set()
    waves: list[tuple[str, ...]] = []
    sizes = rollout.waves
    k = 0
    while len(taken) < len(fleet):
        size = sizes[min(k, len(sizes) - 1)]
        last = k >= len(sizes) - 1
        k += 1
        if isinstance(size, str):
            members = fleet if size == ALL_TARGETS else plan.groups.get(size, ())
            wave = [t for t in fleet if t in set(members) and t not in taken]
            if not wave and last:
                wave = [t for t in fleet if t not in taken]
        else:
            n = size if isinstance(size, int) else max(1, int(size * len(fleet)))
            wave = [t for t in fleet if t not in taken][:n]
        if wave:
            waves.append(tuple(wave))
            taken.update(wave)
    return waves


def allowed_failures(rollout: Rollout, wave_size: int) -> float:
    """How many failed targets a wave of ``wave_size`` may have without halting
    the rollout (it halts on strictly more)."""
    if rollout.max_failed_fraction:
        return rollout.max_failed * wave_size
    return rollout.max_failed


def waits_for_later(
    graph: Graph,
    j: int,
    later: Callable[[int], bool],
    settled: Callable[[int], bool],
    memo: dict[int, bool],
) -> bool:
    """Whether unsettled node ``j`` waits, itself or through an unsettled
    requirement (transitively), for a node that ``later`` holds back (a wave not
    open yet, a later phase).

    A wave is done when each of its unsettled instances waits for something
    later: so a quorum over every region cannot hold its own wave open for ever,
    while an unfanned ``setup`` that the wave needs does. ``memo`` is shared by
    the calls of one decision. The engine's ``Waves`` and the estimate use it.
    """
    nodes = graph.nodes
    stack = [j]
    while stack:
        i = stack[-1]
        if i in memo:
            stack.pop()
            continue
        if later(i):
            memo[i] = True
            stack.pop()
            continue
        deps = [d for req in nodes[i].requires for d in req.nodes if not settled(d)]
        todo = [d for d in deps if d not in memo]
        if todo:
            stack.extend(todo)
            continue
        memo[i] = any(memo[d] for d in deps)
        stack.pop()
    return memo[j]


def wave_done(
    graph: Graph,
    members: Sequence[Sequence[int]],
    opened: int,
    active: Callable[[int], bool],
    later: Callable[[int], bool],
    settled: Callable[[int], bool],
) -> bool:
    """Whether the open waves ``0..opened`` are done: no member is ``active``
    (queued, running, between retries) or can still become so without a later
    wave or phase (``waits_for_later``)."""
    memo: dict[int, bool] = {}
    for w in range(opened + 1):
        for j in members[w]:
            if settled(j):
                continue
            if active(j) or not waits_for_later(graph, j, later, settled, memo):
                return False
    return True
