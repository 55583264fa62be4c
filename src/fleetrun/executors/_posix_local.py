"""``LocalExecutor`` on the portable path: any POSIX system (chosen by ``_platform``
where the Linux fast path, ``_local``, cannot run).

Each attempt is an asyncio subprocess in a session and process group of its
own (``start_new_session``), stdin ``/dev/null``, stdout and stderr to the
attempt's log (or, when output is redacted or streamed, a pipe the loop reads,
as on Linux); asyncio's child watcher reaps the leader. Children start with
the signals fleetrun ignores back at their default disposition.

An attempt ends when its command ends. What the command leaves running in its
process group is ended (SIGTERM, the grace period, SIGKILL: ``_group``). There
is no subreaper here: what left the group (``setsid``, a double fork) is found
by the attempt's tag (``FLEETRUN_ATTEMPT_ID``) in the environment of the
processes started since the attempt did (``_posix_procs``), and ended the
same way; where the system does not let fleetrun read environments, only the
group is ended. Attempts that end in the same turn of the loop share one scan
of the process table. A task with ``keep_running`` keeps them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable

from fleetrun.executors import _posix_procs
from fleetrun.executors._contract import Attempt, AttemptResult, Handle
from fleetrun.executors._group import GroupProc
from fleetrun.executors._local_base import LOG_FLAGS, LOG_MODE, LocalBase, devnull
from fleetrun.names import ATTEMPT_ID
from fleetrun.redact import StreamRedactor
from fleetrun.runs_on import LocalOptions

_POLL = 0.02
_log = logging.getLogger(__name__)
_RESET = tuple(
    sorted(
        signal.valid_signals()
        - {signal.SIGKILL, signal.SIGSTOP, signal.SIGPIPE, getattr(signal, "SIGXFSZ", 0)}
    )
)
"""Signals a child must not inherit as ignored (``restore_signals`` resets SIGPIPE
and SIGXFSZ; these are checked at each spawn)."""


def _ignored() -> list[signal.Signals]:
    """The signals this process ignores now (an exec keeps them ignored)."""
    out = []
    for s in _RESET:
        try:
            if signal.getsignal(s) is signal.SIG_IGN:
                out.append(signal.Signals(s))
        except ValueError:  # not a signal this system knows by that number
            continue
    return out


def _defaults(signals: list[signal.Signals]) -> Callable[[], None]:
    def reset() -> None:  # in the child, between fork and exec
        for s in signals:
            signal.signal(s, signal.SIG_DFL)

    return reset


class PosixProc(GroupProc):
    """One process group whose leader is an asyncio subprocess (reaped by asyncio)."""

    __slots__ = ("_waiter",)

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sub: asyncio.subprocess.Process,
        pipe: int | None = None,
        log_fd: int | None = None,
        redact: StreamRedactor | None = None,
        on_output: Callable[[str], None] | None = None,
        *,
        grace: float = 0.0,
        keep: bool = False,
    ) -> None:
        super().__init__(loop, sub.pid, pipe, log_fd, redact, on_output, grace=grace, keep=keep)
        # Owned by this Proc: it ends when the leader is reaped, or ``close`` cancels it.
        self._waiter: asyncio.Task[int] = loop.create_task(sub.wait())
        self._waiter.add_done_callback(self._on_wait)

    def _on_wait(self, task: asyncio.Task[int]) -> None:
        if not task.cancelled():
            self._exited(task.result())

    def _members(self) -> list[int]:
        return _posix_procs.group_members(self.pid)

    _describe = staticmethod(_posix_procs.describe)

    def _unwatch(self) -> None:
        self._waiter.cancel()


class _Scans:
    """Scans of the process table for tagged processes, one per turn of the loop.

    Every attempt that asks in one turn shares the scan started at the end of
    that turn; one that asks later gets a later scan (so a scan never predates
    the end of the group it is asked about).
    """

    __slots__ = ("_pending", "_since", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._pending: asyncio.Future[dict[str, list[int]]] | None = None
        self._since = 0.0

    async def tagged(self, tag: str, since: float) -> list[int]:
        """Live processes tagged ``tag``, started at ``since`` (seconds since the epoch)
        or later."""
        fut = self._pending
        if fut is None:
            fut = self._pending = self.loop.create_future()
            self._since = since
            self.loop.call_soon(self._start)
        else:
            self._since = min(self._since, since)
        found = await asyncio.shield(fut)
        return found.get(tag, [])

    def _start(self) -> None:
        fut, self._pending = self._pending, None
        assert fut is not None
        scan = self.loop.run_in_executor(None, _posix_procs.tagged_by_attempt, self._since)

        def deliver(done: asyncio.Future[dict[str, list[int]]]) -> None:
            if fut.done():
                return
            if done.cancelled():
                fut.cancel()
            elif (e := done.exception()) is not None:
                # The attempts' groups are ended already; only what left them is missed.
                _log.warning("could not scan the process table for leftovers: %r", e)
                fut.set_result({})
            else:
                fut.set_result(done.result())

        scan.add_done_callback(deliver)


class _Leftovers:
    """Ends what one attempt left running outside its process group."""

    __slots__ = ("_kill", "ended", "since", "tag")

    def __init__(self, tag: str, since: float) -> None:
        self.tag = tag
        self.since = since
        self.ended: list[str] = []
        self._kill = False

    def kill_now(self) -> None:
        """Skip what is left of the grace period."""
        self._kill = True

    async def end(self, found: list[int], grace: float) -> list[str]:
        """TERM, ``grace``, KILL ``found`` and whatever else carries the tag."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, grace)
        seen: set[int] = set()
        cancelled = False
        while found:
            late = self._kill or loop.time() >= deadline
            for pid in found:
                if pid not in seen:
                    seen.add(pid)
                    self.ended.append(_posix_procs.describe(pid))
                    _signal(pid, signal.SIGKILL if late else signal.SIGTERM)
                elif late:
                    _signal(pid, signal.SIGKILL)
            try:
                await asyncio.sleep(_POLL)
            except asyncio.CancelledError:
                # Cancelled again: no more grace, but they are still ended first.
                cancelled = self._kill = True
            found = await asyncio.to_thread(_posix_procs.tagged_since, self.tag, self.since)
        if cancelled:
            raise asyncio.CancelledError
        return self.ended


