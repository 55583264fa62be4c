"""The async driver: owns the tasks, the timer and the executors; the core decides.

``run_graph`` builds a ``Core`` (the state machine of ``_core.py``) and a
``_Driver`` around it. The driver is the only part that awaits: it runs each
attempt the core starts in a task of the run's ``TaskGroup``, sleeps through
retry backoffs, arms the one timer for rates and Retry-After pauses, awaits
the journal's durability, and forwards interrupts and promotions. After every
happening it asks the core what to start next (``_pump``).

Eager start: an attempt runs up to its first real suspension in the call
that starts it; one that completes without suspending (the no-op executor)
never costs a Task. One that suspends continues in a Task of the run's
TaskGroup from exactly where it stopped.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping, Sequence
from typing import Any

from fleetrun.diagnostics import note_secrets
from fleetrun.engine._attempts import AttemptFactory
from fleetrun.engine._clock import Clock, RealClock
from fleetrun.engine._control import RunControl
from fleetrun.engine._core import Core
from fleetrun.engine._ending import ending_text
from fleetrun.engine._events import AttemptOutput, Event, Subscriber
from fleetrun.engine._options import RunOptions, RunResult
from fleetrun.engine._retry import log_tail, retry_reason
from fleetrun.engine._verdict import judge
from fleetrun.errors import FleetrunError, UsageError
from fleetrun.executors import Attempt, AttemptResult, Executor, Handle, OutputRefused
from fleetrun.plan import Graph

_log = logging.getLogger(__name__)


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
    note_secrets(options.redactor.values)
    driver = _Driver(graph, options, by_kind, tuple(subscribers), control, durable, clock)
    return await driver.run()


class _Driver:
    """Carries out one core's decisions (see the module doc)."""

    __slots__ = (
        "attempts",
        "clock",
        "control",
        "core",
        "durable",
        "executors",
        "pumping",
        "subscribers",
        "tasks",
        "tg",
        "timer",
        "timer_at",
        "wake",
    )

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
        self.clock: Clock = clock if clock is not None else RealClock()
        self.subscribers = subscribers
        queue_reasons = {
            name: reason
            for name, task in graph.plan.tasks.items()
            if (reason := executors[task.runs_on].queue_reason) is not None
        }
        self.core = Core(graph, options, self.emit, self.clock.now, queue_reasons=queue_reasons)
        self.executors = executors
        self.attempts = AttemptFactory(graph, options, executors, self.core.outputs)
        self.control = control
        self.durable = durable
        self.wake = asyncio.Event()
        # The live Task of every attempt that suspended (for cancellation).
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.tg: asyncio.TaskGroup | None = None
        # The one timer, armed for the core's ``timer_at`` (clock time).
        self.timer: asyncio.Task[None] | None = None
        self.timer_at = math.inf
        # True while ``_pump`` runs (a re-entry from an eager attempt is picked up by it).
        self.pumping = False

    def emit(self, ev: Event) -> None:
        for s in self.subscribers:
            s(ev)

    # -- the run ----------------------------------------------------------------------

    async def run(self) -> RunResult:
        core = self.core
        started = core.wall()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.TaskGroup() as tg:
                self.tg = tg
                if self.control is not None:
                    self.control._attach(loop, self._on_interrupt, self._on_promote)
                core.begin()
                await self._loop()
                if self.timer is not None:
                    self.timer.cancel()
        finally:
            self.tg = None
            if self.control is not None:
                self.control._detach()
            core.limits.close()  # shared pools: this run's slots and its user entry go
        return core.finish(started)

    async def _loop(self) -> None:
        core = self.core
        while True:
            if core.can_start():
                if self.durable is not None and core.dirty:
                    core.dirty = False
                    await self.durable()
                    continue
                self._pump()
            timer_live = self.timer is not None and not self.timer.done()
            if core.idle(timer_live):
                return
            self.wake.clear()
            await self.wake.wait()

    def _kick(self) -> None:
        """Something changed: start what can start now, or let the main loop do it."""
        self._carry_out()
        if self.durable is None and self.tg is not None:
            self._pump()
            if self.core.cap.running or self.core.waiting:
                # Started here; the main loop has nothing to decide until the
                # last attempt or backoff ends (which kicks again).
                return
        self.wake.set()

    def _carry_out(self) -> None:
        """What the core asked for besides starts: cancellations, the timer's end."""
        core = self.core
        if core.cancel_all:
            core.cancel_all = False
            for t in list(self.tasks.values()):
                t.cancel()
        if core.stopping and self.timer is not None:
            self.timer.cancel()
            self.timer = None
            self.timer_at = math.inf

    def _pump(self) -> None:
        """Start every attempt the core decides to start, until it decides none."""
        if self.pumping:
            return  # called from an attempt started by this very loop: it goes on below
        self.pumping = True
        core = self.core
        try:
            while True:
                starts = core.take_starts()
                if not starts:
                    break
                for j, n in starts:
                    self._launch(j, n)
        finally:
            self.pumping = False
        if core.timer_at < self.timer_at or (core.timer_at < math.inf and self.timer is None):
            self._arm(core.timer_at)

    def _launch(self, j: int, n: int) -> None:
        coro = self._attempt(j, n)
        try:
            first = coro.send(None)
        except StopIteration:
            return
        assert self.tg is not None
        self.tasks[j] = self.tg.create_task(_continue(coro, first))

    def _arm(self, at: float) -> None:
        if self.timer is not None and not self.timer.done() and self.timer_at <= at:
            return
        if self.timer is not None:
            self.timer.cancel()
        self.timer_at = at
        assert self.tg is not None
        self.timer = self.tg.create_task(self._timer(max(0.0, at - self.clock.now())))

    async def _timer(self, delay: float) -> None:
        await self.clock.sleep(delay)
        self.timer = None
        self.timer_at = math.inf
        self.core.timer_fired()
        self._kick()

    # -- one attempt --------------------------------------------------------------------

    async def _attempt(self, j: int, n: int) -> None:
        """Run attempt ``n`` of node ``j``, report its end to the core, sleep
        through its backoff when the core decides on a retry."""
        core = self.core
        factory = self.attempts
        spec: Attempt | str = ""
        result: AttemptResult | None = None
        problem = ""
        executor = factory.executor(j)
        try:
            display = log = ""

            def on_started(handle: Handle) -> None:
                core.started(j, n, handle, display, log)

            on_output = None
            if core.options.output == "stream":
                key = core.graph.nodes[j].key

                def on_output(text: str) -> None:
                    self.emit(AttemptOutput(at=core.wall(), node=j, key=key, attempt=n, text=text))

            spec = factory.build(j, n, on_started, on_output)
            if isinstance(spec, str):
                problem = spec
            else:
                display, log = spec.display, spec.log_path
                if _log.isEnabledFor(logging.DEBUG):
                    _log.debug(
                        "%s: attempt %d on %s: %s",
                        spec.key,
                        n,
                        executor.kind,
                        core.options.redactor.redact(spec.command),
                    )
                if executor.queue_reason is not None:
                    core.submitted_now(j)
                result = await executor.run(spec)
        except asyncio.CancelledError:
            self.tasks.pop(j, None)
            core.cancelled(j, n)
            self.wake.set()
            raise
        except OutputRefused as e:
            # The command ran and ended; what it published cannot be passed on.
            # A failure of the attempt like any other: retried by the task's rule
            # (every failure when ``on`` is not given), with the rule's words.
            reason = core.options.redactor.redact(str(e))
            result = AttemptResult(exit_code=None, reason=reason)
        except Exception as e:  # an executor bug or I/O error fails this node only
            problem = core.options.redactor.redact(_problem(e))
            _log.warning(
                "%s: attempt %d: %s executor raised: %s",
                core.graph.nodes[j].key,
                n,
                executor.kind,
                problem,
                exc_info=_log.isEnabledFor(logging.DEBUG),
            )
            if isinstance(spec, Attempt):
                # Given to its executor: an attempt tried, whatever it got to.
                core.tried(j, n, executor.kind, spec.display, spec.log_path)
        if result is None:
            self.tasks.pop(j, None)
            core.broken(j, n, problem)
            self._kick()
            return
        assert isinstance(spec, Attempt)
        # The verdict is the engine's, by the task's success rule (every executor alike).
        verdict = judge(core.graph.plan.tasks[spec.task].success, result, spec.log_path)
        if verdict.ok:
            # The common case, inline: no extra coroutine per attempt.
            self.tasks.pop(j, None)
            core.succeeded(j, n, result.outputs, result.left_running, result.exit_code or 0)
            self._kick()
            return
        if not core.spawned[j]:
            # It failed before it existed (a connection refused): still tried.
            core.tried(j, n, executor.kind, spec.display, spec.log_path)
        await self._failed(j, n, spec, verdict.result, verdict.refused)

    async def _failed(
        self, j: int, n: int, spec: Attempt, result: AttemptResult, refused: str | None = None
    ) -> None:
        core = self.core
        graph = core.graph
        task = graph.plan.tasks[graph.nodes[j].task]
        pools = core.pools_of[j]
        log = spec.log_path
        # Reads the log in bounded chunks; only on failure, only with a rule to match.
        matched = core.limits.match(pools, result, log) if pools else ()
        reason: str | None = None
        if core.retry_allowed(j, n, matched):
            reason = matched[0].what if matched else retry_reason(task.retry, result, log)
            if reason is not None and refused is not None and not matched:
                reason = refused  # the success rule's words, not "exit 0"
        tail: tuple[str, ...] = ()
        if reason is None or core.stopping:
            tail = tuple(core.options.redactor.redact(x) for x in log_tail(log))
        words = ending_text(
            result.exit_code, result.signal, result.timed_out, result.reason, task.timeout
        )
        delay = core.failed(j, n, result, matched, reason, tail, words)
        key = graph.nodes[j].key
        if delay is not None:
            _log.info(
                "%s: attempt %d of %d failed; retrying in %.3gs: %s",
                key,
                n,
                task.retry.attempts,
                delay,
                core.options.redactor.redact(reason or ""),
            )
        elif result.error_kind is not None:
            _log.info(
                "%s: attempt %d failed (%s): %s; no retry",
                key,
                n,
                result.error_kind,
                core.options.redactor.redact(words),
            )
        if delay is None:
            self.tasks.pop(j, None)
            self._kick()
            return
        self._kick()  # the slot the attempt held is free again
        try:
            await self.clock.sleep(delay)
        except asyncio.CancelledError:
            core.backoff_cancelled(j, n)
            raise
        finally:
            self.tasks.pop(j, None)
            self.wake.set()
        core.backoff_over(j, n)
        self._kick()

    # -- from outside -------------------------------------------------------------------

    def _on_interrupt(self, presses: int) -> None:
        if self.core.interrupt(presses):
            for executor in self.executors.values():
                executor.kill_now()
        self._kick()

    def _on_promote(self, wave: int | None) -> None:
        self.core.promote(wave)
        self._kick()


def _problem(e: Exception) -> str:
    """An exception that stopped an attempt, in words: fleetrun's own errors and a
    refused output say what happened; anything else is named by its type."""
    if isinstance(e, FleetrunError | OutputRefused):
        return str(e)
    return f"{type(e).__name__}: {e}"


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
