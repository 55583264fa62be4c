"""``python3 -m fleetrun.executors.testing DIR``, the loopback sshd for trying
plans without hosts: SIGTERM (``kill %1`` of the background job) and SIGHUP (the
terminal closed) stop its sshd as Ctrl-C does, so no sshd outlives it.

Only the helper gets the signal (it runs in a session of its own here), as when
the signal is sent to its pid: its sshd must be stopped by the helper itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleetrun.executors.testing import available

pytestmark = pytest.mark.skipif(not available(), reason="needs OpenSSH's sshd and ssh-keygen")


def _sshds_of(config: Path) -> list[int]:
    """Pids of the processes whose command line names ``config`` (the test's sshd)."""
    out = subprocess.run(["pgrep", "-f", str(config)], capture_output=True, text=True,
                         check=False, timeout=30).stdout  # fmt: skip
    return [int(pid) for pid in out.split()]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_to_the_helper_stops_its_sshd(tmp_path: Path, signum: signal.Signals) -> None:
    config = tmp_path / ".sshd" / "sshd_config"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleetrun.executors.testing", str(tmp_path)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline().decode()  # printed once the sshd answers
        assert "sshd on 127.0.0.1:" in ready, proc.stderr.read() if proc.stderr else ""
        assert (tmp_path / "ssh_config").is_file()
        (sshd,) = _sshds_of(config)
        assert proc.poll() is None
        os.kill(proc.pid, signum)
        assert proc.wait(timeout=60) == 0
        # The helper waited for its sshd before exiting: nothing of it is left.
        assert _sshds_of(config) == []
        with pytest.raises(ProcessLookupError):
            os.kill(sshd, 0)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        for pid in _sshds_of(config):
            os.kill(pid, signal.SIGKILL)
        if proc.stdout is not None:
            proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()


def test_the_sshd_is_gone_however_soon_the_signal_comes(tmp_path: Path) -> None:
    """A SIGTERM while the server is still starting leaves no sshd either."""
    config = tmp_path / ".sshd" / "sshd_config"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleetrun.executors.testing", str(tmp_path)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        # Signal once the sshd's config exists: the sshd is starting or about to.
        for _ in range(600):
            if config.exists() or proc.poll() is not None:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert _sshds_of(config) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        for pid in _sshds_of(config):
            os.kill(pid, signal.SIGKILL)
