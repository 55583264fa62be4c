"""What an SSH command leaves running in its group is ended and said, as locally.

The remote script counts the group's members after the command (``ps``),
reports the count in its trailer and ends them; the executor sets
``AttemptResult.left_running``, and the console and ``show`` say it with the
advice that fits SSH (``keep_running`` is local-only: leave the group).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _ssh_attempts import attempt

import fleetrun
from fleetrun.executors import SSHExecutor
from fleetrun.executors._contract import AttemptResult

_SRC = Path(fleetrun.__file__).resolve().parents[1]
"""The fleetrun this test imported, for the CLI it runs."""
_TAG = f"{secrets.randbelow(10**8):08d}"


def _alive(marker: str) -> list[str]:
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True, check=False)
    return out.stdout.split()


def _wait_gone(marker: str, within: float = 5.0) -> list[str]:
    deadline = time.monotonic() + within
    while (left := _alive(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def _run(a: Any) -> AttemptResult:
    async def main() -> AttemptResult:
        ex = SSHExecutor()
        try:
            return await ex.run(a)
        finally:
            await ex.aclose()

    return asyncio.run(main())


def test_executor_counts_what_the_command_left_in_its_group(sshd: Any, tmp_path: Path) -> None:
    one, two = f"779.{_TAG}1", f"779.{_TAG}2"
    leaves = attempt(
        tmp_path,
        "node-left-1",
        f"nohup sleep {one} >/dev/null 2>&1 & sleep {two} >/dev/null 2>&1 & echo up",
        sshd.spec("node-left-1"),
    )
    r = _run(leaves)
    assert (r.exit_code, r.left_running) == (0, 2)
    assert _wait_gone(one) == []
    assert _wait_gone(two) == []
    # A failing command is counted too; a clean one leaves 0.
    failing = attempt(
        tmp_path, "node-left-2", f"sleep {one} >/dev/null 2>&1 & exit 4", sshd.spec("node-left-2")
    )
    r = _run(failing)
    assert (r.exit_code, r.left_running) == (4, 1)
    clean = attempt(tmp_path, "node-left-3", "sleep 0.1; echo done", sshd.spec("node-left-3"))
    r = _run(clean)
    assert (r.exit_code, r.left_running) == (0, 0)
    assert _wait_gone(one) == []


def test_console_and_show_say_it_with_the_ssh_advice(sshd: Any, tmp_path: Path) -> None:
    marker = f"779.{_TAG}3"
    cfg = json.dumps(str(sshd.client_config))
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        f"targets:\n  a: {{ssh: {{host: node-left-4, config_file: {cfg}}}}}\n"
        "tasks:\n"
        f"  serve: {{for_each: all, runs_on: ssh, run: 'nohup sleep {marker} >/dev/null 2>&1 &'}}\n"
    )
    state = tmp_path / "st"
    env = {**os.environ, "PYTHONPATH": str(_SRC)}
    cmd = [sys.executable, "-m", "fleetrun"]
    res = subprocess.run(
        [*cmd, "apply", str(plan), "--state-dir", str(state), "--plain"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    said = (
        "ended 1 process(es) it left running"
        " (a process that should stay must leave its group: `setsid`)"
    )
    line = next(ln for ln in res.stdout.splitlines() if "succeeded  serve@a" in ln)
    assert line.endswith(said), line
    assert "keep_running" not in res.stdout
    shown = subprocess.run(
        [*cmd, "show", "--state-dir", str(state), "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    [inst] = json.loads(shown)["instances"]
    assert (inst["status"], inst["reason"]) == ("succeeded", said)
    assert _wait_gone(marker) == []
