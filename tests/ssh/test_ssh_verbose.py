"""``fleetrun -v`` against the loopback sshd with a key it does not accept: the
library's reason (asyncssh's ``PermissionDenied``) and fleetrun's retries are on
stderr, and the plan's secret is not."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SECRET = "hush-Wk40Tc"
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} (fleetrun|asyncssh)\S* (DEBUG|INFO|WARNING|ERROR) ")


def test_wrong_key_shows_the_librarys_reason_and_the_retries(sshd: Any, tmp_path: Path) -> None:
    wrong = tmp_path / "id_wrong"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True, timeout=30
    )
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        f"""\
vars:
  tok: {{value: "{SECRET}", secret: true}}
targets:
  web1:
    ssh: {{host: 127.0.0.1, port: {sshd.port}, user: {sshd.user},
           identity_file: {wrong}, known_hosts: {sshd.known_hosts}, connect_timeout: 10s}}
tasks:
  deploy:
    for_each: all
    runs_on: ssh
    run: "echo {{{{ vars.tok }}}}"
    retry: {{attempts: 2, backoff: 0.01s, on: {{connect: true}}}}
"""
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "FLEETRUN_LOG": ""}
    res = subprocess.run(
        [sys.executable, "-m", "fleetrun", "-v", "apply", str(plan), "--plain"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 1, res.stderr
    lines = [line for line in res.stderr.splitlines() if LOG_LINE.match(line)]
    refused = [line for line in lines if "connect try 1 failed: PermissionDenied" in line]
    assert len(refused) == 2, res.stderr  # once per attempt, in asyncssh's words
    retry = [line for line in lines if "attempt 1 of 2 failed; retrying in" in line]
    assert len(retry) == 1, res.stderr
    assert lines.index(refused[0]) < lines.index(retry[0]) < lines.index(refused[1])
    # fleetrun's own summary of the same failure, on the console.
    assert "authentication failed" in res.stdout
    assert SECRET not in res.stdout + res.stderr
