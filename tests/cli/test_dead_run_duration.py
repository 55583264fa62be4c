"""A run killed with SIGKILL lasted until its last trace, not until its last event.

The task prints the time every 0.1 s to its log and nothing reaches the
journal while it runs, so the last event is the attempt's start; the run is
killed after about 2 s. Its shown end must be no earlier than the last write
to the attempt's log, both as computed by the read commands and once
recovery has recorded it.

A run of quiet tasks (``sleep 30``: no event, no log write) killed after about
3 s still lasted about 3 s: its journal writer's heartbeat (``HEARTBEAT``, 1 s)
is its last trace, and its running attempts end with it.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleetrun.state import JournalReader

from ._helpers import fleetrun, kill_processes_with_env, show_json, spawn

PLAN = """\
name: ticker
targets:
  a: {}
tasks:
  tick:
    for_each: all
    run: for i in $(seq 600); do date +%s.%N; sleep 0.1; done
"""


def _last_tick(log: Path) -> float:
    """The last complete time the attempt printed to its log."""
    ticks = []
    for line in log.read_text().splitlines():
        try:
            ticks.append(float(line))
        except ValueError:
            continue  # a line cut off by the kill
    assert ticks, f"nothing printed to {log}"
    return max(ticks)


def _history_run(state: Path) -> dict[str, Any]:
    import json

    res = fleetrun("history", "--state-dir", str(state), "--format", "json")
    assert res.returncode == 0, res.stderr
    rows: list[dict[str, Any]] = json.loads(res.stdout)
    assert len(rows) == 1
    return rows[0]


def test_a_killed_run_ends_at_its_last_attempt_write(tmp_path: Path) -> None:
    plan, state = tmp_path / "plan.yaml", tmp_path / "st"
    plan.write_text(PLAN)
    _apply_then_kill(plan, state, lambda: bool(list(state.glob("runs/*/logs/tick/a.1.log"))), 2)
    log = sorted((state / "runs").glob("*/logs/tick/a.1.log"))[0]
    time.sleep(0.2)  # let the killed task's last write land
    # The last attempt write, as the filesystem keeps its time (a coarse clock:
    # it may lag the time the task printed by a few milliseconds).
    last = log.stat().st_mtime
    assert last >= _last_tick(log) - 0.05

    with JournalReader(state) as r:
        run = r.run()
        sql = "SELECT max(at) FROM events WHERE run_id=?"
        events = r.conn.execute(sql, (run.id,)).fetchone()[0]
    # What made the old end wrong: no event since the attempt began.
    assert events < last
    # Computed by the read commands (nothing has recovered the run yet).
    assert run.computed
    shown = show_json(state)["run"]
    assert shown["status"] == "interrupted"
    assert shown["ended_at"] >= last
    assert shown["ended_at"] - shown["started_at"] >= 1.5
    assert _history_run(state)["ended_at"] >= last
    text = fleetrun("show", "--state-dir", str(state)).stdout
    took = next(line for line in text.splitlines() if "took" in line)
    assert "took 0." not in took, took

    # Recorded by recovery (any command that writes the journal), the same.
    res = fleetrun("retry", "--state-dir", str(state), "--dry-run")
    assert res.returncode == 0, res.stdout + res.stderr
    with JournalReader(state) as r:
        recorded = r.run()
    assert not recorded.computed
    assert recorded.ended_at is not None
    assert recorded.ended_at >= last
    (inst,) = (i for i in JournalReader(state).instances(recorded.id) if i.key == "tick@a")
    assert inst.status == "interrupted"
    assert inst.ended_at is not None
    assert inst.ended_at >= last


QUIET = """\
name: quiet
targets:
  a: {}
  b: {}
tasks:
  nap:
    for_each: all
    run: sleep 30
"""


def _durations(state: Path) -> tuple[float, float, list[float], list[float]]:
    """The run's duration per ``history`` and ``show``, and per the JSON report
    the run's and each attempt's."""
    import json

    row = _history_run(state)
    history = row["ended_at"] - row["started_at"]
    shown = show_json(state)["run"]
    assert shown["status"] == "interrupted"
    show = shown["ended_at"] - shown["started_at"]
    res = fleetrun("report", "--state-dir", str(state), "--format", "json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["status"] == "interrupted"
    runs = [report["ended_at"] - report["started_at"]]
    attempts = [a["ended_at"] - a["started_at"] for a in report["attempts"]]
    assert len(attempts) == 2, report["attempts"]
    assert all(a["outcome"] == "interrupted" for a in report["attempts"])
    return history, show, runs, attempts


def test_a_killed_run_of_quiet_tasks_ends_at_its_last_heartbeat(tmp_path: Path) -> None:
    plan, state = tmp_path / "quiet.yaml", tmp_path / "st"
    plan.write_text(QUIET)
    _apply_then_kill(plan, state, lambda: len(list(state.glob("runs/*/logs/nap/*"))) == 2, 3)

    with JournalReader(state) as r:
        run = r.run()
        events = r.conn.execute("SELECT max(at) FROM events WHERE run_id=?", (run.id,)).fetchone()
    # Nothing but the heartbeat could tell how long it ran: no event and no
    # log write since the attempts began.
    assert events[0] - run.started_at < 2
    assert run.computed

    # Computed by the read commands, then recorded by recovery: the same bounds.
    for _ in ("computed", "recorded"):
        history, show, runs, attempts = _durations(state)
        assert history >= 2, history
        assert show >= 2, show
        assert min(runs) >= 2, runs
        assert min(attempts) >= 2, attempts
        # The heartbeat never runs ahead of the kill (about 3 s after the
        # attempts started; generous for a loaded machine).
        assert max(attempts) < 30, attempts
        text = fleetrun("show", "--state-dir", str(state)).stdout
        took = next(line for line in text.splitlines() if "took" in line)
        assert "took 0." not in took, took
        assert "took 1." not in took, took
        res = fleetrun("retry", "--state-dir", str(state), "--dry-run")
        assert res.returncode == 0, res.stdout + res.stderr

    with JournalReader(state) as r:
        recorded = r.run()
        assert not recorded.computed
        tries = r.attempts(recorded.id)
    assert [a.outcome for a in tries] == ["interrupted", "interrupted"]
    assert all(a.ended_at == recorded.ended_at for a in tries), tries


def _apply_then_kill(plan: Path, state: Path, started: Callable[[], bool], after: float) -> None:
    """``fleetrun apply PLAN``, SIGKILLed ``after`` seconds once ``started()`` holds;
    then what the killed run left running is ended (so its logs stop growing)."""
    tag = uuid.uuid4().hex
    p = spawn("apply", str(plan), "--state-dir", str(state), "--plain",
              extra_env={"TEST_TAG": tag})  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not started() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started(), "the attempts never started"
        time.sleep(after)
        p.send_signal(signal.SIGKILL)
        p.communicate()
    finally:
        kill_processes_with_env("TEST_TAG", tag)
        if p.poll() is None:
            p.kill()
            p.communicate()
