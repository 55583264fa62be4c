"""The run page's data over HTTP, against the journal it is read from.

The page reads a run lean (rows as tuples, attempts counted by SQLite, the
plan never expanded), so these check its figures against the journal's own
rows: pools, waves, the first failure, outputs. A run still going is read
afresh on every request (its clock and its running bars move without an
event) and an ended one is kept; a run whose process was killed reads as
interrupted, with nothing left running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetrun.ui._plans import Plans
from fleetrun.ui._runs import first_failure
from fleetrun.ui._store import LiveReader

from ._helpers import Ui, env, fleetrun, journal_rows, serving, wait_for

SECRET = "p4ge-Secret-31"

PLAN = """\
name: agree
secrets: [DEPLOY_TOKEN]
targets:
  a: {}
  b: {}
  c: {}
pools:
  api: {concurrency: 2, throttle: {exit: [75]}}
  other: {concurrency: 1}
rollout: {waves: [1, "100%"]}
tasks:
  deploy:
    for_each: all
    pools: [api]
    retry: {attempts: 2, backoff: 10ms, on: {exit: [75]}}
    run: |
      echo "address=0x-{{ target.name }}-$DEPLOY_TOKEN" >> "$FLEETRUN_OUTPUT"
      case {{ target.name }} in
        b) echo "error: quota" >&2; exit 3 ;;
        c) [ -f {{ vars.mark }} ] || { touch {{ vars.mark }}; exit 75; } ;;
      esac
  probe:
    pools: [api, other]
    needs: [deploy]
    run: "true"
vars: {mark: ""}
"""

WAITING = """\
name: waiting
targets:
  a: {}
  b: {}
tasks:
  deploy:
    for_each: all
    run: "[ {{ target.name }} = a ] || while [ ! -f {{ vars.go }} ]; do sleep 0.05; done"
vars: {go: ""}
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``PLAN`` applied once: deploy@b fails, deploy@c is retried as throttled."""
    root = tmp_path_factory.mktemp("agree")
    plan = root / "plan.yaml"
    plan.write_text(PLAN)
    state = root / "state"
    res = fleetrun(
        "apply", str(plan), "--plain", "--state-dir", str(state),
        "--var", f"mark={root / 'mark'}", DEPLOY_TOKEN=SECRET,
    )  # fmt: skip
    assert res.returncode == 1, res.stdout + res.stderr
    return state, journal_rows(state, "SELECT id FROM runs")[0][0]


def test_the_run_page_agrees_with_the_journal(finished: tuple[Path, str]) -> None:
    state, run_id = finished
    with serving("--state-dir", str(state)) as ui:
        data = ui.json(f"/api/runs/{run_id}")
    attempts = journal_rows(
        state,
        "SELECT i.task, a.key, a.n, a.started_at, a.ended_at, a.outcome, a.throttled"
        " FROM attempts a JOIN instances i ON i.run_id = a.run_id AND i.key = a.key"
        " WHERE a.run_id=? ORDER BY a.started_at, a.key, a.n",
        (run_id,),
    )
    assert data["attempts"] == len(attempts) == 4  # a, b, c twice; probe never ran
    assert data["running"] == 0
    assert data["first_failed"] == {"key": "deploy@b", "n": 1}
    pools = {p["name"]: p for p in data["pools"]}
    assert list(pools) == ["api", "other"]
    api = [a for a in attempts if a[0] in ("deploy", "probe")]
    assert pools["api"]["attempts"] == len(api)
    assert pools["api"]["starts"] == [a[3] for a in api]
    assert pools["api"]["throttles"] == [a[4] for a in api if a[6]]
    assert len(pools["api"]["throttles"]) == 1  # deploy@c's first attempt
    assert (pools["api"]["concurrency"], pools["other"]["concurrency"]) == (2, 1)
    assert pools["other"]["attempts"] == 0
    assert data["waves"]["rollout"] is True
    assert data["waves"]["total"] == 2
    assert [w["wave"] for w in data["waves"]["list"]] == [1, 2]
    states = dict(journal_rows(state, "SELECT key, status FROM instances WHERE run_id=?",
                               (run_id,)))  # fmt: skip
    assert {c[2]: c[3] for c in data["grid"]["cells"]} == states
    assert data["grid"]["tasks"] == ["deploy", "probe"]
    assert data["grid"]["targets"] == ["a", "b", "c", None]
    assert sorted(o["key"] for o in data["outputs"]) == ["deploy@a", "deploy@c"]  # b failed
    assert all(o["outputs"]["address"].endswith("-***") for o in data["outputs"])
    assert SECRET not in json.dumps(data)


def _start(tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path, Path]:
    plan = tmp_path / "plan.yaml"
    plan.write_text(WAITING)
    go, state = tmp_path / "go", tmp_path / "state"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleetrun", "apply", str(plan), "--plain",
         "--state-dir", str(state), "--var", f"go={go}"],
        env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    return proc, go, state


@pytest.fixture
def waiting(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, Path]]:
    """``WAITING`` applied in another process; deploy@b waits for the file ``go``."""
    proc, go, state = _start(tmp_path)
    try:
        yield proc, go, state
    finally:
        go.touch()
        if proc.poll() is None:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _running(ui: Ui, state: Path) -> tuple[str, dict[str, Any]]:
    """The run's id and its page data once deploy@a ended and deploy@b runs."""
    run_id = wait_for("the run on record", lambda: journal_rows(state, "SELECT id FROM runs"))[0][0]

    def ready() -> dict[str, Any] | None:
        data: dict[str, Any] = ui.json(f"/api/runs/{run_id}")
        states = {c[2]: c[3] for c in data["grid"]["cells"]}
        ok = states == {"deploy@a": "succeeded", "deploy@b": "running"} and data["running"] == 1
        return data if ok else None

    return run_id, wait_for("deploy@b running", ready)


