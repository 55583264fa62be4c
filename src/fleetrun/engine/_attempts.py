"""One attempt of one node, from its slot to its verdict (succeed, retry, fail, cancel).

The scheduler has already taken the node's slots when ``attempt`` starts; the
``finally`` below gives them back once the executor returned, which for a
process means it was reaped. A retry waits for its backoff holding no slot,
then goes back into the ready heap and competes for slots again.

Files of an attempt: its log, ``logs/<task>/<target>.<n>.log``, and the file
named by ``$FLEETRUN_OUTPUT``, ``outputs/<task>/<target>.<n>.outputs``. The
output files live apart from the logs on purpose: after every successful
attempt the executor looks its output file up (usually to find nothing), and
a lookup in the logs directory waits behind the children that are creating
their logs there at the same moment; in ``outputs/`` only tasks that publish
something create files.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetrun.engine._events import AttemptEnded, AttemptOutcome, AttemptOutput, AttemptStarted
from fleetrun.engine._retry import backoff_delay, log_tail, retry_reason
from fleetrun.executors import Attempt, AttemptResult, Executor, Handle
from fleetrun.names import safe_name
from fleetrun.plan import Node, Target, attempt_env, dep_outputs, task_env

if TYPE_CHECKING:
    from fleetrun.engine._scheduler import _Run


def _describe(result: AttemptResult, timeout: float | None) -> str:
    if result.reason is not None:
        return result.reason
    if result.timed_out:
        return f"timed out after {timeout:g}s" if timeout is not None else "timed out"
    if result.exit_code is None:
        return f"killed by signal {result.signal}"
    return f"exit {result.exit_code}"


class _TaskSetup:
    """What every attempt of one task shares in one run (built on its first attempt)."""

    __slots__ = ("cwd", "env", "executor", "logs", "options", "outs")

    def __init__(
        self,
        env: Mapping[str, str],
        cwd: str | None,
        logs: str,
        outs: str,
        executor: Executor,
        options: Mapping[str, Any],
    ) -> None:
        self.env = env
        self.cwd = cwd
        self.logs = logs
        self.outs = outs
        self.executor = executor
        self.options = options


class AttemptRunner:
    """Runs attempts for one ``_Run`` (which owns all the state it touches).

    It turns a node into a resolved ``Attempt`` (the plan stops here: an
    executor sees none of it), hands it to the executor the task's
    ``runs_on`` names, and reports back through the run's narrow interface:
    ``emit``, ``settle``, ``on_final_failure``, ``release``, ``requeue``,
    ``kick`` and ``outputs``.
    """

    __slots__ = ("_root", "_setup", "_targets", "run")

    def __init__(self, run: _Run) -> None:
        self.run = run
        # Absolute: a task in another directory still finds its $FLEETRUN_OUTPUT.
        self._root = Path(run.options.run_dir).absolute()
        self._setup: dict[str, _TaskSetup] = {}
        self._targets: dict[str, tuple[Target, Mapping[str, Any], str]] = {}

    def _target(self, name: str) -> tuple[Target, Mapping[str, Any], str]:
        """The target, its attributes as executors see them (``ssh`` resolved) and its
        file name, once per target."""
        got = self._targets.get(name)
        if got is None:
            target = self.run.graph.plan.targets[name]
            got = self._targets[name] = (target, target.attributes(), safe_name(name))
        return got

    def _task_setup(self, task_name: str) -> _TaskSetup:
        """The task's shared environment, directory and executor (created once per task)."""
        setup = self._setup.get(task_name)
        if setup is None:
            run = self.run
            plan = run.graph.plan
            task = plan.tasks[task_name]
            name = safe_name(task_name)
            logs, outs = str(self._root / "logs" / name), str(self._root / "outputs" / name)
            os.makedirs(logs, mode=0o700, exist_ok=True)
            os.makedirs(outs, mode=0o700, exist_ok=True)
            # A relative ``cwd`` is relative to the plan's directory.
            cwd = os.path.join(plan.base_dir, task.cwd) if task.cwd else str(plan.base_dir)
            setup = _TaskSetup(
                task_env(run.graph, task, run.options.run_id),
                os.path.abspath(cwd),
                logs,
                outs,
                run.executor_for(task.runs_on),
                {
                    **task.script_options(),
                    "keep_running": task.keep_running,
                    "resources": dict(task.resources),
                },
            )
            self._setup[task_name] = setup
        return setup

    async def attempt(self, j: int, n: int) -> None:
        """Run attempt ``n`` of node ``j`` and settle or re-queue the node."""
        run = self.run
        graph = run.graph
        node = graph.nodes[j]
        task = graph.plan.tasks[node.task]
        pools = run.pools_of[j]
        opts = run.options
        began = time.time()
        t0 = run.clock.now() if pools else 0.0  # pool signals are judged on the run's clock
        spawned = False
        result: AttemptResult | None = None
        problem = ""
        setup = self._task_setup(node.task)
        if node.target is None:
            target, attrs, file = None, _NO_ATTRS, safe_name(node.task)
        else:
            target, attrs, file = self._target(node.target)
        name = f"{file}.{n}"
        log_path = f"{setup.logs}/{name}.log"

        def on_started(handle: Handle) -> None:
            nonlocal spawned
            spawned = True
            run.emit(
                AttemptStarted(
                    at=time.time(),
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
                    ready_at=run.ready_at[j] or None,
                    queued_reason=run.why[j],
                )
            )

        on_output = None
        if opts.output == "stream":

            def on_output(text: str) -> None:
                run.emit(AttemptOutput(at=time.time(), node=j, key=node.key, attempt=n, text=text))

        display = task.run.source
        try:
            try:
                deps = dep_outputs(node, run.outputs) if node.requires else {}
                # What ``plan.render_command`` does, with the task and target at hand.
                command = task.run.render(target, graph.plan.vars, deps)
            except KeyError as e:
                problem = f"cannot render the command: no value for {e.args[0]}"
            else:
                display = opts.redactor.redact(command)
                output_path = f"{setup.outs}/{name}.outputs"
                # Positional: this runs once per attempt (see Attempt for the order).
                spec = Attempt(
                    opts.run_id,
                    node.key,
                    node.task,
                    node.target,
                    n,
                    command,
                    display,
                    setup.env,
                    attempt_env(opts.run_id, node, n, output_path, deps),
                    setup.cwd,
                    log_path,
                    output_path,
                    task.timeout,
                    opts.grace,
                    opts.redactor,
                    on_started,
                    on_output,
                    attrs,
                    setup.options,
                )
                result = await setup.executor.run(spec)
        except asyncio.CancelledError:
            if spawned:
                run.emit(_unobserved_end(j, node.key, n, began, "cancelled"))
            run.settle(
                j,
                "cancelled",
                "ended: " + (run.stop_reason or "cancelled").removeprefix("not started: "),
            )
            raise
        except Exception as e:  # an executor bug or I/O error fails this node only
            problem = opts.redactor.redact(f"{type(e).__name__}: {e}")
        finally:
            run.release(j, pools, result is None)
        if result is None:
            if spawned:
                # The process ran but its ending could not be observed: close
                # the attempt so every AttemptStarted has its AttemptEnded.
                run.emit(_unobserved_end(j, node.key, n, began, "failed", problem))
            else:
                run.not_an_attempt(j)  # nothing ran
            run.settle(j, "failed", problem)
            run.on_final_failure(j)
            run.kick()
            return
        if result.ok:
            # The common case, inline: no extra coroutine per attempt.
            run.forget(j)
            run.emit(
                AttemptEnded(
                    at=time.time(),
                    node=j,
                    key=node.key,
                    attempt=n,
                    started_at=began,
                    exit_code=0,
                    signal=None,
                    timed_out=False,
                    outcome="succeeded",
                )
            )
            if pools:
                run.pools_succeeded(pools, t0)
            run.settle(j, "succeeded", outputs=result.outputs)
            run.kick()
            return
        await self._verdict(j, n, node, pools, result, began, log_path, t0)

    async def _verdict(
        self,
        j: int,
        n: int,
        node: Node,
        pools: tuple[int, ...],
        result: AttemptResult,
        began: float,
        log_path: str,
        t0: float,
    ) -> None:
        run = self.run
        task = run.graph.plan.tasks[node.task]

        def ended(
            outcome: AttemptOutcome,
            reason: str | None = None,
            delay: float | None = None,
            tail: tuple[str, ...] = (),
            throttled: bool = False,
        ) -> AttemptEnded:
            return AttemptEnded(
                at=time.time(),
                node=j,
                key=node.key,
                attempt=n,
                started_at=began,
                exit_code=result.exit_code,
                signal=result.signal,
                timed_out=result.timed_out,
                outcome=outcome,
                retry_reason=reason,
                retry_delay=delay,
                tail=tail,
                throttled=throttled,
                error_kind=result.error_kind,
            )

        policy = task.retry
        # Only a pool's throttle rule makes a throttle signal (pauses, adaptive limits).
        signal = run.throttle_signal(pools, result, log_path, t0) if pools else None
        attempts = policy.attempts if signal is None else max(policy.attempts, signal.attempts)
        reason = None
        if n < attempts and not run.stopping:
            # Reads the log in bounded chunks; only on failure, only with on.output.
            reason = signal.reason if signal else retry_reason(policy, result, log_path)
        if reason is None or run.stopping:
            run.forget(j)
            tail = tuple(run.options.redactor.redact(x) for x in log_tail(log_path))
            run.emit(ended("failed", tail=tail, throttled=signal is not None))
            run.settle(j, "failed", _describe(result, task.timeout))
            run.on_final_failure(j)
            run.kick()
            return
        delay = backoff_delay(policy, n, run.rng)
        if signal is not None:
            delay = max(delay, signal.pause)  # the real time until the pool lets it start
        run.emit(ended("retrying", reason, delay, throttled=signal is not None))
        await run.backoff(j, n, delay)


_NO_ATTRS: Mapping[str, Any] = {}


def _unobserved_end(
    node: int, key: str, attempt: int, began: float, outcome: AttemptOutcome, why: str = ""
) -> AttemptEnded:
    """The end of an attempt whose exit status is unknown (cancelled, or lost to an error)."""
    return AttemptEnded(
        at=time.time(),
        node=node,
        key=key,
        attempt=attempt,
        started_at=began,
        exit_code=None,
        signal=None,
        timed_out=False,
        outcome=outcome,
        tail=(why,) if why else (),
    )
