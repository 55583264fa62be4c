"""Spawner threads: ``posix_spawn`` off the event loop, with one cheap hand-off each way.

glibc's ``posix_spawn`` suspends the calling thread until the child has exec'd
(vfork semantics). Calling it on the loop thread would stall the loop for
every exec, so jobs go to a few daemon threads through a ``SimpleQueue`` and
come back through a per-loop ``Mailbox`` - no ``concurrent.futures``
machinery per spawn. The threads call libc's ``posix_spawn`` with the GIL
released (``_cspawn``), so the loop runs while a child execs. The thread also
opens the child's pidfd, so the loop only has to watch it.

A mailbox wakes its loop (``call_soon_threadsafe``) only when it goes from
empty to not empty: spawns that finish while the loop is busy elsewhere are
delivered together, with one wake-up.

Invariant: every job is delivered exactly once, on the loop thread, whether or
not its waiter is still there; ``Job.done`` tells the waiter it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import signal
import threading
from collections import deque
from collections.abc import Callable, Sequence

from fleetrun.executors import _cspawn

Action = tuple[int, ...] | tuple[int, int, str, int, int] | tuple[int, str]
"""One posix_spawn file action: (DUP2, fd, fd), (OPEN, fd, path, flags, mode) or
(``_cspawn.CHDIR``, path)."""


class Mailbox:
    """Callbacks from other threads on their way to one loop (one wake-up per batch).

    Spawner threads post finished ``Job``s here; they run on the loop thread,
    in the order posted.
    """

    __slots__ = ("_items", "_scheduled", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._items: deque[Callable[[], None]] = deque()
        self._scheduled = False

    def post(self, item: Callable[[], None]) -> None:
        """Called on another thread: queue ``item`` and wake the loop if it was idle.

        Raises RuntimeError when the loop is closed.
        """
        if self.loop.is_closed():
            raise RuntimeError("the loop is closed")
        self._items.append(item)
        # Invariant: an item appended after ``_drain`` cleared the flag finds it
        # cleared, so it is never left behind without a wake-up coming.
        if not self._scheduled:
            self._scheduled = True
            try:
                self.loop.call_soon_threadsafe(self._drain)
            except RuntimeError:
                self._scheduled = False
                self._items.remove(item)
                raise

    def _drain(self) -> None:
        self._scheduled = False
        items = self._items
        while items:
            items.popleft()()


class Job:
    """One spawn request and, once ``done``, its pid (and pidfd) or the error it raised.

    Calling a job (on the loop thread, from its mailbox) delivers it.
    """

    __slots__ = (
        "actions",
        "argv",
        "box",
        "done",
        "env",
        "error",
        "extra_env",
        "fut",
        "path",
        "pid",
        "pidfd",
    )

    def __init__(
        self,
        box: Mailbox,
        fut: asyncio.Future[int],
        path: str,
        argv: list[str],
        env: dict[str, str] | _cspawn.EnvBlock,
        actions: Sequence[Action],
        extra_env: Sequence[bytes] = (),
    ) -> None:
        self.box = box
        self.path = path
        self.argv = argv
        self.env = env
        self.extra_env = extra_env
        self.actions = actions
        self.fut = fut
        self.pid: int | None = None
        self.pidfd = -1
        self.error: BaseException | None = None
        self.done = False

    def __call__(self) -> None:
        self.done = True
        fut = self.fut
        if fut.done():
            return
        if self.error is not None:
            fut.set_exception(self.error)
        else:
            assert self.pid is not None
            fut.set_result(self.pid)


def _end_orphan(pid: int) -> None:
    """Kill the group of ``pid``, which nobody waits for any more, and reap its leader."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def _os_spawn(
    path: str,
    argv: list[str],
    env: dict[str, str] | _cspawn.EnvBlock,
    actions: Sequence[Action],
    extra_env: Sequence[bytes] = (),
) -> int:
    # Encoded environments go to _cspawn only.
    assert isinstance(env, dict)
    assert not extra_env
    return os.posix_spawn(
        path, argv, env, file_actions=actions, setpgroup=0, **_cspawn.CLEAN_SIGNALS
    )


def _work(jobs: queue.SimpleQueue[Job]) -> None:
    # libc's posix_spawn without the GIL where possible: os.posix_spawn keeps
    # the GIL while the child execs, which would stop the loop thread too.
    spawn = _cspawn.spawn if _cspawn.available() else _os_spawn
    pidfd_open = os.pidfd_open
    while True:
        job = jobs.get()
        try:
            pid = spawn(job.path, job.argv, job.env, job.actions, job.extra_env)
        except BaseException as e:  # delivered to the waiter, which raises it
            job.error = e
        else:
            try:
                job.pidfd = pidfd_open(pid)
            except BaseException as e:  # out of descriptors: the child cannot be watched
                _end_orphan(pid)
                job.error = e
            else:
                job.pid = pid
        try:
            job.box.post(job)
        except RuntimeError:  # the loop is closed: nobody waits, end the orphan
            if job.pid is not None:
                os.close(job.pidfd)
                _end_orphan(job.pid)


class Spawner:
    """A fixed set of daemon threads that run ``posix_spawn`` for the loop."""

    def __init__(self, threads: int) -> None:
        self._jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        for k in range(threads):
            threading.Thread(
                target=_work, args=(self._jobs,), name=f"fleetrun-spawn-{k}", daemon=True
            ).start()

    def submit(self, job: Job) -> None:
        """Queue ``job``; it is delivered through ``job.fut`` on its mailbox's loop."""
        self._jobs.put(job)


_SPAWNERS: dict[int, Spawner] = {}


def spawner(threads: int) -> Spawner:
    """The process-wide spawner with ``threads`` threads (shared by all executors)."""
    s = _SPAWNERS.get(threads)
    if s is None:
        s = _SPAWNERS[threads] = Spawner(threads)
    return s


def default_spawn_threads() -> int:
    """One spawner thread per two CPUs, between 2 and 4.

    A thread spends most of its time in ``posix_spawn`` waiting for a child to
    exec, with the GIL released; two threads overlap two execs. Past the CPUs
    there are to run the execs on, more threads only add contention
    (``bench/bench_spawn.py --spawn-threads 1,2,3,4`` compares them).
    """
    return min(4, max(2, (os.cpu_count() or 2) // 2))
