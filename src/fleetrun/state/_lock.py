"""The run lock: at most one live ``apply``/``retry`` per state directory.

The lock is ``flock(LOCK_EX)`` on ``<state dir>/lock``. The kernel drops a
flock when its holder dies, however it dies, so a lock left by a killed run is
free again without anyone guessing whether its pid is still the same process:
taking it over is exactly as safe as taking a fresh lock. The file's content
(JSON: run, pid, host, process start time) only serves the refusal message
and tells the next holder which run it took over from.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path
from typing import Any

from fleetrun.errors import RunLockedError
from fleetrun.executors import process_alive, process_start_time

LOCK_NAME = "lock"


class RunLock:
    """An exclusive lock on a state directory, held for one run.

    ``previous`` is the content left by the last holder (``{}`` if none); when
    ``stale`` is True that holder died without releasing it.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None
        self.previous: dict[str, Any] = {}

    @property
    def stale(self) -> bool:
        """True when the lock was left by a process that is gone."""
        pid = self.previous.get("pid")
        if not isinstance(pid, int) or self.previous.get("released"):
            return False
        if self.previous.get("host") != socket.gethostname():
            return True
        return not process_alive(pid, self.previous.get("pid_start"))

    def acquire(self, run_id: str) -> None:
        """Take the lock for ``run_id`` or raise ``RunLockedError`` naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise RunLockedError(
                f"run {holder.get('run_id', '?')} (pid {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')}) is live and holds {self.path}; wait for it to "
                "finish or stop it (Ctrl-C) first"
            ) from None
        self.previous = _read(fd)
        pid = os.getpid()
        _write(
            fd,
            {
                "run_id": run_id,
                "pid": pid,
                "host": socket.gethostname(),
                "pid_start": process_start_time(pid),
            },
        )
        self._fd = fd

    def release(self) -> None:
        """Mark the lock released and drop it. Safe to call twice."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            content = _read(fd)
            content["released"] = True
            _write(fd, content)
        finally:
            os.close(fd)  # closing the last descriptor drops the flock

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_lock(state_dir: Path) -> dict[str, Any]:
    """The lock file's content (who holds or last held the lock), ``{}`` if none."""
    try:
        fd = os.open(state_dir / LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return {}
    try:
        return _read(fd)
    finally:
        os.close(fd)


def _read(fd: int) -> dict[str, Any]:
    try:
        data = os.pread(fd, 4096, 0)
        value = json.loads(data.decode()) if data.strip() else {}
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _write(fd: int, content: dict[str, Any]) -> None:
    data = json.dumps(content).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)
