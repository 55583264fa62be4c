"""Helpers for the compute-cluster tests: resolved attempts, process searches, one loop."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

from fleetrun.executors._contract import Attempt, Handle
from fleetrun.redact import Redactor
from fleetrun.runs_on import ClusterOptions


def make_attempt(
    tmp: Path,
    command: str,
    *,
    key: str = "job@t",
    n: int = 1,
    run_id: str = "r1",
    timeout: float | None = None,
    grace: float = 2.0,
    secrets: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    lines: list[str] | None = None,
    handles: list[Handle] | None = None,
    options: ClusterOptions | None = None,
) -> Attempt:
    """A resolved attempt whose log and output files live in ``tmp``."""
    safe = key.replace("@", "_")
    return Attempt(
        run_id=run_id,
        key=key,
        task=key.split("@")[0],
        target=key.split("@")[1] if "@" in key else None,
        n=n,
        command=command,
        display=command,
        env=env or {},
        env_extra={"FLEETRUN_ATTEMPT": str(n)},
        cwd=None,
        log_path=str(tmp / f"{safe}.{n}.log"),
        output_path=str(tmp / f"{safe}.{n}.out"),
        timeout=timeout,
        grace=grace,
        redactor=Redactor(secrets),
        on_started=(handles.append if handles is not None else lambda h: None),
        on_output=(lines.append if lines is not None else None),
        options=options,
    )


def pgrep(marker: str) -> list[str]:
    """Command lines of live processes whose command line holds ``marker``."""
    out = subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


def gone(marker: str, within: float = 15.0) -> bool:
    """Whether every process whose command line holds ``marker`` ends within ``within``
    seconds (a worker's watchdog ends its jobs' groups asynchronously)."""
    deadline = time.monotonic() + within
    while pgrep(marker):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def run(coro: Any) -> Any:
    """Run one coroutine to its end on a fresh loop."""
    return asyncio.run(coro)
