"""The run lock with real processes: refusal naming the holder, takeover after SIGKILL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fleetrun.errors import RunLockedError
from fleetrun.state import RunLock, read_lock

_SRC = str(Path(__file__).resolve().parents[2] / "src")

_HOLDER = """
import sys, time, pathlib
from fleetrun.state import RunLock
lock = RunLock(pathlib.Path(sys.argv[1]), "/plans/p.yaml")
lock.acquire("holder-run")
print("locked", flush=True)
time.sleep(60)
"""


def test_live_lock_is_refused_and_dead_lock_taken_over(tmp_path: Path) -> None:
    p = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": _SRC},
    )
    try:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == b"locked"
        with pytest.raises(RunLockedError) as e:
            RunLock(tmp_path, "/plans/p.yaml").acquire("mine")
        msg = str(e.value)
        assert "holder-run" in msg
        assert f"pid {p.pid}" in msg
        assert socket.gethostname() in msg
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
        if p.stdout:
            p.stdout.close()
    lock = RunLock(tmp_path, "/plans/p.yaml")
    lock.acquire("mine")  # the kernel dropped the dead holder's flock
    assert lock.previous["run_id"] == "holder-run"
    assert lock.previous["pid"] == p.pid
    assert lock.stale
    assert read_lock(tmp_path, "/plans/p.yaml")["run_id"] == "mine"
    lock.release()
    lock.release()
    after = RunLock(tmp_path, "/plans/p.yaml")
    after.acquire("next")
    assert after.previous["released"] is True
    assert not after.stale
    after.release()


def test_lock_within_one_process_is_exclusive(tmp_path: Path) -> None:
    with RunLock(tmp_path, "/plans/p.yaml") as first:
        first.acquire("one")
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
            RunLock(tmp_path, "/plans/p.yaml").acquire("two")
    RunLock(tmp_path, "/plans/p.yaml").acquire("three")
