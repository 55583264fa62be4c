"""Running fleetrun as a real subprocess, and cleaning up what tests leave behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHAIN138 = ROOT / "examples" / "chain138" / "plan.yaml"


def env(**extra: str) -> dict[str, str]:
    """The test process's environment plus ``extra``, with fleetrun importable."""
    e = {k: v for k, v in os.environ.items() if k not in ("FAIL_REGIONS", "THROTTLE_REGIONS")}
    e["PYTHONPATH"] = str(ROOT / "src")
    e.update(extra)
    return e


# Commands that only read the record and start nothing. Tests call them hundreds of
# times, each a fresh Python importing fleetrun (about half a second): they run in
# this process instead, through click's runner, with the same arguments, exit code
# and separate stdout and stderr. test_read_commands_in_a_process.py runs each of
# them as ``python -m fleetrun`` too.
READ_COMMANDS = frozenset({"show", "logs", "outputs", "history"})


def read_in_process(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the read command ``fleetrun ARGS`` in this process; an exception that
    would have ended ``python -m fleetrun`` with a traceback is raised here."""
    from click.testing import CliRunner

    from fleetrun.cli import cli

    res = CliRunner().invoke(cli, list(args), prog_name="fleetrun")
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return subprocess.CompletedProcess(
        ["fleetrun", *args], res.exit_code, stdout=res.stdout, stderr=res.stderr
    )


def fleetrun(
    *args: str, extra_env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m fleetrun ARGS`` to its end; stdout and stderr captured.

    ``show``, ``logs`` (not following), ``outputs`` and ``history`` without
    ``extra_env`` run in this process (``READ_COMMANDS``)."""
    if (
        args
        and args[0] in READ_COMMANDS
        and extra_env is None
        and not {"-f", "--follow"} & set(args)
    ):
        return read_in_process(*args)
    return subprocess.run(
        [sys.executable, "-m", "fleetrun", *args],
        env=env(**(extra_env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def spawn(*args: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start ``python -m fleetrun ARGS`` in the background (stdout piped, stderr merged)."""
    return subprocess.Popen(
        [sys.executable, "-m", "fleetrun", *args],
        env=env(**(extra_env or {})),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def show_json(state: Path, run: str | None = None) -> dict[str, Any]:
    """``fleetrun show [RUN] --format json``."""
    res = fleetrun("show", *([run] if run else []), "--state-dir", str(state), "--format", "json")
    assert res.returncode == 0, res.stderr
    data: dict[str, Any] = json.loads(res.stdout)
    return data


def kill_processes_with_env(key: str, value: str) -> int:
    """SIGKILL every process whose environment holds ``key=value``; return how many."""
    needle = f"{key}={value}".encode()
    n = 0
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                entries = f.read().split(b"\0")
        except OSError:
            continue
        if needle in entries:
            try:
                os.kill(int(name), signal.SIGKILL)
                n += 1
            except ProcessLookupError:
                pass
    return n


def live_processes_with_env(key: str, value: str) -> list[int]:
    """Pids of live (not zombie) processes whose environment holds ``key=value``."""
    needle = f"{key}={value}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                entries = f.read().split(b"\0")
            with open(f"/proc/{name}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in entries and state not in (b"Z", b"X"):
            found.append(int(name))
    return found
