"""One lock per plan: sibling plans of one folder run side by side in one state
directory; the same plan twice is refused with its own exit code."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from ._helpers import CHAIN138, fleetrun, spawn


def _copy_example(tmp_path: Path) -> Path:
    dest = tmp_path / "chain138"
    shutil.copytree(CHAIN138.parent, dest, ignore=shutil.ignore_patterns(".fleetrun"))
    return dest


@pytest.mark.slow
def test_two_plans_of_one_folder_run_at_the_same_time(tmp_path: Path) -> None:
    folder = _copy_example(tmp_path)
    env = {"CHAIN138_SCALE": "0.05"}
    deploy = spawn("apply", str(folder / "plan.yaml"), "--plain", extra_env=env)
    try:
        # The deploy holds its lock and is recorded as running when status starts.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not list(folder.glob(".fleetrun/locks/*.lock")):
            time.sleep(0.05)
        status = fleetrun("apply", str(folder / "status.yaml"), extra_env=env, timeout=120)
        assert deploy.poll() is None, "the deploy ended before the status run: not concurrent"
        out, _ = deploy.communicate(timeout=180)
    finally:
        if deploy.poll() is None:
            deploy.kill()
            deploy.communicate()
    assert status.returncode == 0, status.stdout + status.stderr
    assert deploy.returncode == 0, out
    hist = fleetrun("history", "--state-dir", str(folder / ".fleetrun"), "--format", "json")
    runs = json.loads(hist.stdout)
    assert sorted(r["plan_name"] for r in runs) == ["chain-138", "chain-138-status"]
    assert {r["status"] for r in runs} == {"succeeded"}
    # The two runs overlapped in time, and neither was taken for a dead one.
    a, b = runs
    assert a["started_at"] < b["ended_at"]
    assert b["started_at"] < a["ended_at"]


def test_the_same_plan_twice_is_refused_with_exit_3(tmp_path: Path) -> None:
    folder = _copy_example(tmp_path)
    env = {"CHAIN138_SCALE": "0.05"}
    first = spawn("apply", str(folder / "plan.yaml"), "--plain", extra_env=env)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not list(folder.glob(".fleetrun/runs/*")):
            time.sleep(0.05)
        second = fleetrun("apply", str(folder / "plan.yaml"), extra_env=env)
        assert first.poll() is None
    finally:
        first.kill()
        first.communicate()
    assert second.returncode == 3, second.stdout + second.stderr
    assert f"of {folder / 'plan.yaml'} is live (pid {first.pid}" in second.stderr
    assert "fleetrun cancel" in second.stderr
    assert "Exit codes:" in fleetrun("--help").stdout
    assert "3 the" in fleetrun("--help").stdout.replace("\n", " ").replace("  ", " ")
