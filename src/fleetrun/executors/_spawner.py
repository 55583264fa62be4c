"""Spawner threads: ``posix_spawn`` off the event loop, with one cheap hand-off each way.

glibc's ``posix_spawn`` suspends the calling thread until the child has exec'd
(vfork semantics). Calling it on the loop thread would stall the loop for
every exec, so jobs go to a few daemon threads through a ``SimpleQueue`` and
come back with ``loop.call_soon_threadsafe`` - no ``concurrent.futures``
machinery per spawn. The GIL is released while a thread waits in the kernel.

Invariant: every job is delivered exactly once, on the loop thread, whether or
not its waiter is still there; ``Job.done`` tells the waiter it was.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import Sequence

Action = tuple[int, ...] | tuple[int, int, str, int, int]
"""One posix_spawn file action: (DUP2, fd, fd) or (OPEN, fd, path, flags, mode)."""


class Job:
    """One spawn request and, once ``done``, its pid or the error it raised."""

    __slots__ = ("actions", "argv", "done", "env", "error", "fut", "loop", "path", "pid")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        path: str,
        argv: list[str],
        env: dict[str, str],
        actions: Sequence[Action],
    ) -> None:
        self.loop = loop
        self.path = path
        self.argv = argv
        self.env = env
        self.actions = actions
        self.fut: asyncio.Future[int] = loop.create_future()
        self.pid: int | None = None
        self.error: BaseException | None = None
        self.done = False


def _deliver(job: Job) -> None:
    job.done = True
    fut = job.fut
    if fut.done():
        return
    if job.error is not None:
        fut.set_exception(job.error)
    else:
        assert job.pid is not None
        fut.set_result(job.pid)


def _work(jobs: queue.SimpleQueue[Job]) -> None:
    spawn = os.posix_spawn
    while True:
        job = jobs.get()
        try:
            job.pid = spawn(job.path, job.argv, job.env, file_actions=job.actions, setpgroup=0)
        except BaseException as e:  # delivered to the waiter, which raises it
            job.error = e
        try:
            job.loop.call_soon_threadsafe(_deliver, job)
        except RuntimeError:  # the loop is closed: nobody waits, end the orphan
            if job.pid is not None:
                os.killpg(job.pid, 9)
                os.waitpid(job.pid, 0)


class Spawner:
    """A fixed set of daemon threads that run ``posix_spawn`` for the loop."""

    def __init__(self, threads: int) -> None:
        self._jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        for k in range(threads):
            threading.Thread(
                target=_work, args=(self._jobs,), name=f"fleetrun-spawn-{k}", daemon=True
            ).start()

    def submit(self, job: Job) -> None:
        """Queue ``job``; it is delivered through ``job.fut`` on its loop."""
        self._jobs.put(job)


_SPAWNERS: dict[int, Spawner] = {}


def spawner(threads: int) -> Spawner:
    """The process-wide spawner with ``threads`` threads (shared by all executors)."""
    s = _SPAWNERS.get(threads)
    if s is None:
        s = _SPAWNERS[threads] = Spawner(threads)
    return s


def default_spawn_threads() -> int:
    """One spawner thread per two CPUs, between 1 and 4.

    Each thread spends most of its time suspended in ``posix_spawn`` while a
    child execs; more threads overlap more execs, but past the CPUs there are
    to run the execs on they only add contention.
    """
    return min(4, max(1, (os.cpu_count() or 2) // 2))
