"""The scheduler: walks the graph and starts every node as soon as it may.

One ``_Run`` per ``run_graph`` call, driven by one asyncio loop. Every attempt
runs in a task of the run's ``TaskGroup``. Nodes whose requirements are met
wait in ready heaps, one heap per combination of pools ("signature"), so a
full pool never blocks nodes that do not use it; the next node to start is the
best head among the signatures whose pools all have room.

Invariants:
- ``running <= parallelism`` and every pool's ``in_use <= concurrency``; a
  slot is taken just before an attempt is spawned and given back only after
  the executor returned, i.e. after the process was reaped. A node waiting for
  its retry backoff holds no slot.
- Every member node gets exactly one ``InstanceSettled``.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping, Sequence
from typing import Any

from fleetrun.engine._attempts import AttemptRunner
from fleetrun.engine._clock import Clock, RealClock
from fleetrun.engine._control import RunControl
from fleetrun.engine._deps import Deps
from fleetrun.engine._events import (
    Event,
    InstanceReused,
    InstanceSettled,
    PoolChanged,
    RunEnded,
    RunStarted,
    Subscriber,
)
from fleetrun.engine._limits import Limits, ThrottleSignal
from fleetrun.engine._options import RunOptions, RunResult
from fleetrun.engine._waves import rollout_waves
from fleetrun.errors import UsageError
from fleetrun.executors import AttemptResult, Executor
from fleetrun.plan import Graph, phase_layers

_FINAL_BAD = {
    "failed": "failed",
    "skipped": "was skipped",
    "cancelled": "was cancelled",
    "not_started": "was not started",
}


async def run_graph(
    graph: Graph,
    options: RunOptions,
    executors: Executor | Mapping[str, Executor],
    subscribers: Sequence[Subscriber] = (),
    *,
    control: RunControl | None = None,
    durable: Callable[[], Awaitable[None]] | None = None,
    clock: Clock | None = None,
) -> RunResult:
    """Run ``graph`` under ``options``, emitting events to ``subscribers``.

    ``executors`` maps each executor kind a task's ``runs_on`` may name to the
    executor that runs it (a single executor serves as ``local``); a task
    whose kind has none is a ``UsageError`` before anything starts.
    ``control`` lets a caller interrupt the run; ``durable``, when given, is
    awaited (once per scheduling round) before starting nodes whose
    requirements settled since its last call; ``clock`` paces retries and
    rate limits (default: the real clock). Returns when every member node has
    settled. Cancelling the caller ends every running attempt first.
    """
    by_kind = dict(executors) if isinstance(executors, Mapping) else {"local": executors}
    missing = sorted({t.runs_on for t in graph.plan.tasks.values()} - set(by_kind))
    if missing:
        raise UsageError(f"no executor for runs_on: {', '.join(missing)}")
    run = _Run(graph, options, by_kind, tuple(subscribers), control, durable, clock)
    return await run.run()


class _Started:
    """Awaitable over a coroutine that already ran up to its first suspension."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, None], first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, None]:
        value = self.first
        coro = self.coro
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as e:  # cancellation and the like go to the attempt
                try:
                    value = coro.throw(e)
                except StopIteration:
                    return
            else:
                try:
                    value = coro.send(sent)
                except StopIteration:
                    return


async def _continue(coro: Coroutine[Any, Any, None], first: Any) -> None:
    await _Started(coro, first)


