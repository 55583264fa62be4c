"""Helpers for tests and benchmarks: build real ``Plan``/``Graph`` objects in code, and a
fake clock.

``plan(...)`` builds a resolved plan without a YAML file; ``graph(...)`` expands
it with the real expansion. ``FakeClock`` advances instantly when slept on and
records every sleep, so retry backoff and rate pacing can be checked exactly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from fleetrun.plan import (
    Graph,
    Need,
    Plan,
    Pool,
    RetryPolicy,
    Scalar,
    Target,
    Task,
    Template,
    expand,
)

NeedSpec = str | tuple[str, int]
"""``"x"`` (auto), ``"x[*]"`` (every instance) or ``("x", at_least)`` (quorum)."""


def task(
    name: str,
    run: str,
    *,
    targets: Sequence[str] | None = None,
    needs: Iterable[NeedSpec] = (),
    phase: str | None = None,
    pools: Sequence[str] = (),
    timeout: float | None = None,
    retry: RetryPolicy | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    estimate: float | None = None,
) -> Task:
    """A plan task; ``targets`` given means fanned out over those target names."""
    parsed: list[Need] = []
    for n in needs:
        if isinstance(n, tuple):
            parsed.append(Need(n[0], mode="quorum", at_least=n[1]))
        elif n.endswith("[*]"):
            parsed.append(Need(n[:-3], mode="all"))
        else:
            parsed.append(Need(n))
    return Task(
        name=name,
        run=Template.parse(run),
        phase=phase,
        for_each=None if targets is None else "all",
        targets=None if targets is None else tuple(targets),
        needs=tuple(parsed),
        pools=tuple(pools),
        timeout=timeout,
        retry=retry or RetryPolicy(),
        env=dict(env or {}),
        cwd=cwd,
        estimate=estimate,
    )


def plan(
    tasks: Sequence[Task],
    *,
    targets: Mapping[str, Mapping[str, Scalar]] | Sequence[str] = (),
    pools: Sequence[Pool] = (),
    phases: Sequence[str] = (),
    vars: Mapping[str, Scalar] | None = None,
    env: Mapping[str, str] | None = None,
    secret_values: Iterable[str] = (),
    base_dir: Path | str = ".",
    name: str = "test",
) -> Plan:
    """A resolved plan from tasks (in order), targets, pools and phases."""
    if isinstance(targets, Mapping):
        tgt = {k: Target(k, dict(v)) for k, v in targets.items()}
    else:
        tgt = {k: Target(k) for k in targets}
    used = {t for task in tasks for t in (task.targets or ())}
    for t in used:
        tgt.setdefault(t, Target(t))
    return Plan(
        name=name,
        path=None,
        base_dir=Path(base_dir).resolve(),
        source_hash="0" * 16,
        env=dict(env or {}),
        secrets=frozenset(),
        secret_values=frozenset(secret_values),
        vars=dict(vars or {}),
        targets=tgt,
        groups={"all": tuple(tgt)},
        pools={p.name: p for p in pools},
        phases=tuple(phases),
        tasks={t.name: t for t in tasks},
    )


def graph(tasks: Sequence[Task], **kwargs: object) -> Graph:
    """``expand(plan(tasks, **kwargs))``."""
    return expand(plan(tasks, **kwargs))  # type: ignore[arg-type]


class FakeClock:
    """A clock that jumps forward when slept on; ``sleeps`` lists every requested wait."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        """The fake time."""
        return self.t

    async def sleep(self, seconds: float) -> None:
        """Record ``seconds``, advance the time, yield once to the loop."""
        self.sleeps.append(seconds)
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Largest number of intervals open at one instant (an end before a start on ties)."""
    points = sorted(
        [(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda p: (p[0], p[1])
    )
    best = cur = 0
    for _, d in points:
        cur += d
        best = max(best, cur)
    return best


def pid_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"