def test_a_live_run_is_read_afresh_and_kept_once_ended(
    waiting: tuple[subprocess.Popen[bytes], Path, Path],
) -> None:
    proc, go, state = waiting
    wait_for("the journal", lambda: (state / "state.db").exists())
    with serving("--state-dir", str(state)) as ui:
        run_id, first = _running(ui, state)
        again = ui.json(f"/api/runs/{run_id}")
        # Nothing happened in between (same last event), yet the page is read again.
        assert again["seq"] == first["seq"]
        assert again["now"] > first["now"]
        assert (again["run"]["live"], again["run"]["status"], again["running"]) == (
            True, "running", 1,
        )  # fmt: skip
        bars = [ui.json(f"/api/runs/{run_id}/timeline") for _ in range(2)]
        assert bars[1]["t1"] > bars[0]["t1"]  # the running bar grows
        listed = {r["id"]: r for r in ui.json("/api/runs")["runs"]}
        assert (listed[run_id]["status"], listed[run_id]["ended_at"]) == ("running", None)

        go.touch()
        assert proc.wait(60) == 0
        done = ui.json(f"/api/runs/{run_id}")
        assert (done["run"]["live"], done["run"]["status"], done["running"]) == (
            False, "succeeded", 0,
        )  # fmt: skip
        assert {c[3] for c in done["grid"]["cells"]} == {"succeeded"}
        # Ended: kept, so asked again it is the very same answer (its clock included).
        assert ui.json(f"/api/runs/{run_id}") == done
        assert ui.json("/api/runs")["runs"][0]["status"] == "succeeded"


def test_a_run_whose_process_was_killed_reads_as_interrupted(
    waiting: tuple[subprocess.Popen[bytes], Path, Path],
) -> None:
    proc, _, state = waiting
    wait_for("the journal", lambda: (state / "state.db").exists())
    with serving("--state-dir", str(state)) as ui:
        run_id, _ = _running(ui, state)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        data = ui.json(f"/api/runs/{run_id}")
        assert (data["run"]["live"], data["run"]["status"], data["running"]) == (
            False, "interrupted", 0,
        )  # fmt: skip
        assert data["run"]["ended_at"] is not None
        states = {c[2]: c[3] for c in data["grid"]["cells"]}
        assert states["deploy@a"] == "succeeded"
        assert states["deploy@b"] != "running"
        assert data["attempts"] == 2
        assert ui.json("/api/runs")["runs"][0]["status"] == "interrupted"


THROTTLED = """\
name: throttled
targets: {a: {}}
tasks:
  t:
    for_each: all
    retry: {attempts: 2, backoff: 10ms, on: {output: ["429"]}}
    run: |
      echo "starting"
      echo "429 Too Many Requests"
      echo "<b>bold</b> and more"
      exit 75
"""


def test_a_throttled_failure_shows_its_429_line(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(THROTTLED)
    done = fleetrun("apply", str(plan), "--plain")
    assert done.returncode == 1, done.stdout + done.stderr
    state = tmp_path / ".fleetrun"
    reader = LiveReader(state)
    try:
        [run] = reader.runs(None, limit=None)
        failure = first_failure(reader, run, Plans())
    finally:
        reader.close()
    assert failure is not None
    assert failure["key"] == "t@a"
    assert failure["line"] == "429 Too Many Requests"
