"""``fleetrun cancel`` and ``fleetrun prune`` through the CLI, with real runs."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from ._helpers import fleetrun, spawn

SLOW = """\
name: slow
tasks:
  wait:
    run: {run}
  after:
    needs: [wait]
    run: echo after
"""


PRUNED = """\
name: p
tasks:
  a: {run: 'head -c 200000 /dev/zero | tr "\\\\0" x; echo v=1 >> "$FLEETRUN_OUTPUT"'}
  b: {needs: [a], run: 'test -e flag || { touch flag; exit 1; }'}
"""


def _slow(tmp_path: Path, run: str) -> Path:
    plan = tmp_path / "slow.yaml"
    plan.write_text(SLOW.format(run=run))
    return plan


def _wait_running(state: Path) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if (state / "state.db").exists():
            raw = sqlite3.connect(state / "state.db")
            try:
                row = raw.execute(
                    "SELECT r.id FROM runs r JOIN attempts a ON a.run_id=r.id"
                    " WHERE r.ended_at IS NULL LIMIT 1"
                ).fetchone()
            except sqlite3.Error:
                row = None
            finally:
                raw.close()
            if row:
                return str(row[0])
        time.sleep(0.05)
    raise AssertionError("no run started")


def test_cancel_stops_a_live_run_as_ctrl_c_would(tmp_path: Path) -> None:
    plan = _slow(tmp_path, "sleep 30")
    state = tmp_path / ".fleetrun"
    p = spawn("apply", str(plan), "--plain", "--grace", "5")
    try:
        run_id = _wait_running(state)
        res = fleetrun("cancel", "--plan", str(plan))
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"cancelling run {run_id} (pid {p.pid})" in res.stdout
        out, _ = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 130, out
    show = json.loads(fleetrun("show", "--plan", str(plan), "--format", "json").stdout)
    assert show["run"]["status"] == "interrupted"
    states = {i["key"]: i["status"] for i in show["instances"]}
    assert states["after"] == "not_started"
    # Not live any more, or never on record: a clear message, no traceback.
    res = fleetrun("cancel", run_id, "--plan", str(plan))
    assert res.returncode == 2
    assert f"run {run_id} is not live" in res.stderr
    res = fleetrun("cancel", "nope", "--plan", str(plan))
    assert res.returncode == 2
    assert "is not on record" in res.stderr


def test_cancel_now_kills_running_tasks_at_once(tmp_path: Path) -> None:
    plan = _slow(tmp_path, "trap '' TERM; sleep 30 & wait; sleep 30")
    state = tmp_path / ".fleetrun"
    p = spawn("apply", str(plan), "--plain", "--grace", "60")
    try:
        _wait_running(state)
        began = time.monotonic()
        assert fleetrun("cancel", "--now", "--plan", str(plan)).returncode == 0
        p.communicate(timeout=30)
        assert time.monotonic() - began < 20  # not the 60 s grace period
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 130


@pytest.mark.slow
def test_prune_keeps_live_and_reused_runs_and_says_what_it_freed(tmp_path: Path) -> None:
    plan = tmp_path / "p.yaml"
    state = tmp_path / ".fleetrun"
    plan.write_text(PRUNED)
    # Run 1 fails at b (b runs in the plan's folder), run 2 retries it.
    assert fleetrun("apply", str(plan)).returncode == 1
    assert fleetrun("retry", "--plan", str(plan)).returncode == 0
    (tmp_path / "flag").unlink()
    assert fleetrun("apply", str(plan)).returncode == 1  # run 3 fails
    assert fleetrun("retry", "--plan", str(plan)).returncode == 0  # run 4 reuses run 3's a
    hist = json.loads(fleetrun("history", "--plan", str(plan), "--format", "json").stdout)
    r4, r3, r2, r1 = (r["id"] for r in hist)
    assert fleetrun("prune", "--plan", str(plan)).returncode == 2  # says which runs go
    young = fleetrun("prune", "--older-than", "30d", "--plan", str(plan))
    assert young.stdout.startswith("removed 0 run(s)"), young.stdout + young.stderr
    res = fleetrun("prune", "--keep", "1", "--plan", str(plan))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith("removed 2 run(s), ")
    assert "KiB" in res.stdout or "MiB" in res.stdout
    assert f"kept 1 older run(s) that later runs reuse ({r3})" in res.stdout
    hist = json.loads(fleetrun("history", "--plan", str(plan), "--format", "json").stdout)
    assert [r["id"] for r in hist] == [r4, r3]
    assert sorted(p.name for p in (state / "runs").iterdir()) == sorted([r3, r4])
    raw = sqlite3.connect(state / "state.db")
    for table in ("instances", "attempts", "events", "exact_outputs"):
        left = raw.execute(f"SELECT count(*) FROM {table} WHERE run_id IN (?, ?)", (r1, r2))
        assert left.fetchone()[0] == 0, table
    raw.close()
    # The chain still retries with the exact reused value.
    assert fleetrun("retry", "--plan", str(plan)).stdout.startswith("nothing to retry")
