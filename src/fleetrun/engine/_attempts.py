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
from typing import TYPE_CHECKING

from fleetrun.engine._events import AttemptEnded, AttemptOutcome, AttemptOutput, AttemptStarted
from fleetrun.engine._executor import AttemptResult, AttemptSpec
from fleetrun.engine._retry import backoff_delay, is_throttle, log_tail, retry_reason
from fleetrun.plan._graph import Node

if TYPE_CHECKING:
    from fleetrun.engine._scheduler import _Run


def safe_name(name: str) -> str:
    """``name`` usable as one path component (no separators, never ``.``/``..``)."""
    out = name.replace("/", "_").replace("\0", "_")
    if out in ("", ".", ".."):
        out = "_" + out
    return out


def _describe(result: AttemptResult, timeout: float | None) -> str:
    if result.timed_out:
        return f"timed out after {timeout:g}s" if timeout is not None else "timed out"
    if result.exit_code is None:
        return f"killed by signal {result.signal}"
    return f"exit {result.exit_code}"


class AttemptRunner:
    """Runs attempts for one ``_Run`` (which owns all the state it touches)."""

    __slots__ = ("_dirs", "_root", "run")

    def __init__(self, run: _Run) -> None:
        self.run = run
        # Absolute: a task in another directory still finds its $FLEETRUN_OUTPUT.
        self._root = Path(run.options.run_dir).absolute()
        # task -> (its log directory, its output directory), created once per task.
        self._dirs: dict[str, tuple[str, str]] = {}

    def _dir(self, task: str) -> tuple[str, str]:
        d = self._dirs.get(task)
        if d is None:
            name = safe_name(task)
            d = (str(self._root / "logs" / name), str(self._root / "outputs" / name))
            os.makedirs(d[0], exist_ok=True)
            os.makedirs(d[1], exist_ok=True)
            self._dirs[task] = d
        return d

    def _dep_outputs(self, node: Node) -> dict[str, Mapping[str, str]]:
        outs: dict[str, Mapping[str, str]] = {}
        got = self.run.outputs
        for req in node.requires:
            if len(req.nodes) == 1:
                o = got.get(req.nodes[0])
                if o is not None:
                    outs[req.task] = o
        return outs

    async def attempt(self, j: int, n: int) -> None:
        """Run attempt ``n`` of node ``j`` and settle or re-queue the node."""
        run = self.run
        graph = run.graph
        node = graph.nodes[j]
        task = graph.plan.tasks[node.task]
        pools = run.pools_of[j]
        opts = run.options
        began = time.time()
        spawned = False
        result: AttemptResult | None = None
        problem = ""
        logs, outs = self._dir(node.task)
        name = f"{safe_name(node.target or node.task)}.{n}"
        log_path = f"{logs}/{name}.log"

        def on_started(pid: int, pgid: int) -> None:
            nonlocal spawned
            spawned = True
            run.emit(
                AttemptStarted(
                    at=time.time(),
                    node=j,
                    key=node.key,
                    attempt=n,
                    command=display,
                    pid=pid,
                    pgid=pgid,
                    log_path=log_path,
                )
            )

        on_output = None
        if opts.output == "stream":

            def on_output(text: str) -> None:
                run.emit(AttemptOutput(at=time.time(), node=j, key=node.key, attempt=n, text=text))

        display = task.run.source
        try:
            try:
                dep_outputs = self._dep_outputs(node) if node.requires else {}
                target = None if node.target is None else graph.plan.targets[node.target]
                command = task.run.render(target, graph.plan.vars, dep_outputs)
            except KeyError as e:
                problem = f"cannot render the command: no value for {e.args[0]}"
            else:
                display = opts.redactor.redact(command)
                # Positional: this runs once per attempt (see AttemptSpec for the order).
                spec = AttemptSpec(
                    graph,
                    node,
                    n,
                    command,
                    display,
                    opts.run_id,
                    log_path,
                    f"{outs}/{name}.outputs",
                    task.timeout,
                    opts.grace,
                    opts.redactor,
                    dep_outputs,
                    on_started,
                    on_output,
                )
                result = await run.executor.run(spec)
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
            run.running -= 1
            if pools:
                run.limits.release(pools)
            if result is None:
                run.tasks.pop(j, None)
                run.wake.set()
        if result is None:
            if spawned:
                # The process ran but its ending could not be observed: close
                # the attempt so every AttemptStarted has its AttemptEnded.
                run.emit(_unobserved_end(j, node.key, n, began, "failed", problem))
            else:
                run.attempts[j] -= 1  # nothing ran: not an attempt
            run.settle(j, "failed", problem)
            run.on_final_failure(j)
            run.kick()
            return
        if result.ok:
            # The common case, inline: no extra coroutine per attempt.
            run.tasks.pop(j, None)
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
                run.limits.succeeded(pools)
            run.settle(j, "succeeded", outputs=result.outputs)
            run.kick()
            return
        await self._verdict(j, n, node, pools, result, began, log_path)

    async def _verdict(
        self,
        j: int,
        n: int,
        node: Node,
        pools: tuple[int, ...],
        result: AttemptResult,
        began: float,
        log_path: str,
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
            )

        policy = task.retry
        reason = None
        if n < policy.attempts and not run.stopping:
            # Reads the log in bounded chunks; only on failure, only with on.output.
            reason = retry_reason(policy, result, log_path)
        if reason is None or run.stopping:
            run.tasks.pop(j, None)
            tail = tuple(run.options.redactor.redact(x) for x in log_tail(log_path))
            run.emit(ended("failed", tail=tail))
            run.settle(j, "failed", _describe(result, task.timeout))
            run.on_final_failure(j)
            run.kick()
            return
        delay = backoff_delay(policy, n, run.rng)
        throttled = is_throttle(policy, reason)
        run.emit(ended("retrying", reason, delay, throttled=throttled))
        if pools and throttled:
            run.limits.throttled(pools)
        run.waiting += 1
        run.kick()  # the slot this attempt held is free again
        try:
            await run.clock.sleep(delay)
        except asyncio.CancelledError:
            run.settle(
                j,
                "cancelled",
                f"ended before attempt {n + 1}: " + run.stop_reason.removeprefix("not started: "),
            )
            raise
        finally:
            run.waiting -= 1
            run.tasks.pop(j, None)
            run.wake.set()
        if run.stopping:
            run.settle(
                j,
                "not_started" if not run.interrupted else "cancelled",
                f"attempt {n + 1} {run.stop_reason}",
            )
        else:
            run._push(j)
        run.kick()


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
