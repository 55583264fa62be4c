"""The watchdog of a cluster worker: one process per worker that SIGKILLs the
process groups of its jobs when the worker process dies, even by SIGKILL.

It polls the read end of a pipe whose write end only the worker has; at end of
file it kills every group still registered with it. Groups are registered
(``+PGID``) and unregistered (``-PGID``) on a second pipe that the watchdog
reads only every ``EVERY`` seconds and at the worker's end, so a job costs the
watchdog no wake-up. See ``_cluster_job`` for when groups are registered.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

EVERY = 0.5
"""How often the watchdog reads its registrations (seconds)."""

_WATCHDOG = r"""
import os, select, signal, sys
registry, life = int(sys.argv[1]), int(sys.argv[2])
os.set_blocking(registry, False)
groups, rest = set(), b""
def drain():
    global rest
    while True:
        try:
            data = os.read(registry, 65536)
        except BlockingIOError:
            return
        if not data:
            return
        *lines, rest = (rest + data).split(b"\n")
        for line in lines:
            if line[:1] == b"+":
                groups.add(int(line[1:]))
            else:
                groups.discard(int(line[1:]))
poller = select.poll()
poller.register(life, select.POLLIN)
while not poller.poll(float(sys.argv[3]) * 1000):
    drain()
drain()
for pgid in groups:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
"""


class Watchdog:
    """This worker's watchdog process and the two pipes to it."""

    def __init__(self) -> None:
        registry_r, self.registry = os.pipe2(os.O_CLOEXEC)
        life_r, self.life = os.pipe2(os.O_CLOEXEC)
        try:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _WATCHDOG,
                    str(registry_r),
                    str(life_r),
                    str(EVERY),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(registry_r, life_r),
                start_new_session=True,
            )
        except BaseException:
            self.close()
            raise
        finally:
            os.close(registry_r)
            os.close(life_r)

    def alive(self) -> bool:
        """True while the watchdog process runs."""
        return self.proc.poll() is None

    def send(self, lines: bytes) -> None:
        """Write registrations (``+PGID``/``-PGID`` lines), whole."""
        view = memoryview(lines)
        while view:
            view = view[os.write(self.registry, view) :]

    def close(self) -> None:
        """Close this side of both pipes (the watchdog then kills what is registered)."""
        for fd in (self.registry, self.life):
            with contextlib.suppress(OSError):
                os.close(fd)