def _signal(pid: int, sig: int) -> None:
    # OSError: gone meanwhile, or not ours to signal.
    with contextlib.suppress(OSError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)  # it leads a group (setsid): end the group with it
    with contextlib.suppress(OSError):
        os.kill(pid, sig)


class LocalExecutor(LocalBase):
    """Runs attempts as local child processes (see the module docstring).

    ``grace`` is used when an attempt gives none. ``spawn_threads`` is
    accepted for the Linux executor's sake and not used: asyncio spawns.
    """

    def __init__(self, grace: float = 10.0, *, spawn_threads: int | None = None) -> None:
        super().__init__(grace)
        del spawn_threads
        self._active: set[PosixProc] = set()
        self._leftovers: set[_Leftovers] = set()
        self._scans: _Scans | None = None

    async def run(self, spec: Attempt) -> AttemptResult:
        """Spawn the attempt, wait for the whole group to end, collect outputs."""
        keep = LocalOptions.of(spec.options).keep_running  # before anything is started
        loop = asyncio.get_running_loop()
        base = self._base_env(spec)
        cwd = self._task_cwd(spec.cwd)
        enter = cwd is not None and self._dir_ok(cwd)
        path, argv = self._argv(spec.command, base, None if enter else cwd)
        grace = self._grace(spec.grace if spec.grace is not None else self.grace)
        # What the attempt starts starts after this (a second early covers the
        # rounding of creation times).
        since = time.time() - 1.0

        piped = bool(spec.redactor) or spec.on_output is not None
        log_fd = os.open(spec.log_path, LOG_FLAGS | os.O_CLOEXEC, LOG_MODE)
        r = w = -1
        if piped:
            r, w = os.pipe()
        ignored = _ignored()
        try:
            sub = await asyncio.create_subprocess_exec(
                argv[0],
                *argv[1:],
                executable=path,
                stdin=devnull(),
                stdout=w if piped else log_fd,
                stderr=asyncio.subprocess.STDOUT,
                env={**base, **spec.env_extra},
                cwd=cwd if enter else None,
                start_new_session=True,
                preexec_fn=_defaults(ignored) if ignored else None,
            )
        except OSError as e:
            os.close(log_fd)
            if piped:
                os.close(r)
            if enter and cwd is not None and not self._still_usable(cwd):
                raise OSError(e.errno, f"cannot enter the task's directory {cwd}") from None
            raise
        except BaseException:
            os.close(log_fd)
            if piped:
                os.close(r)
            raise
        finally:
            if piped:
                os.close(w)
        if piped:
            proc = PosixProc(
                loop, sub, r, log_fd, spec.redactor.stream(), spec.on_output, grace=grace, keep=keep
            )
        else:
            os.close(log_fd)  # the child has its own copy
            proc = PosixProc(loop, sub, grace=grace, keep=keep)
        return await self._wait(loop, spec, proc, grace, since)

    async def _wait(
        self,
        loop: asyncio.AbstractEventLoop,
        spec: Attempt,
        proc: PosixProc,
        grace: float,
        since: float,
    ) -> AttemptResult:
        """Wait for the attempt's group to end (ending it on timeout or cancellation)."""
        pid = proc.pid
        self._active.add(proc)
        self._leaders.add(pid)
        tag = spec.env_extra.get(ATTEMPT_ID, "")
        timer = None
        ended: list[str] = []
        try:
            spec.on_started(Handle("local", self._host, pid, pid))
            if spec.timeout is not None:
                timer = loop.call_later(spec.timeout, proc.on_timeout, grace)
            try:
                await proc.done
                if not proc.keep:
                    ended = await self._end_leftovers(loop, tag, since, grace)
            except asyncio.CancelledError:
                ended = await self._end(proc, grace, None if proc.keep else (tag, since))
                self._note(spec, proc, ended)
                raise
        finally:
            if timer is not None:
                timer.cancel()
            self._active.discard(proc)
            self._leaders.discard(pid)
            if not proc.finished:
                # Only on an unexpected error: never leave the group behind.
                proc.kill()
                proc.close()
        self._note(spec, proc, ended)
        return self._result(spec, proc, len(proc.left) + len(ended))

    async def _end_leftovers(
        self, loop: asyncio.AbstractEventLoop, tag: str, since: float, grace: float
    ) -> list[str]:
        """End what the attempt ``tag`` left outside its group (found by its tag)."""
        if not tag:
            return []
        scans = self._scans
        if scans is None or scans.loop is not loop:
            scans = self._scans = _Scans(loop)
        found = [p for p in await scans.tagged(tag, since) if p not in self._leaders]
        if not found:
            return []
        left = _Leftovers(tag, since)
        self._leftovers.add(left)
        if self._now:
            left.kill_now()
        try:
            return await left.end(found, grace)
        finally:
            self._leftovers.discard(left)

    async def _end(
        self, proc: PosixProc, grace: float, tagged: tuple[str, float] | None = None
    ) -> list[str]:
        """Cancelled: TERM, grace, KILL, reap - and wait for it even if cancelled again.

        With ``tagged`` (the attempt's tag and start), what the attempt left
        outside its group is ended too; returns what that was.
        """
        proc.terminate(self._grace(grace))
        while not proc.finished:
            proc.done = asyncio.get_running_loop().create_future()
            proc._check()
            try:
                await proc.done
            except asyncio.CancelledError:
                proc.kill()  # a second cancellation skips the grace period
        if tagged is None:
            return []
        try:
            return await self._end_leftovers(asyncio.get_running_loop(), *tagged, grace)
        except asyncio.CancelledError:
            return []  # already re-raising a cancellation: ended, without the grace

    def kill_now(self) -> None:
        """SIGKILL every group that is being ended and what left it (skip the rest of
        the grace period); whatever is ended later in this run gets no grace either."""
        self._now = True
        for proc in list(self._active):
            proc.hurry()
        for left in list(self._leftovers):
            left.kill_now()

    async def aclose(self) -> None:
        """Drop the per-task caches (once no attempt runs)."""
        if self._active or self._leftovers:
            return
        self._env.clear()
        self._now = False  # a later run (the executor opens anew) has its grace again
        self._scans = None
