"""``ExitWatcher``: one epoll over the pidfds of a loop's processes, read by the loop.

Watching each pidfd with ``loop.add_reader`` costs the loop a selector key, a
handle and a dispatch per process. Here the pidfds go into an epoll set of
their own, and the loop watches that one descriptor: when it is readable, one
``epoll.poll`` returns every process that exited since, and their callbacks
run in that same turn of the loop. Registering a pidfd is one C call.

A pidfd is registered one-shot: it is reported once, and leaves the set when
it is closed (by the callback, which reaps the process: ``_proc.Proc``). A
report for a process that has not exited (a descriptor number reused within
one turn) is answered with ``rewatch``.

Everything here runs on the loop thread. Linux only (the Linux path of
``_platform``): nothing of ``select.epoll`` is read before a watcher is made,
so the module imports anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
from collections.abc import Callable


class ExitWatcher:
    """Calls back, on its loop, when a watched process exits (see the module docstring)."""

    __slots__ = ("_ep", "_loop", "_once", "_watches", "batches")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._ep = select.epoll()
        self._once = select.EPOLLIN | select.EPOLLONESHOT
        self._watches: dict[int, Callable[[], None]] = {}
        self.batches = 0
        """Batches of exits reported so far (tells one batch from the next)."""
        loop.add_reader(self._ep.fileno(), self._on_ready)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def watch(self, pidfd: int, on_exit: Callable[[], None]) -> None:
        """Call ``on_exit`` once the process of ``pidfd`` has exited."""
        self._ep.register(pidfd, self._once)
        self._watches[pidfd] = on_exit

    def rewatch(self, pidfd: int, on_exit: Callable[[], None]) -> None:
        """Watch ``pidfd`` again, after a report for a process that had not exited."""
        self._watches[pidfd] = on_exit
        self._ep.modify(pidfd, self._once)

    def forget(self, pidfd: int) -> None:
        """Stop watching ``pidfd`` (before closing it without a report)."""
        if self._watches.pop(pidfd, None) is not None:
            with contextlib.suppress(OSError):
                self._ep.unregister(pidfd)

    def _on_ready(self) -> None:
        take = self._watches.pop
        self.batches += 1
        for fd, _ in self._ep.poll(0):
            on_exit = take(fd, None)
            if on_exit is None:
                continue
            try:
                on_exit()
            except Exception as e:  # reported like a failed loop callback; the batch goes on
                self._loop.call_exception_handler(
                    {"message": "exception in a process exit callback", "exception": e}
                )

    def close(self) -> None:
        """Stop watching everything (the loop may already be closed)."""
        with contextlib.suppress(OSError, ValueError, RuntimeError):  # the loop is closing
            if not self._loop.is_closed():
                self._loop.remove_reader(self._ep.fileno())
        self._watches.clear()
        self._ep.close()
