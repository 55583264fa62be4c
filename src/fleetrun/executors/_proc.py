"""One spawned process group, watched from the event loop without threads.

The leader is reaped through its pidfd, watched by the loop's ``ExitWatcher``;
with a pipe, its output is read through ``add_reader``. ``done`` resolves once
the leader is reaped, the pipe (if any) reached EOF and, when the group is
being ended, the group is empty or was SIGKILLed.

Ending a group (timeout or cancellation) is SIGTERM to the group, then
``grace`` seconds, then SIGKILL. When a command exits on its own, whatever it
left running in its group is SIGKILLed at once: an attempt owns its process
group, and nothing it started may outlive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable

from fleetrun.executors._exits import ExitWatcher
from fleetrun.redact import StreamRedactor

_READ = 1 << 16
_MAX_PARTIAL_LINE = 1 << 16
"""A line longer than this is delivered in pieces (keeps memory bounded)."""

_GROUP_POLL = 0.02
_KILL_SETTLE = 2.0


def _killpg(pgid: int, sig: int) -> bool:
    """Signal the group; False when it has no member left."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


class Proc:
    """Watches one spawned process group until it is fully gone."""

    __slots__ = (
        "_exits",
        "_kill_handle",
        "_killed_at",
        "_line",
        "_log_fd",
        "_loop",
        "_on_output",
        "_pidfd",
        "_pipe",
        "_poll_handle",
        "_redact",
        "done",
        "group_gone",
        "pid",
        "status",
        "terminating",
        "timed_out",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        exits: ExitWatcher,
        pid: int,
        pipe: int | None = None,
        log_fd: int | None = None,
        redact: StreamRedactor | None = None,
        on_output: Callable[[str], None] | None = None,
        *,
        pidfd: int | None = None,
    ) -> None:
        self._loop = loop
        self.pid = pid
        self.status: int | None = None
        self.terminating = False
        self.timed_out = False
        self.group_gone = False
        self._kill_handle: asyncio.TimerHandle | None = None
        self._killed_at: float | None = None
        self._poll_handle: asyncio.TimerHandle | None = None
        self.done: asyncio.Future[None] = loop.create_future()
        self._pipe = pipe
        self._log_fd = log_fd
        self._redact = redact
        self._on_output = on_output
        self._line = b""
        # ``pidfd``: already opened by the spawner thread (this Proc owns it now).
        self._pidfd = os.pidfd_open(pid) if pidfd is None else pidfd
        self._exits = exits
        exits.watch(self._pidfd, self._on_exit)
        if pipe is not None:
            os.set_blocking(pipe, False)
            loop.add_reader(pipe, self._on_readable)

    # -- completion --------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """True when the leader is reaped, output drained and the group dealt with."""
        return (
            self.status is not None
            and self._pipe is None
            and (not self.terminating or self.group_gone)
        )

    def _check(self) -> None:
        if self.finished:
            if self._kill_handle is not None:
                self._kill_handle.cancel()
            if not self.done.done():
                self.done.set_result(None)

    def _on_exit(self) -> None:
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:  # not exited: a stale report (see ``ExitWatcher``)
            self._exits.rewatch(self._pidfd, self._on_exit)
            return
        os.close(self._pidfd)
        self.status = status
        if self.terminating:
            self._poll_group()
        else:
            _killpg(self.pid, signal.SIGKILL)
        self._check()

    # -- output (pipe mode) ------------------------------------------------------

    def _on_readable(self) -> None:
        assert self._pipe is not None
        try:
            chunk = os.read(self._pipe, _READ)
        except BlockingIOError:
            return
        if chunk:
            self._write(self._redact.feed(chunk) if self._redact is not None else chunk)
            return
        if self._redact is not None:
            self._write(self._redact.flush())
        if self._on_output is not None and self._line:
            self._on_output(self._line.decode("utf-8", "replace"))
            self._line = b""
        self._loop.remove_reader(self._pipe)
        os.close(self._pipe)
        self._pipe = None
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = None
        self._check()

    def _write(self, data: bytes) -> None:
        if not data:
            return
        if self._log_fd is not None:
            view = memoryview(data)
            while view:
                view = view[os.write(self._log_fd, view) :]
        if self._on_output is not None:
            buf = self._line + data
            cut = buf.rfind(b"\n")
            if cut >= 0:
                self._on_output(buf[:cut].decode("utf-8", "replace"))
                buf = buf[cut + 1 :]
            if len(buf) > _MAX_PARTIAL_LINE:
                self._on_output(buf.decode("utf-8", "replace"))
                buf = b""
            self._line = buf

    # -- ending the group --------------------------------------------------------

    def terminate(self, grace: float) -> None:
        """SIGTERM the group now, SIGKILL it after ``grace`` seconds (idempotent)."""
        if self.terminating:
            return
        self.terminating = True
        if not _killpg(self.pid, signal.SIGTERM) and self.status is not None:
            self.group_gone = True
        self._kill_handle = self._loop.call_later(max(0.0, grace), self.kill)
        if self.status is not None:
            self._poll_group()
        self._check()

    def kill(self) -> None:
        """SIGKILL the group now."""
        self.terminating = True
        if self._kill_handle is not None:
            self._kill_handle.cancel()
            self._kill_handle = None
        _killpg(self.pid, signal.SIGKILL)
        if self.status is not None and self._poll_handle is None and not self.group_gone:
            self._poll_group()
        self._killed_at = self._loop.time()
        self._check()

    def on_timeout(self, grace: float) -> None:
        """The attempt ran out of time: end the group."""
        self.timed_out = True
        self.terminate(grace)

    def _poll_group(self) -> None:
        # The leader is reaped; wait (bounded by the grace timer) for the rest
        # of the group to follow the SIGTERM.
        self._poll_handle = None
        if self.group_gone:
            return
        if not _killpg(self.pid, 0) or (
            # SIGKILLed members still listed after this long are zombies whose
            # new parent has not reaped them yet: they no longer run.
            self._killed_at is not None and self._loop.time() - self._killed_at > _KILL_SETTLE
        ):
            self.group_gone = True
            self._check()
            return
        self._poll_handle = self._loop.call_later(_GROUP_POLL, self._poll_group)

    def close(self) -> None:
        """Release loop registrations after an unexpected error (best effort)."""
        with contextlib.suppress(Exception):
            if self.status is None:
                self._exits.forget(self._pidfd)
                os.close(self._pidfd)
        if self._pipe is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._pipe)
                os.close(self._pipe)
            self._pipe = None
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = None
