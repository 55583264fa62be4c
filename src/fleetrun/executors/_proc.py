"""``Proc``: one spawned process group on the Linux path (see ``_group`` for the rest).

The leader is reaped through its pidfd, watched by the loop's ``ExitWatcher``.
Members re-parented to fleetrun (its subreaper, ``_reaper``) are reaped as
they exit: a zombie of ours would otherwise keep the group "alive" until the
grace period ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable

from fleetrun.executors import _reaper
from fleetrun.executors._exits import ExitWatcher
from fleetrun.executors._group import DRAIN, MAX_PIECE, GroupProc, LineSplitter
from fleetrun.redact import StreamRedactor

__all__ = ["DRAIN", "MAX_PIECE", "LineSplitter", "Proc"]


class Proc(GroupProc):
    """Watches one spawned process group until it is fully gone (a pidfd for the leader)."""

    __slots__ = ("_exits", "_pidfd", "status")

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
        grace: float = 0.0,
        keep: bool = False,
    ) -> None:
        super().__init__(loop, pid, pipe, log_fd, redact, on_output, grace=grace, keep=keep)
        self.status: int | None = None
        """The leader's wait status, once reaped."""
        # ``pidfd``: already opened by the spawner thread (this Proc owns it now).
        self._pidfd = os.pidfd_open(pid) if pidfd is None else pidfd
        self._exits = exits
        exits.watch(self._pidfd, self._on_exit)

    def _on_exit(self) -> None:
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:  # not exited: a stale report (see ``ExitWatcher``)
            self._exits.rewatch(self._pidfd, self._on_exit)
            return
        os.close(self._pidfd)
        self.status = status
        self._exited(os.waitstatus_to_exitcode(status))

    def _members(self) -> list[int]:
        return _reaper.group_members(self.pid)

    _describe = staticmethod(_reaper.describe)

    def _reap_group(self) -> None:
        _reaper.reap_group(self.pid)

    def _unwatch(self) -> None:
        if self.status is None:
            with contextlib.suppress(OSError):
                self._exits.forget(self._pidfd)
                os.close(self._pidfd)
