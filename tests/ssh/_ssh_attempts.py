"""Building resolved attempts for the SSH executor tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fleetrun.executors._contract import Attempt, Handle
from fleetrun.redact import Redactor
from fleetrun.runs_on import SSHOptions


def attempt(
    tmp: Path,
    target: str,
    command: str,
    ssh: Any,
    *,
    task: str = "t",
    n: int = 1,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    grace: float = 2.0,
    secrets: tuple[str, ...] = (),
    options: SSHOptions | None = None,
    handles: list[Handle] | None = None,
    lines: list[str] | None = None,
) -> Attempt:
    """A resolved attempt of ``task@target`` with its log under ``tmp``."""
    key = f"{task}@{target}"
    return Attempt(
        run_id="run-test",
        key=key,
        task=task,
        target=target,
        n=n,
        command=command,
        display=command,
        env=env or {"FLEETRUN_TASK": task, "FLEETRUN_RUN_ID": "run-test"},
        env_extra={
            "FLEETRUN_TARGET": target,
            "FLEETRUN_ATTEMPT": str(n),
            "FLEETRUN_OUTPUT": str(tmp / f"{key}.out"),
        },
        cwd=None,
        log_path=str(tmp / f"{key}.log"),
        output_path=str(tmp / f"{key}.out"),
        timeout=timeout,
        grace=grace,
        redactor=Redactor(secrets),
        on_started=(handles.append if handles is not None else (lambda h: None)),
        on_output=(lines.append if lines is not None else None),
        attributes={"ssh": ssh},
        options=options,
    )