class _Run:
    """The state of one run. Each mutable field's invariant is written beside it;
    ``AttemptRunner`` changes them only through the methods under "the
    attempt's side" below."""

    def __init__(
        self,
        graph: Graph,
        options: RunOptions,
        executors: Mapping[str, Executor],
        subscribers: tuple[Subscriber, ...],
        control: RunControl | None,
        durable: Callable[[], Awaitable[None]] | None,
        clock: Clock | None,
    ) -> None:
        self.graph = graph
        self.options = options
        self.executors = executors
        self.subscribers = subscribers
        self.control = control
        self.durable = durable
        self.clock: Clock = clock if clock is not None else RealClock()
        self.rng = random.Random(options.seed)
        n = len(graph.nodes)
        reused = options.reused
        only = options.only
        member = [False] * n
        runnable = range(n) if only is None else only
        for i in runnable:
            if i not in reused:
                member[i] = True
        # Invariant: member[i] <=> i may start in this run (in ``only``, not reused).
        self.member = member
        self.members = [i for i in range(n) if member[i]]
        # "" = not settled; a final state otherwise, written once (``settle``).
        self.state: list[str] = [""] * n
        # Published outputs of settled nodes (and reused ones); only grows.
        self.outputs: dict[int, Mapping[str, str]] = {i: dict(o) for i, o in reused.items()}
        # When each node last became ready (requirements met, or retry backoff over).
        self.ready_at = [0.0] * n
        # Why each node waited between ready_at and its start (``AttemptStarted.
        # queued_reason``; see ``_why``): set on the paths that hold or skip a
        # node, never on the plain path. A wave or phase hold writes its reason
        # here and the time the hold ended in ``unheld_at``.
        self.why: list[str | None] = [None] * n
        self.unheld_at: dict[int, float] = {}
        # Wall time fill() last stopped at the -j cap with ready nodes left.
        self.cap_full_at = -math.inf
        # Attempts started per node (an attempt that never ran is taken back).
        self.attempts = [0] * n
        # Invariant: running <= cap; counts attempts holding their slots.
        self.running = 0
        # Nodes sleeping through a retry backoff (holding no slot).
        self.waiting = 0
        self.cap = 1 if options.mode == "sequential" else options.parallelism
        self.cap_why = (
            "parallelism limit (-j 1, sequential mode)"
            if options.mode == "sequential"
            else f"parallelism limit (-j {self.cap})"
        )
        # Once stopping, nothing new starts; stop_reason says why.
        self.stopping = False
        self.stop_reason = ""
        self.interrupted = False
        self.failed_any = False
        # A dependency settled since the journal last confirmed durability.
        self.dirty = True
        # True while ``fill`` runs (re-entry from an eager attempt start is a no-op).
        self.filling = False
        self.wake = asyncio.Event()
        # The live Task of every attempt that suspended (for cancellation).
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.tg: asyncio.TaskGroup | None = None
        # The one rate timer, armed for the soonest rate token (timer_at).
        self.timer: asyncio.Task[None] | None = None
        self.timer_at = math.inf
        self.seq = 0  # FIFO order of ready nodes (priority fifo)
        # Invariant (Limits): in_use[p] <= concurrency[p] for every pool.
        self.limits = Limits(graph, self.clock.now(), self._pool_changed)
        # Ready nodes, one heap per pool signature; ready_count = their total.
        self.sigs: dict[tuple[int, ...], list[tuple[float, int]]] = {}
        # Per signature: (wall time, reason) of the last time its pools held it back.
        self.sig_blocked: dict[tuple[int, ...], tuple[float, str]] = {}
        self.ready_count = 0
        self.pools_of = [self.limits.pools_of_task[node.task] for node in graph.nodes]
        # Phased mode: nodes of later phases wait in ``held`` until theirs opens;
        # phases before ``phase`` are fully settled.
        self.phase_of: list[int] | None = None
        self.phase = 0
        self.phase_left: list[int] = []
        self.held: list[list[int]] = []
        self.phase_names: list[str] = []
        if options.mode == "phased":
            self._init_phases()
        self.deps = Deps(graph, self.members, self._on_ready, self._on_impossible)
        # Rolling waves: instances of later waves wait in ``waves.held`` (see _waves.py).
        self.waves = rollout_waves(self, graph)
        self.attempt_runner = AttemptRunner(self)

    # -- the attempt's side: what AttemptRunner may call ---------------------------

    def executor_for(self, kind: str) -> Executor:
        """The executor of kind ``kind`` (checked by ``run_graph`` before the run)."""
        return self.executors[kind]

    def release(self, j: int, pools: tuple[int, ...], forget: bool) -> None:
        """Attempt of ``j`` returned: give back its slot and pool slots."""
        self.running -= 1
        if pools:
            self.limits.release(pools)
        if forget:
            self.forget(j)
            self.wake.set()

    def forget(self, j: int) -> None:
        """``j`` has no live attempt Task any more."""
        self.tasks.pop(j, None)

    def not_an_attempt(self, j: int) -> None:
        """The attempt just counted for ``j`` never ran: take it back."""
        self.attempts[j] -= 1

    def pools_succeeded(self, pools: tuple[int, ...], started_at: float) -> None:
        """An attempt in ``pools`` succeeded (adaptive pools may speed up)."""
        self.limits.succeeded(pools, started_at, self.clock.now())

    def throttle_signal(
        self, pools: tuple[int, ...], result: AttemptResult, log_path: str, started_at: float
    ) -> ThrottleSignal | None:
        """A failed attempt in ``pools``: a throttle signal (pools pause and adapt) or None."""
        return self.limits.throttle_signal(pools, result, log_path, started_at, self.clock.now())

    async def backoff(self, j: int, n: int, delay: float) -> None:
        """Wait ``delay`` seconds holding no slot, then queue ``j`` for attempt ``n + 1``
        (or settle it when the run stopped meanwhile)."""
        self.waiting += 1
        self.kick()  # the slot the attempt held is free again
        try:
            await self.clock.sleep(delay)
        except asyncio.CancelledError:
            self.settle(
                j,
                "cancelled",
                f"ended before attempt {n + 1}: " + self.stop_reason.removeprefix("not started: "),
            )
            raise
        finally:
            self.waiting -= 1
            self.forget(j)
            self.wake.set()
        if self.stopping:
            self.settle(
                j,
                "not_started" if not self.interrupted else "cancelled",
                f"attempt {n + 1} {self.stop_reason}",
            )
        else:
            self.ready_at[j] = time.time()
            self.why[j] = None  # a retry is never held by a wave or a phase
            self._push(j)
        self.kick()

    # -- events -----------------------------------------------------------------

    def emit(self, ev: Event) -> None:
        for s in self.subscribers:
            s(ev)

    def _pool_changed(
        self, pool: str, rate: float | None, concurrency: int | None, paused: float, reason: str
    ) -> None:
        self.emit(
            PoolChanged(
                at=time.time(),
                pool=pool,
                rate=rate if rate is not None else 0.0,
                reason=reason,
                concurrency=concurrency,
                paused=paused,
            )
        )

    # -- phases -------------------------------------------------------------------

    def _init_phases(self) -> None:
        phase_of = [0] * len(self.graph.nodes)
        layers = phase_layers(self.graph)
        self.phase_names = [
            self.graph.nodes[layer[0]].phase or str(p + 1) for p, layer in enumerate(layers)
        ]
        self.phase_left = [0] * len(layers)
        self.held = [[] for _ in layers]
        for p, layer in enumerate(layers):
            for i in layer:
                phase_of[i] = p
                if self.member[i]:
                    self.phase_left[p] += 1
        self.phase_of = phase_of
        self.phase = 0
        self._advance_phase()

    def _advance_phase(self) -> None:
        # Invariant: phases before ``self.phase`` are fully settled.
        while self.phase < len(self.phase_left) and self.phase_left[self.phase] == 0:
            self.phase += 1
            if self.phase < len(self.held):
                now = time.time()
                held, self.held[self.phase] = self.held[self.phase], []
                waves = getattr(self, "waves", None)  # None while phases are set up
                if waves is not None:
                    waves.restart(self.phase_names[self.phase])
                for j in held:
                    self.unheld_at[j] = now
                    self._admit(j)
                if waves is not None:
                    waves.advance()

    # -- readiness ----------------------------------------------------------------

    def _on_ready(self, j: int) -> None:
        if self.state[j] or not self.member[j]:
            return
        self.ready_at[j] = time.time()
        self._admit(j)

    def _on_wave_open(self, j: int) -> None:
        """A node held by its wave may go on (it stays ready since ``ready_at``)."""
        if self.state[j] or not self.member[j]:
            return
        self.unheld_at[j] = time.time()
        self._admit(j)

    def _admit(self, j: int) -> None:
        if self.waves is not None and self.waves.hold(j):
            self.why[j] = "wave closed"
            return
        if self.phase_of is not None and self.phase_of[j] > self.phase:
            self.why[j] = "phase"
            self.held[self.phase_of[j]].append(j)
            return
        self._push(j)

    def _push(self, j: int) -> None:
        mode = self.options.mode
        if mode == "sequential":
            key: float = float(j)
        elif self.options.priority == "fifo":
            self.seq += 1
            key = float(self.seq)
        else:
            key = -self.graph.rank[j]
        sig = self.pools_of[j]
        heap = self.sigs.get(sig)
        if heap is None:
            heap = self.sigs[sig] = []
        heapq.heappush(heap, (key, j))
        self.ready_count += 1
        if self.waves is not None:
            self.waves.pushed_node(j)

    def _on_impossible(self, j: int, reason: str, stopped: bool) -> None:
        if self.state[j] or not self.member[j]:
            return
        if stopped and self.stopping:
            # Blocked only because the run is stopping: it never started, it
            # was not skipped for a failure (``retry`` runs it again either way).
            self.settle(j, "not_started", self.stop_reason)
        else:
            self.settle(j, "skipped", reason)

    # -- settling -----------------------------------------------------------------

    def settle(
        self,
        i: int,
        state: str,
        reason: str = "",
        outputs: Mapping[str, str] | None = None,
    ) -> None:
        """Record node i's final state, emit it and update its dependents."""
        if self.state[i]:
            return
        self.state[i] = state
        if outputs:
            self.outputs[i] = outputs
        node = self.graph.nodes[i]
        self.emit(
            InstanceSettled(
                at=time.time(),
                node=i,
                key=node.key,
                state=state,  # type: ignore[arg-type]
                reason=reason,
                attempts=self.attempts[i],
                outputs=outputs or {},
            )
        )
        if self.graph.dependents[i]:
            # Only a dependent's start must wait until this state is on disk.
            self.dirty = True
        if self.deps.is_watched(i):
            ok = state == "succeeded"
            stopped = state in ("cancelled", "not_started")
            self.deps.settled(i, ok, _FINAL_BAD.get(state, state), stopped)
        if self.phase_of is not None:
            self.phase_left[self.phase_of[i]] -= 1
            self._advance_phase()
        if self.waves is not None:
            self.waves.settled(i, state, node.target)

    def on_final_failure(self, i: int) -> None:
        """A node failed for good: apply ``fail_fast``."""
        self.failed_any = True
        ff = self.options.fail_fast
        if ff is not None and not self.stopping:
            self._stop(f"not started: --fail-fast after {self.graph.nodes[i].key} failed")
            if ff == "kill":
                self._cancel_all()

    def _stop(self, reason: str) -> None:
        self.stopping = True
        self.stop_reason = reason
        if self.timer is not None:
            self.timer.cancel()

    def _cancel_all(self) -> None:
        for t in list(self.tasks.values()):
            t.cancel()

    def _on_interrupt(self, presses: int) -> None:
        if presses == 1 or not self.interrupted:
            self.interrupted = True
            self._stop("not started: the run was interrupted")
            self._cancel_all()
        else:
            for executor in self.executors.values():
                executor.kill_now()
        self.kick()

    # -- starting -----------------------------------------------------------------

    def _on_promote(self) -> None:
        if self.waves is not None:
            self.waves.promote()
        self.kick()

    def kick(self) -> None:
        """Something changed: start what can start now, or let the main loop do it."""
        if self.durable is None and self.tg is not None:
            self.fill()
            if self.running or self.waiting:
                # Started here; the main loop has nothing to decide until the
                # last attempt or backoff ends (which kicks again).
                return
        self.wake.set()

    def can_start(self) -> bool:
        return (
            not self.stopping
            and self.ready_count > 0
            and (self.cap is None or self.running < self.cap)
        )

    def fill(self) -> None:
        """Start ready nodes, best first, while caps and rates allow."""
        if self.filling:
            return  # called from an attempt started by this very loop: it goes on below
        limits = self.limits
        sigs = self.sigs
        cap = self.cap
        ready_at = self.ready_at
        why = self.why
        while not self.stopping and self.ready_count > 0:
            if cap is not None and self.running >= cap:
                self.cap_full_at = time.time()  # the ready nodes wait for -j
                return
            now = -1.0
            best: tuple[float, int] | None = None
            best_sig: tuple[int, ...] = ()
            soonest = math.inf
            for sig, heap in sigs.items():
                if not heap:
                    continue
                if sig:
                    if now < 0:
                        now = self.clock.now()
                    w = limits.wait_time(sig, now)
                    if w > 0:
                        soonest = min(soonest, w)
                        self.sig_blocked[sig] = (time.time(), limits.blocked_by)
                        continue
                if best is None or heap[0] < best:
                    best = heap[0]
                    best_sig = sig
            if best is None:
                if soonest < math.inf:
                    self._arm_timer(soonest)
                return
            heapq.heappop(sigs[best_sig])
            self.ready_count -= 1
            j = best[1]
            if best_sig:
                limits.acquire(best_sig, now)  # ``now`` was read: best_sig is not empty
                self._why(j, best_sig)
            elif why[j] is not None or self.cap_full_at >= ready_at[j]:
                self._why(j, best_sig)
            self.running += 1
            n = self.attempts[j] = self.attempts[j] + 1
            # Eager start: run the attempt up to its first real suspension here;
            # an attempt that completes without suspending (e.g. the no-op
            # executor) never costs a Task. One that suspends continues in a
            # Task of the run's TaskGroup, from exactly where it stopped.
            coro = self.attempt_runner.attempt(j, n)
            self.filling = True
            try:
                first = coro.send(None)
            except StopIteration:
                continue
            finally:
                self.filling = False
            assert self.tg is not None
            self.tasks[j] = self.tg.create_task(_continue(coro, first))

    def _why(self, j: int, sig: tuple[int, ...]) -> None:
        """Decide why node ``j``, starting now, waited since it became ready.

        Two spans: held by its rollout wave or phase (from ``ready_at`` to
        ``unheld_at``), then in the ready queue until now. The queue's reason
        is the last obstacle seen while ``j`` was in it: its pools (full, rate,
        Retry-After pause), else the -j limit. When both spans have a reason,
        the longer one wins.
        """
        held = self.why[j]
        queued = self.ready_at[j] if held is None else self.unheld_at.pop(j, self.ready_at[j])
        reason: str | None = None
        if sig:
            blocked = self.sig_blocked.get(sig)
            if blocked is not None and blocked[0] >= queued:
                reason = blocked[1]
        if reason is None and self.cap_full_at >= queued:
            reason = self.cap_why
        if (
            held is not None
            and reason is not None
            and (queued - self.ready_at[j] >= time.time() - queued)
        ):
            reason = held
        self.why[j] = reason if reason is not None else held

    def _arm_timer(self, delay: float) -> None:
        at = self.clock.now() + delay
        if self.timer is not None and not self.timer.done() and self.timer_at <= at:
            return
        if self.timer is not None:
            self.timer.cancel()
        self.timer_at = at
        assert self.tg is not None
        self.timer = self.tg.create_task(self._rate_timer(delay))

    async def _rate_timer(self, delay: float) -> None:
        await self.clock.sleep(delay)
        self.timer = None
        self.timer_at = math.inf
        self.kick()

    # -- the run ------------------------------------------------------------------

    async def run(self) -> RunResult:
        opts = self.options
        graph = self.graph
        started = time.time()
        loop = asyncio.get_running_loop()
        self.emit(
            RunStarted(
                at=started,
                run_id=opts.run_id,
                plan_name=graph.plan.name,
                mode=opts.mode,
                parallelism=opts.parallelism,
                nodes=len(self.members),
            )
        )
        for i, outs in opts.reused.items():
            self.emit(
                InstanceReused(at=time.time(), node=i, key=graph.nodes[i].key, outputs=dict(outs))
            )
        try:
            async with asyncio.TaskGroup() as tg:
                self.tg = tg
                if self.control is not None:
                    self.control._attach(loop, self._on_interrupt, self._on_promote)
                self._seed()
                await self._loop()
                if self.timer is not None:
                    self.timer.cancel()
        finally:
            self.tg = None
            if self.control is not None:
                self.control._detach()
        reason = self.stop_reason or "not started: no slot could ever free up"
        for i in self.members:
            if not self.state[i]:
                self.settle(i, "not_started", reason)
        states = {i: self.state[i] for i in self.members}
        for i in opts.reused:
            states[i] = "reused"
        if self.interrupted:
            status = "interrupted"
        elif all(s in ("succeeded", "reused") for s in states.values()):
            status = "succeeded"
        else:
            status = "failed"
        result = RunResult(
            run_id=opts.run_id,
            status=status,  # type: ignore[arg-type]
            states=states,
            outputs={i: o for i, o in self.outputs.items() if i in states},
            started_at=started,
            ended_at=time.time(),
        )
        self.emit(
            RunEnded(
                at=result.ended_at, run_id=opts.run_id, status=result.status, counts=result.counts
            )
        )
        return result

    def _seed(self) -> None:
        reused = self.options.reused
        absent = [
            i
            for i in range(len(self.graph.nodes))
            if not self.member[i] and i not in reused and self.deps.is_watched(i)
        ]
        for i in reused:
            self.deps.settled(i, True, "succeeded")
        for i in absent:
            self.deps.settled(i, False, "is not part of this run")
        self.deps.start()
        if self.waves is not None:
            self.waves.start()
        nodes = self.graph.nodes
        for j in self.members:
            if not nodes[j].requires:
                self._on_ready(j)
        if self.waves is not None:
            self.waves.advance()  # a first wave with nothing to start is done at once

    async def _loop(self) -> None:
        while True:
            if self.can_start():
                if self.durable is not None and self.dirty:
                    self.dirty = False
                    await self.durable()
                    continue
                self.fill()
            if self.running == 0 and self.waiting == 0:
                timer_live = self.timer is not None and not self.timer.done()
                # A wave waiting for promote keeps the run alive (until it stops).
                promote = self.waves is not None and self.waves.waiting and not self.stopping
                if not promote and (self.stopping or self.ready_count == 0 or not timer_live):
                    return
            self.wake.clear()
            await self.wake.wait()
