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

from fleetrun.plan._model import ALL_TARGETS, Plan, Rollout


def wave_targets(plan: Plan, rollout: Rollout | None = None) -> list[tuple[str, ...]]:
    """The targets of each wave, in order (one wave of every target without a rollout)."""
    rollout = rollout if rollout is not None else plan.rollout
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
