"""The scheduler core: a state machine that decides what starts when, and never awaits.

The driver (``_driver.py``) tells the core what happened, one method per kind
of happening, and carries out what the core decided:

=============================  ===============================================
happened                       the core decides
=============================  ===============================================
``begin``                      roots are ready; the first wave opens
``take_starts``                which ready instances start now (their slots
                               are taken); ``timer_at`` when a rate or a
                               Retry-After pause holds the rest
``started``                    the attempt exists (``AttemptStarted``)
``tried``                      it ended before its executor said it exists
                               (a connection refused): it was still tried
``succeeded`` / ``failed`` /   the attempt's verdict: settle, or retry after a
``broken`` / ``cancelled``     backoff (the delay is returned); dependents,
                               phases and waves move on
``backoff_over``               the instance is ready again (or settles, when
                               the run stopped meanwhile)
``timer_fired``                rates may have refilled
``interrupt`` / ``promote``    stop (``cancel_all``) / open the next wave
``finish``                     what never started settles; the run's result
=============================  ===============================================

Events are emitted synchronously to the subscribers as decisions are made.
Between ready and started an instance passes the gates of ``_gates.py``; the
reason of the gate that held it longest becomes its queued reason.

Invariants:
- ``cap.running <= cap.cap`` and every pool's ``in_use <= concurrency``; a slot
  is taken in ``take_starts`` and given back when the driver reports the
  attempt's end, i.e. after the executor returned (a process was reaped). An
  instance waiting for its retry backoff holds no slot.
- Every member instance gets exactly one ``InstanceSettled``; every
  ``AttemptStarted`` gets its ``AttemptEnded``.
- Nothing starts once ``stopping`` is set.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections.abc import Callable, Mapping

from fleetrun.engine._deps import Deps
from fleetrun.engine._events import (
    AttemptEnded,
    AttemptOutcome,
    AttemptStarted,
    Event,
    InstanceReused,
    InstanceSettled,
    PoolChanged,
    RunEnded,
    RunStarted,
    left_running_text,
)
from fleetrun.engine._gates import CapGate, HoldGate, PhaseGate, RolloutGate
from fleetrun.engine._limits import Limits, ThrottleMatch
from fleetrun.engine._options import RunOptions, RunResult
from fleetrun.engine._queued import Queued
from fleetrun.engine._retry import backoff_delay
from fleetrun.engine._shared import limits_for
from fleetrun.engine._verdict import accepted_text
from fleetrun.executors import AttemptResult, Handle
from fleetrun.plan import Graph

_SUCCEEDED = AttemptResult(exit_code=0)
_UNOBSERVED = AttemptResult(exit_code=None)
"""The ending of an attempt whose exit status is unknown (cancelled, or lost to an error)."""

_FINAL_BAD = {
    "failed": "failed",
    "skipped": "was skipped",
    "cancelled": "was cancelled",
    "not_started": "was not started",
}


class Core:
    """The state of one run and every decision on it (see the module doc).

    ``now`` is the run's clock (rates, pauses, backoff); ``wall`` the time
    written on events. ``queue_reasons`` maps a task to its executor's
    ``queue_reason`` (why an attempt may wait between its submission and its
    start), for tasks whose executor has one.
    """

    def __init__(
        self,
        graph: Graph,
        options: RunOptions,
        emit: Callable[[Event], None],
        now: Callable[[], float],
        *,
        wall: Callable[[], float] = time.time,
        queue_reasons: Mapping[str, str] | None = None,
    ) -> None:
        self.graph = graph
        self.options = options
        self.emit = emit
        self.now = now
        self.wall = wall
        self.rng = random.Random(options.seed)
        n = len(graph.nodes)
        reused = options.reused
        runnable = range(n) if options.only is None else options.only
        member = [False] * n
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
        # Attempts counted per node (an attempt that never ran is taken back).
        self.attempts = [0] * n

        # Per task, why its executor may queue an attempt before it starts.
        self.queue_reasons: Mapping[str, str] = queue_reasons or {}

        # -- the current attempt of each node -----------------------------------
        # Wall time it started (``on_started``); until then, when its slots were taken.
        self.began = [0.0] * n
        # Clock time its slots were taken (pool signals are judged on the clock).
        self.t0 = [0.0] * n
        # Whether the executor said the attempt exists (AttemptStarted emitted).
        self.spawned = [False] * n

        # -- start gates -------------------------------------------------------
        self.cap = CapGate(options.mode, options.parallelism)
        # When each node became ready and why it waited (``_queued.py``).
        self.queued = Queued(n, self.cap.reason)
        # Nodes sleeping through a retry backoff (holding no slot).
        self.waiting = 0
        # Once stopping, nothing new starts; stop_reason says why.
        self.stopping = False
        self.stop_reason = ""
        self.interrupted = False
        self.failed_any = False
        # Set when every running attempt must be cancelled (fail-fast kill,
        # interrupt); the driver does it and clears the flag.
        self.cancel_all = False
        # A dependency settled since the journal last confirmed durability.
        self.dirty = True
        # Invariant (Limits): in_use[p] <= concurrency[p] for every pool.
        self.limits: Limits = limits_for(
            graph, now(), self._pool_changed, options.pools_dir, options.run_id
        )
        self.pools_of = [self.limits.pools_of_task[node.task] for node in graph.nodes]
        # Ready nodes, one heap per pool signature; ready_count = their total.
        self.sigs: dict[tuple[int, ...], list[tuple[float, int]]] = {}
        self.ready_count = 0
        self.seq = 0  # FIFO order of ready nodes (priority fifo)
        # Clock time of the soonest rate token or pause end that holds a ready
        # node back (inf: none); the driver arms its timer for it.
        self.timer_at = math.inf

        # -- hold gates (rollout, then phases) ----------------------------------
        self.phases: PhaseGate | None = None
        if options.mode == "phased":
            self.phases = PhaseGate(graph, member, self._unheld)
        self.rollout: RolloutGate | None = None
        if graph.plan.rollout is not None:
            phases = self.phases
            self.rollout = RolloutGate(
                graph,
                graph.plan.rollout,
                options.waves_opened,
                member,
                self._unheld,
                lambda i: bool(self.state[i]) or not self.member[i],
                phases.later if phases is not None else _never,
                emit,
                self._skip,
            )
            if phases is not None:
                phases.rollout = self.rollout
        self.holds: tuple[HoldGate, ...] = tuple(
            g for g in (self.rollout, self.phases) if g is not None
        )
        self.deps = Deps(graph, self.members, self._on_ready, self._on_impossible)

    # -- the run's start and end ------------------------------------------------------

    def begin(self) -> None:
        """The run starts: announce it, seed readiness, open the first wave."""
        opts = self.options
        graph = self.graph
        self.emit(
            RunStarted(
                at=self.wall(),
                run_id=opts.run_id,
                plan_name=graph.plan.name,
                mode=opts.mode,
                parallelism=opts.parallelism,
                nodes=len(self.members),
            )
        )
        for i, outs in opts.reused.items():
            self.emit(
                InstanceReused(
                    at=self.wall(),
                    node=i,
                    key=graph.nodes[i].key,
                    outputs=dict(outs),
                    from_run=opts.reused_from.get(i, ""),
                )
            )
        absent = [
            i
            for i in range(len(graph.nodes))
            if not self.member[i] and i not in opts.reused and self.deps.is_watched(i)
        ]
        for i in opts.reused:
            self.deps.settled(i, True, "succeeded")
        for i in absent:
            self.deps.settled(i, False, "is not part of this run")
        self.deps.start()
        if self.phases is not None:
            self.phases.start()
        if self.rollout is not None:
            self.rollout.start()
        nodes = graph.nodes
        for j in self.members:
            if not nodes[j].requires:
                self._on_ready(j)
        if self.rollout is not None:
            self.rollout.advance()  # a first wave with nothing to start is done at once

    def finish(self, started_at: float) -> RunResult:
        """Nothing runs any more: settle what never started and say how the run ended."""
        reason = self.stop_reason or "not started: no slot could ever free up"
        for i in self.members:
            if not self.state[i]:
                self.settle(i, "not_started", reason)
        opts = self.options
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
            started_at=started_at,
            ended_at=self.wall(),
        )
        self.emit(
            RunEnded(
                at=result.ended_at, run_id=opts.run_id, status=result.status, counts=result.counts
            )
        )
        return result

    def can_start(self) -> bool:
        """Whether ``take_starts`` could start something now (rates aside)."""
        return not self.stopping and self.ready_count > 0 and self.cap.room()

    def idle(self, timer_live: bool) -> bool:
        """Whether the run is over: nothing runs or backs off, and nothing can start
        (stopping, nothing ready, or only a rate holds it and no timer is set). A
        wave waiting for ``promote`` keeps the run alive until it stops."""
        if self.cap.running or self.waiting:
            return False
        rollout = self.rollout
        if rollout is not None and rollout.waiting and not self.stopping:
            return False
        return self.stopping or self.ready_count == 0 or not timer_live

    # -- readiness ------------------------------------------------------------------

    def _on_ready(self, j: int) -> None:
        if self.state[j] or not self.member[j]:
            return
        self.queued.ready(j, self.wall())
        self._admit(j)

    def _unheld(self, j: int) -> None:
        """A hold gate let ready node ``j`` go on (it stays ready since ``ready_at``)."""
        if self.state[j] or not self.member[j]:
            return
        self.queued.unheld(j, self.wall())
        self._admit(j)

    def _admit(self, j: int) -> None:
        for gate in self.holds:
            if gate.hold(j):
                self.queued.held(j, gate.reason, self.wall())
                return
        self._push(j)

    def _push(self, j: int) -> None:
        opts = self.options
        if opts.mode == "sequential":
            key: float = float(j)
        elif opts.priority == "fifo":
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
        if self.rollout is not None:
            self.rollout.pushed(j)

    def _on_impossible(self, j: int, reason: str, stopped: bool) -> None:
        if self.state[j] or not self.member[j]:
            return
        if stopped and self.stopping:
            # Blocked only because the run is stopping: it never started, it
            # was not skipped for a failure (``retry`` runs it again either way).
            self.settle(j, "not_started", self.stop_reason)
        else:
            self.settle(j, "skipped", reason)

    def _skip(self, j: int, why: str) -> None:
        self.settle(j, "skipped", why)

    # -- starting -------------------------------------------------------------------

    def take_starts(self) -> list[tuple[int, int]]:
        """The attempts ``(node, n)`` to start now, best first, their slots taken.

        Sets ``timer_at`` when a rate or a pause holds a ready node back."""
        out: list[tuple[int, int]] = []
        limits = self.limits
        sigs = self.sigs
        cap = self.cap
        queued = self.queued
        wall = self.wall
        while not self.stopping and self.ready_count > 0:
            if not cap.room():
                cap.full_at = wall()  # the ready nodes wait for -j
                break
            now = -1.0
            best: tuple[float, int] | None = None
            best_sig: tuple[int, ...] = ()
            soonest = math.inf
            for sig, heap in sigs.items():
                if not heap:
                    continue
                if sig:
                    if now < 0:
                        now = self.now()
                    w = limits.wait_time(sig, now)
                    if w > 0:
                        soonest = min(soonest, w)
                        queued.blocked(sig, wall(), limits.blocked_by)
                        continue
                if best is None or heap[0] < best:
                    best = heap[0]
                    best_sig = sig
            if best is None:
                if soonest < math.inf:
                    self.timer_at = min(self.timer_at, self.now() + soonest)
                break
            # ``now`` was read: best_sig is not empty. A pool shared with other
            # runs may have been taken since wait_time: then it says so next round.
            if best_sig and not limits.take(best_sig, now):
                continue
            heapq.heappop(sigs[best_sig])
            self.ready_count -= 1
            j = best[1]
            if best_sig:
                self.t0[j] = now
                queued.taken(j, best_sig, wall(), cap.full_at)
            elif queued.waited(j, cap.full_at):
                queued.taken(j, best_sig, wall(), cap.full_at)
            cap.running += 1
            n = self.attempts[j] = self.attempts[j] + 1
            self.spawned[j] = False
            self.began[j] = wall()
            out.append((j, n))
        return out

    def submitted_now(self, j: int) -> None:
        """Attempt of ``j`` handed to an executor that may queue it (``queue_reasons``)."""
        self.queued.submitted_at(j, self.began[j])

    def started(self, j: int, n: int, handle: Handle, display: str, log_path: str) -> None:
        """The executor says attempt ``n`` of ``j`` exists: it starts now."""
        at = self.wall()
        self.spawned[j] = True
        self.began[j] = at
        node = self.graph.nodes[j]
        # The wait between submission and start (a cluster job waiting for a
        # worker) is queued time too; it names the reason when longer.
        reason = self.queued.started(j, at, self.queue_reasons.get(node.task))
        self.emit(
            AttemptStarted(
                at=at,
                node=j,
                key=node.key,
                attempt=n,
                command=display,
                pid=handle.pid,
                pgid=handle.pgid,
                log_path=log_path,
                executor=handle.kind,
                host=handle.host,
                job=handle.job,
                ready_at=self.queued.ready_at[j] or None,
                queued_reason=reason,
            )
        )

    def tried(self, j: int, n: int, kind: str, display: str, log_path: str) -> None:
        """Attempt ``n`` of ``j`` ends before its executor said it exists (the place
        it runs could not be reached, the executor failed before it started): it
        was tried all the same, so it is counted and recorded as an attempt that
        started when its slots were taken, with no process."""
        if self.spawned[j]:
            return
        node = self.graph.nodes[j]
        self.spawned[j] = True
        reason = self.queued.started(j, self.began[j], self.queue_reasons.get(node.task))
        self.emit(
            AttemptStarted(
                at=self.began[j],
                node=j,
                key=node.key,
                attempt=n,
                command=display,
                pid=None,
                pgid=None,
                log_path=log_path,
                executor=kind,
                ready_at=self.queued.ready_at[j] or None,
                queued_reason=reason,
            )
        )

    def timer_fired(self) -> None:
        """The rate timer went off: the driver takes starts again."""
        self.timer_at = math.inf

    # -- an attempt's verdict ---------------------------------------------------------

    def _release(self, j: int) -> None:
        self.cap.running -= 1
        pools = self.pools_of[j]
        if pools:
            self.limits.release(pools)
        self.queued.ended(j)

    def succeeded(
        self,
        j: int,
        n: int,
        outputs: Mapping[str, str] | None,
        left_running: int = 0,
        exit_code: int = 0,
    ) -> None:
        """Attempt ``n`` of ``j`` succeeded (its executor returned); ``left_running``:
        processes it left running that were ended (the record says so);
        ``exit_code``: a non-zero code its task's ``success.exit`` accepts."""
        self._release(j)
        result = _SUCCEEDED
        if left_running or exit_code:
            result = AttemptResult(exit_code, left_running=left_running)
        self.emit(self._ended(j, n, result, "succeeded"))
        pools = self.pools_of[j]
        if pools:
            self.limits.succeeded(pools, self.t0[j], self.now())
        notes = [accepted_text(exit_code)] if exit_code else []
        notes += [left_running_text(left_running, self._remote(j))] if left_running else []
        note = "; ".join(notes)
        self.settle(j, "succeeded", note, outputs=outputs)

    def retry_allowed(self, j: int, n: int, matched: tuple[ThrottleMatch, ...]) -> bool:
        """Whether a failed attempt ``n`` of ``j`` may be retried at all (before the
        driver reads its log for a retry reason)."""
        if self.stopping:
            return False
        policy = self.graph.plan.tasks[self.graph.nodes[j].task].retry
        attempts = policy.attempts
        if matched:
            attempts = max(attempts, self.limits.rules_attempts(matched))
        return n < attempts

    def failed(
        self,
        j: int,
        n: int,
        result: AttemptResult,
        matched: tuple[ThrottleMatch, ...],
        reason: str | None,
        tail: tuple[str, ...],
        describe: str,
    ) -> float | None:
        """Attempt ``n`` of ``j`` failed. ``matched``: its pools' throttle rules that
        matched; ``reason``: why it may be retried (None: it may not); ``tail``:
        the last lines of its log (redacted), for a final failure; ``describe``:
        the failure in words. Returns the backoff delay before the retry, or
        None when the node failed for good."""
        self._release(j)
        node = self.graph.nodes[j]
        signal = (
            self.limits.throttled(matched, self.t0[j], self.now()) if matched else None
        )  # only a pool's throttle rule pauses and adapts a pool
        throttled = signal is not None
        if reason is None or self.stopping:
            self.emit(self._ended(j, n, result, "failed", tail=tail, throttled=throttled))
            self.settle(j, "failed", describe)
            self.final_failure(j)
            return None
        policy = self.graph.plan.tasks[node.task].retry
        delay = backoff_delay(policy, n, self.rng)
        if signal is not None:
            # The real time until the pool lets it start. An adaptive pool backs
            # off for every attempt at once (its rate, concurrency and pauses):
            # a backoff of the instance's own on top would only idle it.
            delay = signal.pause if signal.paced else max(delay, signal.pause)
        self.emit(self._ended(j, n, result, "retrying", reason, delay, throttled=throttled))
        self.waiting += 1
        return delay

    def _remote(self, j: int) -> bool:
        """Whether node ``j``'s attempts run on another host (``runs_on: ssh``)."""
        return self.graph.plan.tasks[self.graph.nodes[j].task].runs_on == "ssh"

    def _ended(
        self,
        j: int,
        n: int,
        result: AttemptResult,
        outcome: AttemptOutcome,
        reason: str | None = None,
        delay: float | None = None,
        tail: tuple[str, ...] = (),
        throttled: bool = False,
    ) -> AttemptEnded:
        return AttemptEnded(
            at=self.wall(),
            node=j,
            key=self.graph.nodes[j].key,
            attempt=n,
            started_at=self.began[j],
            exit_code=result.exit_code,
            signal=result.signal,
            timed_out=result.timed_out,
            outcome=outcome,
            retry_reason=reason,
            retry_delay=delay,
            tail=tail,
            throttled=throttled,
            error_kind=result.error_kind,
            left_running=result.left_running,
            reason=result.reason,
            remote=self._remote(j),
        )

    def broken(self, j: int, n: int, problem: str) -> None:
        """Attempt ``n`` of ``j`` could not be run or observed (a command that cannot
        be rendered, an executor's own error): the node fails. An attempt its
        executor was given is an attempt (``tried`` first); one that never
        reached an executor is not."""
        self._release(j)
        if self.spawned[j]:
            # It was tried but its ending could not be observed: close the
            # attempt so every AttemptStarted has its AttemptEnded.
            ending = AttemptResult(exit_code=None, reason=problem or None, error_kind="internal")
            self.emit(self._ended(j, n, ending, "failed"))
        else:
            self.attempts[j] -= 1  # nothing ran: not an attempt
        self.settle(j, "failed", problem)
        self.final_failure(j)

    def cancelled(self, j: int, n: int) -> None:
        """Attempt ``n`` of ``j`` was cancelled (the run is stopping)."""
        if self.spawned[j]:
            self.emit(self._ended(j, n, _UNOBSERVED, "cancelled"))
        why = (self.stop_reason or "cancelled").removeprefix("not started: ")
        self.settle(j, "cancelled", "ended: " + why)
        self._release(j)

    def backoff_over(self, j: int, n: int) -> None:
        """The backoff before attempt ``n + 1`` of ``j`` is over: queue it again (or
        settle it, when the run stopped meanwhile)."""
        self.waiting -= 1
        if self.stopping:
            self.settle(
                j,
                "not_started" if not self.interrupted else "cancelled",
                f"attempt {n + 1} {self.stop_reason}",
            )
        else:
            self.queued.ready(j, self.wall())  # a retry is never held by a wave or a phase
            self._push(j)

    def backoff_cancelled(self, j: int, n: int) -> None:
        """The backoff before attempt ``n + 1`` was cancelled (the run is stopping)."""
        self.waiting -= 1
        self.settle(
            j,
            "cancelled",
            f"ended before attempt {n + 1}: " + self.stop_reason.removeprefix("not started: "),
        )

    # -- settling ---------------------------------------------------------------------

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
                at=self.wall(),
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
        if self.phases is not None:
            self.phases.settled(i)
        if self.rollout is not None:
            self.rollout.settled(i, state, node.target)

    def final_failure(self, i: int) -> None:
        """A node failed for good: apply ``fail_fast``."""
        self.failed_any = True
        ff = self.options.fail_fast
        if ff is not None and not self.stopping:
            self._stop(f"not started: --fail-fast after {self.graph.nodes[i].key} failed")
            if ff == "kill":
                self.cancel_all = True

    def _stop(self, reason: str) -> None:
        self.stopping = True
        self.stop_reason = reason
        self.timer_at = math.inf

    # -- from outside -----------------------------------------------------------------

    def interrupt(self, presses: int) -> bool:
        """Ctrl-C (or ``cancel``) number ``presses``: the first stops the run and
        cancels every attempt; a later one returns True: kill what is being ended now."""
        if presses == 1 or not self.interrupted:
            self.interrupted = True
            self._stop("not started: the run was interrupted")
            self.cancel_all = True
            return False
        return True

    def promote(self, wave: int | None = None) -> None:
        """``fleetrun promote``: approve the next rollout wave (``wave``: that one only)."""
        if self.rollout is not None:
            self.rollout.promote(wave)

    def _pool_changed(
        self, pool: str, rate: float | None, concurrency: int | None, paused: float, reason: str
    ) -> None:
        self.emit(
            PoolChanged(
                at=self.wall(),
                pool=pool,
                rate=rate if rate is not None else 0.0,
                reason=reason,
                concurrency=concurrency,
                paused=paused,
            )
        )


def _never(_: int) -> bool:
    return False
