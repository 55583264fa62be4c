"""``history``, ``show``, ``logs`` and ``outputs`` over a journal written by the real writer."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from fleetrun.cli import cli
from fleetrun.engine._events import (
    AttemptEnded,
    AttemptStarted,
    InstanceSettled,
    RunEnded,
)
from fleetrun.state import Journal, JournalWriter, NewInstance

T0 = 1_700_000_000.0


def _record(state: Path, run_id: str, parent: str | None, failing: bool) -> None:
    keys = [("build", None), ("deploy@east", "east"), ("deploy@west", "west")]
    with Journal(state) as j:
        j.begin_run(
            run_id=run_id, parent_id=parent, plan_path="/plans/app.yaml", plan_name="app",
            plan_hash="h", plan_snapshot="name: app\n", mode="dag",
            kind="retry" if parent else "apply", options={},
            instances=[NewInstance(k, i, k.split("@")[0], t) for i, (k, t) in enumerate(keys)],
        )  # fmt: skip
    logs = state / "runs" / run_id / "logs"
    logs.mkdir(parents=True)
    w = JournalWriter(state / "state.db", run_id)
    w.start()
    for i, (key, _) in enumerate(keys):
        fail = failing and key == "deploy@west"
        log = logs / f"{key}.1.log"
        log.write_text(f"output of {key}\n" + ("boom\n" if fail else ""))
        start = T0 + i
        w(AttemptStarted(at=start, node=i, key=key, attempt=1, command=f"run {key}",
                         pid=1, pgid=1, log_path=str(log)))  # fmt: skip
        w(AttemptEnded(at=start + 2.5, node=i, key=key, attempt=1, started_at=start,
                       exit_code=3 if fail else 0, signal=None, timed_out=False,
                       outcome="failed" if fail else "succeeded"))  # fmt: skip
        outputs = {"version": "1.2.3"} if key == "build" else {}
        outputs = {"url": f"https://{key}"} if key == "deploy@east" else outputs
        w(
            InstanceSettled(
                at=start + 2.5,
                node=i,
                key=key,
                state="failed" if fail else "succeeded",
                attempts=1,
                outputs=outputs,
            )
        )
    counts = {"succeeded": 2, "failed": 1} if failing else {"succeeded": 3}
    w(RunEnded(at=T0 + 10, run_id=run_id, status="failed" if failing else "succeeded",
               counts=counts))  # fmt: skip
    w.close()


@pytest.fixture
def state(tmp_path: Path) -> Path:
    s = tmp_path / "st"
    _record(s, "20260101T000000-aaaa", None, failing=True)
    _record(s, "20260101T000100-bbbb", "20260101T000000-aaaa", failing=False)
    return s


def _cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, list(args))
    return res.exit_code, res.output


def test_history_lists_runs_newest_first_linked(state: Path) -> None:
    code, out = _cli("history", "--state-dir", str(state))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["RUN", "PARENT", "KIND", "STATUS", "PLAN", "VARS", "STARTED",
                                "DURATION", "INSTANCES"]  # fmt: skip
    assert lines[1].split()[:4] == ["20260101T000100-bbbb", "20260101T000000-aaaa", "retry",
                                    "succeeded"]  # fmt: skip
    assert lines[1].endswith("3 succeeded")
    assert lines[2].split()[:4] == ["20260101T000000-aaaa", "-", "apply", "failed"]
    assert lines[2].endswith("2 succeeded, 1 failed")
    code, out = _cli("history", "--state-dir", str(state), "--format", "json")
    data = json.loads(out)
    assert [(r["id"], r["parent_id"], r["status"]) for r in data] == [
        ("20260101T000100-bbbb", "20260101T000000-aaaa", "succeeded"),
        ("20260101T000000-aaaa", None, "failed"),
    ]


def test_show_lists_instances_with_exit_codes(state: Path) -> None:
    code, out = _cli("show", "20260101T000000", "--state-dir", str(state))
    assert code == 0
    assert "status   failed" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if "@" in line[:12]}
    assert rows["deploy@west"][:5] == ["deploy@west", "failed", "1", "2.50s", "3"]
    assert rows["deploy@east"][:5] == ["deploy@east", "succeeded", "1", "2.50s", "0"]
    code, out = _cli("show", "--state-dir", str(state), "--format", "json")  # latest
    data = json.loads(out)
    assert data["run"]["id"] == "20260101T000100-bbbb"
    assert [(i["key"], i["status"], len(i["attempt_list"])) for i in data["instances"]] == [
        ("build", "succeeded", 1), ("deploy@east", "succeeded", 1), ("deploy@west", "succeeded", 1)
    ]  # fmt: skip


def test_unknown_run_or_instance_exits_2(state: Path) -> None:
    code, out = _cli("show", "nosuchrun", "--state-dir", str(state))
    assert code == 2
    assert "run 'nosuchrun' is not on record" in out
    code, out = _cli("logs", "deploy@north", "--state-dir", str(state))
    assert code == 2
    assert "deploy@north is not an instance of run 20260101T000100-bbbb" in out
    code, out = _cli("show", "--state-dir", str(state.parent / "empty"))
    assert code == 2
    assert "no journal" in out


def test_logs_prints_an_attempt(state: Path) -> None:
    code, out = _cli("logs", "deploy@west", "--run", "20260101T000000-aaaa",
                     "--state-dir", str(state))  # fmt: skip
    assert (code, out) == (0, "output of deploy@west\nboom\n")
    code, out = _cli("logs", "build", "--state-dir", str(state), "--format", "json")
    data = json.loads(out)
    assert (data["run"], data["attempt"], data["text"]) == (
        "20260101T000100-bbbb",
        1,
        "output of build\n",
    )


def test_logs_follow_stops_when_the_attempt_ends(tmp_path: Path) -> None:
    state = tmp_path / "st"
    with Journal(state) as j:
        j.begin_run(
            run_id="r", parent_id=None, plan_path="/p", plan_name="p", plan_hash="h",
            plan_snapshot="", mode="dag", kind="apply", options={},
            instances=[NewInstance("t", 0, "t", None)],
        )  # fmt: skip
    log = tmp_path / "t.log"
    log.write_text("line 1\n")
    w = JournalWriter(state / "state.db", "r")
    w.start()
    w(AttemptStarted(at=T0, node=0, key="t", attempt=1, command="c", pid=1, pgid=1,
                     log_path=str(log)))  # fmt: skip
    time.sleep(0.2)

    def finish() -> None:
        time.sleep(0.5)
        with log.open("a") as f:
            f.write("line 2\n")
        w(AttemptEnded(at=T0 + 1, node=0, key="t", attempt=1, started_at=T0, exit_code=0,
                       signal=None, timed_out=False, outcome="succeeded"))  # fmt: skip
        w.close()

    th = threading.Thread(target=finish)
    th.start()
    code, out = _cli("logs", "t", "--follow", "--state-dir", str(state))
    th.join()
    assert (code, out) == (0, "line 1\nline 2\n")


def test_outputs_formats_and_atomic_file(state: Path, tmp_path: Path) -> None:
    run = ["--state-dir", str(state)]
    code, out = _cli("outputs", *run, "--format", "env")
    assert (code, out) == (0, "BUILD_VERSION=1.2.3\nDEPLOY_EAST_URL=https://deploy@east\n")
    code, out = _cli("outputs", *run, "--format", "json")
    assert json.loads(out) == {"build": {"version": "1.2.3"},
                               "deploy@east": {"url": "https://deploy@east"}}  # fmt: skip
    code, out = _cli("outputs", *run)
    assert out.splitlines()[1].split() == ["build", "version", "1.2.3"]
    target = tmp_path / "out" / ".env"
    code, _ = _cli("outputs", *run, "--format", "env", "-o", str(target))
    assert code == 2  # a missing directory is refused, as for --events
    target.parent.mkdir()
    code, _ = _cli("outputs", *run, "--format", "env", "-o", str(target))
    assert code == 0
    assert target.read_text() == "BUILD_VERSION=1.2.3\nDEPLOY_EAST_URL=https://deploy@east\n"
    assert sorted(p.name for p in target.parent.iterdir()) == [".env"]
