"""One spawned process group, watched from the event loop without threads of its own.

``GroupProc`` holds what every platform shares; its subclass learns of the
leader's exit (``_proc.Proc``: a pidfd in the loop's ``ExitWatcher``, Linux;
``_posix_local``: asyncio's child watcher) and lists the group's members. With
a pipe, the output is read through ``add_reader``. ``done`` resolves once the
leader is reaped, the pipe (if any) is closed and the group is dealt with.

An attempt ends when its command (the group leader) ends:

- whatever it left running in its group is ended: SIGTERM, ``grace``,
  SIGKILL (nothing, with ``keep``: the task keeps a service running); the
  members are named in ``left``;
- output still arriving through the pipe is read for at most ``DRAIN``
  seconds more: a process outside the group (``setsid``) may hold the pipe
  open for ever. Then the pipe is closed and the log says so.

Ending a group (timeout or cancellation) is SIGTERM to the group, then
``grace`` seconds, then SIGKILL. The group counts as gone once no member runs
any more: members that are only zombies (waiting for a parent that is not
fleetrun to reap them, or for a slow init) do not hold it up, before the
SIGKILL as after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable

from fleetrun.redact import StreamRedactor

_READ = 1 << 16
MAX_PIECE = 1 << 16
"""Most bytes of one line delivered in one piece: a longer line comes in pieces
of at most this size (keeps memory bounded), never split inside a character."""

DRAIN = 0.5
"""Seconds output is still read after the command ended (then the pipe is closed)."""

_GROUP_POLL = 0.02
_LIST_EVERY = 5
"""While the group is polled, its members are listed every this many polls."""


def _killpg(pgid: int, sig: int) -> bool:
    """Signal the group; False when it has no member left."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _cut(data: bytes, limit: int) -> int:
    """Where to cut ``data`` (longer than ``limit``) so no UTF-8 character is split."""
    cut = limit
    # Back up over continuation bytes (at most 3) to a character's first byte.
    while cut > limit - 4 and cut > 0 and (data[cut] & 0xC0) == 0x80:
        cut -= 1
    return cut if cut > limit - 4 and cut > 0 else limit


class LineSplitter:
    """Turns chunks of output into lines (without their newline) and pieces of lines.

    A line longer than ``MAX_PIECE`` bytes comes as several pieces of at most
    that size; the newline that ends it adds nothing (no empty line that the
    task never printed). Invariant: ``_line`` holds at most ``MAX_PIECE`` bytes.
    """

    __slots__ = ("_line", "_partial", "emit")

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit = emit
        self._line = b""
        self._partial = False  # part of the current line was already emitted

    def feed(self, data: bytes) -> None:
        """Emit every complete line (and full piece) of ``self._line + data``."""
        buf = self._line + data if self._line else data
        lines = buf.split(b"\n")
        tail = lines.pop()
        out: list[str] = []
        for i, line in enumerate(lines):
            if not line and i == 0 and self._partial:
                self._partial = False  # the end of a line already sent in pieces
                continue
            self._partial = False
            while len(line) > MAX_PIECE:
                cut = _cut(line, MAX_PIECE)
                out.append(line[:cut].decode("utf-8", "replace"))
                line = line[cut:]
            out.append(line.decode("utf-8", "replace"))
        while len(tail) > MAX_PIECE:
            cut = _cut(tail, MAX_PIECE)
            out.append(tail[:cut].decode("utf-8", "replace"))
            tail = tail[cut:]
            self._partial = True
        self._line = tail
        if out:
            self.emit("\n".join(out))

    def flush(self) -> None:
        """Emit what is left of an unfinished last line."""
        if self._line:
            self.emit(self._line.decode("utf-8", "replace"))
            self._line = b""
        self._partial = False


