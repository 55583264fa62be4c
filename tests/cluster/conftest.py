"""Fixtures for the compute-cluster tests: real Dask schedulers and workers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The compute cluster needs the `cluster` extra (pip install -e '.[test,cluster]').
# Off CI a missing extra skips these tests; under CI it fails them.
if os.environ.get("CI", "").lower() not in ("1", "true", "yes"):
    pytest.importorskip("distributed")
    pytest.importorskip("kubernetes_validate")

from fleetrun.cluster import LocalCluster
from fleetrun.executors._contract import Attempt, Handle
from fleetrun.redact import Redactor


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A scheduler and two worker processes shared by one test module."""
    c = LocalCluster(tmp_path_factory.mktemp("cluster"))
    c.start(2)
    try:
        yield c
    finally:
        c.stop(grace=5)


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
    options: dict[str, Any] | None = None,
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
        options=options or {},
    )


def pgrep(marker: str) -> list[str]:
    """Command lines of live processes whose command line holds ``marker``."""
    out = subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


def run(coro: Any) -> Any:
    """Run one coroutine to its end on a fresh loop."""
    return asyncio.run(coro)
