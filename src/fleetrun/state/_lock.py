"""The run lock: at most one live ``apply``/``retry`` per plan.

Runs of different plans sharing a state directory (every plan of one folder
does, by default) go side by side: the journal is SQLite in WAL mode with a
busy timeout, and recovery only touches runs whose process is gone. The same
plan twice at once is refused, because a retry reads the record its sibling
would be changing.

The lock is ``flock(LOCK_EX)`` on ``<state dir>/locks/<key>.lock``, where
``key`` is the first 16 hex digits of the SHA-256 of the plan's resolved path
(``lock_key``); the file is opened without following links, mode 0600. The kernel drops a
flock when its holder dies, however it dies, so a lock left by a killed run is
free again without anyone guessing whether its pid is still the same process:
taking it over is exactly as safe as taking a fresh lock. The file's content
(JSON: run, pid, host, process start time) only serves the refusal message
and tells the next holder which run it took over from.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
from pathlib import Path
from typing import Any

from fleetrun.errors import RunLockedError, StateDirError
from fleetrun.executors import process_alive, process_start_time
from fleetrun.layout import LOCKS_DIR
from fleetrun.state._fs import open_private, private_dirs


def lock_key(plan_path: str) -> str:
    """The lock file's name (without ``.lock``) of the plan at ``plan_path`` (resolved)."""
    return hashlib.sha256(plan_path.encode()).hexdigest()[:16]


def lock_path(state_dir: Path, plan_path: str) -> Path:
    """Where the lock of the plan at ``plan_path`` lives."""
    return state_dir / LOCKS_DIR / f"{lock_key(plan_path)}.lock"


class RunLock:
    """An exclusive lock on one plan in a state directory, held for one run.

    ``previous`` is the content left by the last holder (``{}`` if none); when
    ``stale`` is True that holder died without releasing it.
    """

    def __init__(self, state_dir: Path, plan_path: str) -> None:
        self.state_dir = state_dir
        self.plan_path = plan_path
        self.path = lock_path(state_dir, plan_path)
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
        private_dirs(self.state_dir, LOCKS_DIR)
        fd = open_private(self.path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise RunLockedError(
                f"run {holder.get('run_id', '?')} of {self.plan_path} is live (pid "
                f"{holder.get('pid', '?')} on {holder.get('host', '?')}) and holds its lock "
                f"{self.path}; wait for it to finish or stop it first (`fleetrun cancel "
                f"{holder.get('run_id', '')}`)"
            ) from None
        self.previous = _read(fd)
        pid = os.getpid()
        try:
            _write(
                fd,
                {
                    "run_id": run_id,
                    "pid": pid,
                    "host": socket.gethostname(),
                    "pid_start": process_start_time(pid),
                },
            )
        except OSError as e:
            os.close(fd)
            raise StateDirError(
                f"cannot write the lock {self.path}: {e.strerror or e}; free some space or "
                "choose another state directory with --state-dir"
            ) from None
        self._fd = fd

    def release(self) -> None:
        """Mark the lock released and drop it. Safe to call twice."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            content = _read(fd)
            content["released"] = True
            # A full disk: the flock still drops; the next holder sees a dead pid.
            with contextlib.suppress(OSError):
                _write(fd, content)
        finally:
            os.close(fd)  # closing the last descriptor drops the flock

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_lock(state_dir: Path, plan_path: str) -> dict[str, Any]:
    """The plan's lock file content (who holds or last held it), ``{}`` if none."""
    try:
        fd = os.open(lock_path(state_dir, plan_path), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
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