class GroupProc:
    """Watches one spawned process group until it is fully gone (how the leader's
    exit is learnt and what the platform can list of a group: the subclass)."""

    __slots__ = (
        "_drain_handle",
        "_grace",
        "_hurried",
        "_kill_handle",
        "_killed",
        "_last",
        "_lines",
        "_log_fd",
        "_loop",
        "_pipe",
        "_poll_handle",
        "_polls",
        "_redact",
        "cut_off",
        "done",
        "group_gone",
        "keep",
        "left",
        "pid",
        "returncode",
        "terminating",
        "timed_out",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        pid: int,
        pipe: int | None = None,
        log_fd: int | None = None,
        redact: StreamRedactor | None = None,
        on_output: Callable[[str], None] | None = None,
        *,
        grace: float = 0.0,
        keep: bool = False,
    ) -> None:
        self._loop = loop
        self.pid = pid
        self.returncode: int | None = None
        """The leader's exit code (negative: the signal that ended it), once reaped."""
        self.terminating = False
        self.timed_out = False
        self.group_gone = False
        self.keep = keep
        self.cut_off = False
        self.left: list[str] = []
        self._grace = grace
        self._hurried = False
        self._kill_handle: asyncio.TimerHandle | None = None
        self._drain_handle: asyncio.TimerHandle | None = None
        self._killed = False
        self._poll_handle: asyncio.TimerHandle | None = None
        self._polls = 0
        self.done: asyncio.Future[None] = loop.create_future()
        self._pipe = pipe
        self._log_fd = log_fd
        self._redact = redact
        self._lines = LineSplitter(on_output) if on_output is not None else None
        self._last = b"\n"
        if pipe is not None:
            os.set_blocking(pipe, False)
            loop.add_reader(pipe, self._on_readable)

    # -- completion --------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """True when the leader is reaped, output closed and the group dealt with."""
        return self.returncode is not None and self._pipe is None and self.group_gone

    def _check(self) -> None:
        if self.finished:
            if self._kill_handle is not None:
                self._kill_handle.cancel()
                self._kill_handle = None
            if not self.done.done():
                self.done.set_result(None)

    def _exited(self, returncode: int) -> None:
        """The leader is reaped: deal with the rest of its group."""
        self.returncode = returncode
        if self._pipe is not None:
            # The command is over: what it left behind may hold the pipe for ever.
            self._drain_handle = self._loop.call_later(DRAIN, self._close_pipe, True)
        if self.terminating:
            self._poll_group()
        elif self.keep or not _killpg(self.pid, 0):
            self.group_gone = True  # the fast path: one syscall
        else:
            # Members of the group outlive their command: name them, then end them.
            self.left = [self._describe(p) for p in self._members()]
            self.terminate(self._grace)
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
        self._close_pipe(False)

    def _close_pipe(self, cut: bool) -> None:
        """EOF, or (``cut``) the drain time is over: flush, close, and say so in the log."""
        pipe = self._pipe
        if pipe is None:
            return
        if cut:
            # Whatever is already in the pipe still counts (bounded: one pipe buffer).
            with contextlib.suppress(OSError):
                for _ in range(64):
                    chunk = os.read(pipe, _READ)
                    if not chunk:
                        break
                    self._write(self._redact.feed(chunk) if self._redact is not None else chunk)
        elif self._drain_handle is not None:
            self._drain_handle.cancel()
        self._drain_handle = None
        if self._redact is not None:
            self._write(self._redact.flush())
        if self._lines is not None:
            self._lines.flush()
        if cut:
            self.cut_off = True
            note = (
                f"[fleetrun] output closed {DRAIN:g}s after the command ended: "
                "a process it started still held it open\n"
            )
            self._log(("\n" if self._last != b"\n" else "") + note)
        self._loop.remove_reader(pipe)
        os.close(pipe)
        self._pipe = None
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = None
        self._check()

    def _log(self, text: str) -> None:
        if self._log_fd is not None:
            with contextlib.suppress(OSError):
                os.write(self._log_fd, text.encode())

    def _write(self, data: bytes) -> None:
        if not data:
            return
        self._last = data[-1:]
        if self._log_fd is not None:
            view = memoryview(data)
            while view:
                view = view[os.write(self._log_fd, view) :]
        if self._lines is not None:
            self._lines.feed(data)

    # -- ending the group --------------------------------------------------------

    def terminate(self, grace: float) -> None:
        """SIGTERM the group now, SIGKILL it after ``grace`` seconds (idempotent; no
        grace at all once ``hurry`` was called)."""
        if self.terminating:
            return
        self.terminating = True
        if not _killpg(self.pid, signal.SIGTERM) and self.returncode is not None:
            self.group_gone = True
        if self._hurried:
            grace = 0.0
        self._kill_handle = self._loop.call_later(max(0.0, grace), self.kill)
        if self.returncode is not None:
            self._poll_group()
        self._check()

    def kill(self) -> None:
        """SIGKILL the group now."""
        self.terminating = True
        if self._kill_handle is not None:
            self._kill_handle.cancel()
            self._kill_handle = None
        _killpg(self.pid, signal.SIGKILL)
        self._killed = True
        if self.returncode is not None and not self.group_gone:
            if self._poll_handle is not None:
                self._poll_handle.cancel()
            self._poll_group()
        self._check()

    def hurry(self) -> None:
        """No more grace: SIGKILL the group if it is being ended, and at once
        whenever it is ended from now on."""
        self._hurried = True
        self._grace = 0.0
        if self.terminating:
            self.kill()

    def on_timeout(self, grace: float) -> None:
        """The attempt ran out of time: end the group."""
        self.timed_out = True
        self.terminate(grace)

    def _poll_group(self) -> None:
        # The leader is reaped; wait (bounded by the grace timer) for the rest
        # of the group to follow the signal.
        self._poll_handle = None
        if self.group_gone:
            return
        self._reap_group()
        self._polls += 1
        # Listing the members is a scan of every process: while something of the
        # group may still run, only every few polls (every one after SIGKILL).
        look = self._killed or self._polls % _LIST_EVERY == 1
        if not _killpg(self.pid, 0) or (look and not self._members()):
            # Empty, or only zombies left (whose parent, outside the group or
            # slow to reap, is not fleetrun): nothing of the group runs any more.
            self.group_gone = True
            self._check()
            return
        self._poll_handle = self._loop.call_later(_GROUP_POLL, self._poll_group)

    # -- what the platform provides --------------------------------------------

    def _members(self) -> list[int]:
        """Pids of the group's members that still run (zombies left out)."""
        raise NotImplementedError

    @staticmethod
    def _describe(pid: int) -> str:
        """``1234 (sleep)``: a process as the log names it."""
        return str(pid)

    def _reap_group(self) -> None:
        """Reap the group's members that are this process's exited children (if any
        can be: a subreaper's)."""

    def _unwatch(self) -> None:
        """Stop waiting for the leader's exit (after an unexpected error)."""

    def close(self) -> None:
        """Release loop registrations after an unexpected error (best effort)."""
        for handle in (self._drain_handle, self._kill_handle, self._poll_handle):
            if handle is not None:
                handle.cancel()
        self._unwatch()
        if self._pipe is not None:
            with contextlib.suppress(OSError, RuntimeError):  # RuntimeError: the loop is closed
                self._loop.remove_reader(self._pipe)
                os.close(self._pipe)
            self._pipe = None
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = None
