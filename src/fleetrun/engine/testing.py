"""Helpers for tests and benchmarks: build real ``Plan``/``Graph`` objects in code, a
fake clock, and ``CoreSim``, which drives the scheduler core on virtual time.

``plan(...)`` builds a resolved plan without a YAML file; ``graph(...)`` expands
it with the real expansion. ``FakeClock`` advances instantly when slept on and
records every sleep, so retry backoff and rate pacing can be checked exactly.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fleetrun.engine._events import AttemptEnded, AttemptStarted, Event
from fleetrun.engine._limits import ThrottleMatch
from fleetrun.engine._options import RunResult
from fleetrun.engine._retry import retry_reason
from fleetrun.executors import AttemptResult, Handle
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


class CoreSim:
    """Drives the scheduler core (``engine._core.Core``) on virtual time, with no
    process, no event loop and no sleeping: the clock jumps to the next
    happening (an attempt's start or end, a backoff's end, the rate timer), as
    trio's ``MockClock(autojump_threshold=0)`` does for a whole program.

    ``duration(key, n)`` is how long attempt ``n`` of instance ``key`` runs;
    ``result(key, n)`` how it ends (default: success); ``matched(key, n)`` the
    throttle matches its pools' rules find (default: none). With ``workers``,
    tasks whose name is in ``queued_tasks`` go through a FIFO of that many
    workers: the attempt starts (``on_started``) only when a worker is free,
    as a compute-cluster job does, and the executor's ``queue_reason`` is
    ``"waiting for a worker"``.

    ``events`` holds every event the core emitted; ``run()`` returns the result.
    """

    def __init__(
        self,
        graph: Graph,
        options: object = None,
        *,
        duration: Callable[[str, int], float] = lambda key, n: 1.0,
        result: Callable[[str, int], AttemptResult] | None = None,
        matched: Callable[[str, int], tuple[ThrottleMatch, ...]] | None = None,
        workers: int | None = None,
        queued_tasks: Iterable[str] = (),
        start: float = 0.0,
    ) -> None:
        from fleetrun.engine._core import Core
        from fleetrun.engine._options import RunOptions

        opts = options if isinstance(options, RunOptions) else RunOptions("sim", Path("."))
        self.t = start
        self.events: list[Event] = []
        self.graph = graph
        self._duration = duration
        self._result = result or (lambda key, n: AttemptResult(exit_code=0))
        self._matched = matched or (lambda key, n: ())
        self._workers = workers
        self._queued_tasks = frozenset(queued_tasks)
        reasons = {name: "waiting for a worker" for name in self._queued_tasks}
        self.core = Core(
            graph, opts, self.events.append, self.now, wall=self.now, queue_reasons=reasons
        )

    def now(self) -> float:
        """The virtual time."""
        return self.t

    def run(
        self, *, promote_at: Sequence[float] = (), interrupt_at: float | None = None
    ) -> RunResult:
        """Run to the end; ``promote_at``: times of ``fleetrun promote``;
        ``interrupt_at``: the time of a Ctrl-C."""
        import heapq
        import itertools

        core = self.core
        nodes = self.graph.nodes
        heap: list[tuple[float, int, str, int, int]] = []
        seq = itertools.count()
        free = self._workers if self._workers is not None else 0
        fifo: list[tuple[int, int]] = []
        running: dict[int, int] = {}  # node -> attempt n, between start and end
        for at in promote_at:
            heapq.heappush(heap, (at, next(seq), "promote", -1, 0))
        if interrupt_at is not None:
            heapq.heappush(heap, (interrupt_at, next(seq), "interrupt", -1, 0))
        timer_at = math.inf

        def begin(j: int, n: int) -> None:
            key = nodes[j].key
            core.started(j, n, Handle("sim", pid=j), key, "")
            running[j] = n
            heapq.heappush(heap, (self.t + self._duration(key, n), next(seq), "end", j, n))

        core.begin()
        while True:
            for j, n in core.take_starts():
                if self._workers is not None and nodes[j].task in self._queued_tasks:
                    core.submitted_now(j)
                    fifo.append((j, n))
                else:
                    begin(j, n)
            while fifo and free > 0:
                free -= 1
                begin(*fifo.pop(0))
            if core.cancel_all:
                core.cancel_all = False
                for j, n in list(running.items()):
                    del running[j]
                    core.cancelled(j, n)
                continue
            if core.timer_at < timer_at:
                timer_at = core.timer_at
                heapq.heappush(heap, (timer_at, next(seq), "timer", -1, 0))
            if core.idle(timer_at < math.inf) or not heap:
                break
            at, _, what, j, n = heapq.heappop(heap)
            self.t = max(self.t, at)
            if what == "timer":
                if at == timer_at:
                    timer_at = math.inf
                    core.timer_fired()
            elif what == "promote":
                core.promote()
            elif what == "interrupt":
                core.interrupt(1)
            elif what == "backoff":
                core.backoff_over(j, n)
            elif what == "end" and running.get(j) == n:
                del running[j]
                if self._workers is not None and nodes[j].task in self._queued_tasks:
                    free += 1
                self._end(j, n, heap, seq)
        return core.finish(0.0)

    def _end(self, j: int, n: int, heap: list[tuple[float, int, str, int, int]], seq: Any) -> None:
        import heapq

        core = self.core
        key = self.graph.nodes[j].key
        res = self._result(key, n)
        if res.ok:
            core.succeeded(j, n, res.outputs)
            return
        matched = self._matched(key, n)
        reason: str | None = None
        if core.retry_allowed(j, n, matched):
            policy = self.graph.plan.tasks[self.graph.nodes[j].task].retry
            reason = matched[0].what if matched else retry_reason(policy, res, "")
        delay = core.failed(j, n, res, matched, reason, (), f"exit {res.exit_code}")
        if delay is not None:
            heapq.heappush(heap, (self.t + delay, next(seq), "backoff", j, n))

    def starts(self) -> dict[str, list[float]]:
        """Per instance key, the virtual times its attempts started."""
        out: dict[str, list[float]] = {}
        for ev in self.events:
            if isinstance(ev, AttemptStarted):
                out.setdefault(ev.key, []).append(ev.at)
        return out

    def ends(self) -> dict[str, list[float]]:
        """Per instance key, the virtual times its attempts ended."""
        out: dict[str, list[float]] = {}
        for ev in self.events:
            if isinstance(ev, AttemptEnded):
                out.setdefault(ev.key, []).append(ev.at)
        return out
