"""``fleetrun report`` on real journals: formats, -o, run selection, errors, secrets."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest
from cli._helpers import kill_processes_with_env, live_processes_with_env, spawn
from click.testing import CliRunner

from fleetrun.cli import cli

from .conftest import CHAIN, Recorded


def _cli(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(cli, ["report", *args])
    return res.exit_code, res.stdout, res.stderr


@pytest.mark.parametrize("fmt", ["table", "markdown", "json", "junit", "html"])
def test_each_format_prints_the_latest_run(demo: Recorded, fmt: str) -> None:
    code, out, err = _cli("--state-dir", str(demo.state), "--format", fmt)
    assert code == 0, err
    if fmt == "json":
        data = json.loads(out)
        assert data["run_id"] == demo.run_id
        assert [c["key"] for c in data["critical_path"]] == list(CHAIN)
    elif fmt == "junit":
        root = ET.fromstring(out)
        assert len(root.findall("./testsuite/testcase")) == 12
    elif fmt == "html":
        assert out.lstrip().lower().startswith("<!doctype html")
        assert demo.run_id in out
    else:
        assert demo.run_id in out
        assert "Sequential vs Parallel" in out
        assert "Critical path" in out


def test_output_file_is_written_and_named(demo: Recorded, tmp_path: Path) -> None:
    target = tmp_path / "out" / "report.json"
    target.parent.mkdir()  # -o never creates directories (as --events)
    code, out, err = _cli(demo.run_id[:18], "--state-dir", str(demo.state),
                          "--format", "json", "-o", str(target))  # fmt: skip
    assert code == 0, err
    assert out == f"wrote the json report of run {demo.run_id} to {target}\n"
    assert json.loads(target.read_text())["run_id"] == demo.run_id
    code, printed, _ = _cli(demo.run_id, "--state-dir", str(demo.state), "--format", "json")
    assert printed == target.read_text()


def test_unknown_run_and_missing_state_dir_exit_2(demo: Recorded, tmp_path: Path) -> None:
    code, out, err = _cli("nosuchrun", "--state-dir", str(demo.state))
    assert code == 2
    assert out == ""
    assert "run 'nosuchrun' is not on record" in err
    assert "`fleetrun history`" in err
    code, out, err = _cli("--state-dir", str(tmp_path / "nothing-here"))
    assert code == 2
    assert out == ""
    assert err.startswith("error: no journal in")
    assert "no run has been recorded" in err
    assert "Traceback" not in err


def test_retry_run_report(retried: tuple[Recorded, Recorded]) -> None:
    first, second = retried
    code, out, err = _cli("--state-dir", str(second.state))  # latest: the retry
    assert code == 0, err
    assert f"run      {second.run_id} (retry of {first.run_id})" in out
    code, out, err = _cli("--state-dir", str(second.state), "--format", "json")
    data = json.loads(out)
    states = [i["state"] for i in data["instances"]]
    assert states.count("reused") == 10
    assert all(
        i["task_time"] == 0 and i["attempts"] == 0
        for i in data["instances"]
        if i["state"] == "reused"
    )
    code, out, err = _cli(first.run_id, "--state-dir", str(first.state), "--format", "json")
    assert json.loads(out)["overall"]["counts"] == {"succeeded": 10, "failed": 1, "skipped": 1}


def test_plan_changed_or_deleted_after_the_run(make_run: Callable[..., Recorded]) -> None:
    rec = make_run()
    rec.plan.write_text(rec.plan.read_text().replace("sleep 0.25", "sleep 0.5"))
    code, out, err = _cli("--state-dir", str(rec.state))
    assert code == 0, err
    assert "Notes" in out
    assert "changed since this run" in out
    assert [line.split()[1] for line in out.splitlines() if line[:2] in ("1 ", "2 ", "3 ")] == (
        list(CHAIN)
    )
    rec.plan.unlink()
    for fmt in ("table", "markdown", "json", "junit", "html"):
        code, out, err = _cli("--state-dir", str(rec.state), "--format", fmt)
        assert code == 0, (fmt, err)
        assert "is gone" in out, fmt
    data = json.loads(_cli("--state-dir", str(rec.state), "--format", "json")[1])
    assert [p["name"] for p in data["phases"]] == ["build", "deploy"]  # from the snapshot


def test_no_report_format_contains_a_secret(
    make_run: Callable[..., Recorded], tmp_path: Path
) -> None:
    secret = "hunter2-r3port-s3cr3t"
    text = (
        "name: secretive\n"
        f"# careless: {secret}\n"
        "env_file: .env\n"
        f"vars:\n  pw: {secret}\n"
        "targets:\n  a: {}\n  b: {}\n"
        "tasks:\n"
        "  leak:\n"
        "    for_each: all\n"
        "    retry: {attempts: 2, backoff: 0.01s}\n"
        "    run: echo {{ vars.pw }} $DB_PASSWORD; test {{ target.name }} = a\n"
        "  after:\n"
        "    for_each: all\n"
        "    needs: [leak]\n"
        "    run: echo {{ vars.pw }}\n"
    )
    rec = make_run(text=text, files={".env": f"DB_PASSWORD={secret}\n"}, expect=1)
    for fmt in ("table", "markdown", "json", "junit", "html"):
        target = tmp_path / f"report.{fmt}"
        code, out, err = _cli("--state-dir", str(rec.state), "--format", fmt, "-o", str(target))
        assert code == 0, (fmt, err)
        body = target.read_text()
        assert "leak" in body, fmt
        assert secret not in body + out + err, fmt
    data = json.loads((tmp_path / "report.json").read_text())
    assert {t["task"]: t["retries"] for t in data["tasks"]} == {"leak": 1, "after": 0}
    assert {t["task"]: t["throttled"] for t in data["tasks"]} == {"leak": 0, "after": 0}


def _sleeps(tag: str) -> list[int]:
    """Live ``sleep`` processes started by the run tagged ``tag``."""
    found = []
    for pid in live_processes_with_env("TEST_TAG", tag):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sleep\0"):
                found.append(pid)
        except OSError:
            continue
    return found


def _journaled_attempts(state: Path, like: str) -> int:
    db = state / "state.db"
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return int(
            conn.execute("SELECT count(*) FROM attempts WHERE key LIKE ?", (like,)).fetchone()[0]
        )
    except sqlite3.OperationalError:  # tables not created yet
        return 0
    finally:
        conn.close()


def test_report_of_a_run_whose_fleetrun_was_killed(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "name: killed\ntargets: {a: {}, b: {}}\ntasks:\n"
        "  quick: {for_each: all, run: 'true'}\n"
        "  slow: {for_each: all, needs: [quick], run: sleep 60}\n"
        "  after: {for_each: all, needs: [slow], run: 'true'}\n"
    )
    state, tag = tmp_path / "st", uuid.uuid4().hex
    p = spawn("apply", str(plan), "--state-dir", str(state), extra_env={"TEST_TAG": tag})
    try:
        deadline = time.monotonic() + 30
        # Both slow attempts running and journaled (the journal is written in
        # batches just after the events, so a process can exist a moment
        # before its attempt row does).
        while len(_sleeps(tag)) < 2 or _journaled_attempts(state, "slow@%") < 2:
            assert time.monotonic() < deadline, "the slow tasks never started"
            time.sleep(0.05)
        p.send_signal(signal.SIGKILL)
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if p.stdout:
            p.stdout.close()
        kill_processes_with_env("TEST_TAG", tag)
    code, out, err = _cli("--state-dir", str(state), "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert data["status"] == "interrupted"
    assert data["overall"]["counts"] == {"succeeded": 2, "interrupted": 2, "not_started": 2}
    assert any("2 attempt(s) were running when fleetrun stopped" in n for n in data["notes"])
    # The interrupted attempts end at the run's last trace (the heartbeat), not at 0 s.
    wall = data["ended_at"] - data["started_at"]
    slow = [i for i in data["instances"] if i["task"] == "slow"]
    assert all(0 <= i["task_time"] <= wall for i in slow)
    assert all(a["ended_at"] is not None for a in data["attempts"])
    code, out, err = _cli("--state-dir", str(state), "--format", "junit")
    root = ET.fromstring(out)
    assert (root.get("tests"), root.get("errors"), root.get("failures")) == ("6", "2", "0")
    assert len(root.findall(".//skipped")) == 2
