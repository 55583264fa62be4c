"""Where a cluster job's events go on the client: its log, its output lines, its start
and its result (``JobStream``), and the attempts' log files, created off the event
loop in batches (``LogOpener``). See ``_cluster`` for the executor that uses them."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from typing import Any

from fleetrun.executors._cluster_job import STARTED
from fleetrun.executors._contract import Attempt

LOG_MODE = 0o600
LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK_WAIT = 5.0
_LOG_BATCH = 128
"""Log files created per thread hand-off at most: a large batch of attempts
starts reaching the cluster after the first ones, not after all of them."""


class JobStream:
    """Where one job's events go: its start to ``on_start``, its output chunks to the
    log file, redacted, and ``on_output`` lines; its result, the first that came.

    ``resources`` are what the job asks of a worker; ``future`` its Dask future
    while it is submitted; ``gave_up`` why the executor stopped waiting for it
    (no worker left), if it did.
    """

    def __init__(
        self,
        attempt: Attempt,
        fd: int,
        on_start: Callable[[], None],
        resources: tuple[tuple[str, float], ...] = (),
    ) -> None:
        self.fd = fd
        self.on_start = on_start
        self.redact = attempt.redactor.stream()
        self.on_output = attempt.on_output
        self.resources = resources
        self.partial = b""
        self.next_seq = 0
        self.early: dict[int, bytes] = {}
        self.arrived = asyncio.Event()
        self.started = False
        self.result: dict[str, Any] | None = None
        self.future: Any = None
        self.gave_up: str | None = None

    def add(self, seq: int, data: bytes) -> None:
        """An event of the job: its start, or output chunk ``seq``."""
        if seq == STARTED:
            self.start()
            return
        # Chunks are written in sequence order, whatever order they arrive in.
        self.early[seq] = data
        while self.next_seq in self.early:
            self._write(self.early.pop(self.next_seq))
            self.next_seq += 1
        self.arrived.set()

    def finished(self, result: dict[str, Any]) -> None:
        """The job's result came (the same result may come twice: the first is kept)."""
        if self.result is None:
            self.result = result

    def start(self) -> None:
        """The job started on a worker: call ``on_start`` (once)."""
        if not self.started:
            self.started = True
            self.on_start()

    def _write(self, data: bytes) -> None:
        clean = self.redact.feed(data)
        if clean:
            os.write(self.fd, clean)
            self._lines(clean)

    def _lines(self, clean: bytes) -> None:
        if self.on_output is None:
            return
        buf = self.partial + clean
        *lines, self.partial = buf.split(b"\n")
        for line in lines:
            self.on_output(line.decode("utf-8", "replace"))

    async def wait_for(self, count: int) -> None:
        """Wait (bounded) until ``count`` chunks have been written."""
        deadline = asyncio.get_running_loop().time() + _CHUNK_WAIT
        while self.next_seq < count:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                os.write(self.fd, b"\n[fleetrun: some output of this job did not arrive]\n")
                return
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), left)

    def close(self) -> None:
        """Write what the redactor held back, pass on the last line, close the log."""
        tail = self.redact.flush()
        if tail:
            os.write(self.fd, tail)
            self._lines(tail)
        if self.partial and self.on_output is not None:
            self.on_output(self.partial.decode("utf-8", "replace"))
        os.close(self.fd)


class LogOpener:
    """Creates attempts' log files off the event loop (creating a file can take a
    millisecond on some disks): the files asked for while one batch is being
    created are created together in the next, one thread hand-off per batch."""

    def __init__(self) -> None:
        self._waiting: list[tuple[str, asyncio.Future[int]]] = []
        self._task: asyncio.Task[None] | None = None

    def busy(self) -> list[asyncio.Task[None]]:
        """The batch being created, if any (to be awaited before closing)."""
        return [self._task] if self._task is not None and not self._task.done() else []

    def open(self, path: str) -> asyncio.Future[int]:
        """The descriptor of ``path``, created (or truncated) owner-only, not through a
        link. A caller cancelled meanwhile leaves it to be closed once created."""
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[int] = loop.create_future()
        self._waiting.append((path, opened))
        if not self.busy():
            self._task = loop.create_task(self._create())
        return opened

    async def _create(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[:_LOG_BATCH], self._waiting[_LOG_BATCH:]
            try:
                fds = await asyncio.to_thread(_open_logs, [path for path, _ in batch])
            except BaseException as e:
                # No thread to create them (the loop is closing): nobody waits forever.
                batch, self._waiting = batch + self._waiting, []
                for _, opened in batch:
                    if opened.done():
                        continue
                    if isinstance(e, Exception):
                        opened.set_exception(e)
                    else:
                        opened.cancel()
                raise
            for (_, opened), fd in zip(batch, fds, strict=True):
                if isinstance(fd, OSError):
                    if not opened.done():
                        opened.set_exception(fd)
                elif opened.done():  # its caller was cancelled
                    os.close(fd)
                else:
                    opened.set_result(fd)


def _open_logs(paths: list[str]) -> list[int | OSError]:
    out: list[int | OSError] = []
    for path in paths:
        try:
            out.append(os.open(path, LOG_FLAGS, LOG_MODE))
        except OSError as e:
            out.append(e)
    return out
