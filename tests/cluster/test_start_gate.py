"""A cluster job's command cannot run before its process group is registered
with the worker's watchdog (``_cluster_job._start``): its shell waits for a go
line on a pipe that the job writes once the group is registered. A worker
killed between the spawn and that write (here: a real process SIGKILLed at
that moment, the window a test against a whole Dask worker cannot hit) closes
the pipe, and the shell exits without running the command."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the job runner is Linux only")


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _spawn_then(tmp_path: Path, after: str) -> tuple[int, Path]:
    """Spawn ``touch MARKER`` as the worker does, then run ``after``; the job's pid."""
    marker = tmp_path / "ran"
    code = textwrap.dedent(
        f"""
        import os, signal
        from fleetrun.executors._cluster_job import _Worker
        worker = _Worker()
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        go_r, go_w = os.pipe2(os.O_CLOEXEC)
        pid = worker.spawn("touch {marker}", {{}}, None, out_w, go_r)
        os.close(go_r)
        print(pid, flush=True)
        {after}
        """
    )
    ran = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    return int(ran.stdout.split()[0]), marker


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 30
    while not _gone(pid):
        assert time.monotonic() < deadline, f"the job's shell {pid} is still running"
        time.sleep(0.02)


def test_a_job_whose_worker_dies_before_registering_it_never_runs(tmp_path: Path) -> None:
    pid, marker = _spawn_then(tmp_path, "os.kill(os.getpid(), signal.SIGKILL)")
    _wait_gone(pid)
    assert not marker.exists()


def test_the_go_line_lets_the_command_run(tmp_path: Path) -> None:
    pid, marker = _spawn_then(tmp_path, 'os.write(go_w, b"\\n"); os.waitpid(pid, 0)')
    _wait_gone(pid)
    assert marker.exists()
