"""``fleetrun apply`` as a real subprocess: exit codes, dry run, Ctrl-C, the run lock."""

from __future__ import annotations

import json
import signal
import socket
import time
import uuid
from pathlib import Path

from fleetrun.state import Journal

from ._helpers import fleetrun, live_processes_with_env, show_json, spawn

PLAN = """\
name: small
targets:
  a: {}
  b: {}
tasks:
  first:
    for_each: all
    run: echo first {{ target.name }} && echo out=v-{{ target.name }} >> "$FLEETRUN_OUTPUT"
  second:
    for_each: all
    needs: [first]
    run: >-
      if [ -n "$SLOW" ]; then sleep 30 & sleep 30; wait; fi;
      echo second {{ tasks.first.outputs.out }};
      test "$FAIL" != {{ target.name }}
"""


def _plan(tmp_path: Path, text: str = PLAN) -> Path:
    p = tmp_path / "plan.yaml"
    p.write_text(text)
    return p


def _wait_for(pred: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_apply_succeeds_and_records_everything(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    res = fleetrun("apply", str(plan), "-j", "2")
    assert res.returncode == 0, res.stdout + res.stderr
    state = tmp_path / ".fleetrun"  # beside the plan by default
    data = show_json(state)
    assert {i["key"]: i["status"] for i in data["instances"]} == {
        "first@a": "succeeded", "first@b": "succeeded",
        "second@a": "succeeded", "second@b": "succeeded",
    }  # fmt: skip
    run_id = data["run"]["id"]
    assert data["run"]["options"]["parallelism"] == 2
    assert (state / "runs" / run_id / "logs").is_dir()
    logs = fleetrun("logs", "second@b", "--plan", str(plan))
    assert logs.stdout == "second v-b\n"
    out = fleetrun("outputs", "--plan", str(plan), "--format", "env")
    assert out.stdout == "FIRST_A_OUT=v-a\nFIRST_B_OUT=v-b\n"
    snapshot = state / "state.db"
    assert snapshot.is_file()


def test_failure_exits_1_and_retry_runs_only_that(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    state = tmp_path / "st"
    res = fleetrun("apply", str(plan), "--state-dir", str(state), extra_env={"FAIL": "b"})
    assert res.returncode == 1, res.stdout + res.stderr
    first = show_json(state)
    assert [(i["key"], i["status"]) for i in first["instances"] if i["status"] != "succeeded"] == [
        ("second@b", "failed")
    ]
    res = fleetrun("retry", "--state-dir", str(state))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "re-run second@b: failed" in res.stdout
    second = show_json(state)
    assert second["run"]["parent_id"] == first["run"]["id"]
    assert {i["key"]: i["status"] for i in second["instances"]} == {
        "first@a": "reused", "first@b": "reused", "second@a": "reused", "second@b": "succeeded",
    }  # fmt: skip
    # The reused output reached the re-run command.
    assert fleetrun("logs", "second@b", "--state-dir", str(state)).stdout == "second v-b\n"
    # An instance the retry reused shows the log of the run that ran it.
    assert fleetrun("logs", "first@a", "--state-dir", str(state)).stdout == "first a\n"
    again = fleetrun("retry", "--state-dir", str(state))
    assert again.returncode == 0
    assert "nothing to retry" in again.stdout


def test_bad_plan_and_bad_usage_exit_2(tmp_path: Path) -> None:
    bad = _plan(tmp_path, "name: x\ntasks:\n  t: {run: [oops\n")
    res = fleetrun("apply", str(bad))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert not (tmp_path / ".fleetrun").exists()
    plan = _plan(tmp_path)
    res = fleetrun("apply", str(plan), "--targets", "aa")
    assert res.returncode == 2
    assert "did you mean" in res.stderr.lower()
    res = fleetrun("apply", str(plan), "--mode", "fastest")
    assert res.returncode == 2
    res = fleetrun("retry", "--state-dir", str(tmp_path / "none"))
    assert res.returncode == 2
    assert "no journal" in res.stderr


def test_dry_run_prints_start_order_and_runs_nothing(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    res = fleetrun("apply", str(plan), "--dry-run", "--targets", "b")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["first@b", "second@b"]
    assert "echo second '<first.outputs.out>'" in lines[1]
    assert not (tmp_path / ".fleetrun").exists()


def test_sigint_exits_130_and_leaves_no_process(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    tag = uuid.uuid4().hex
    p = spawn("apply", str(plan), "--grace", "1", extra_env={"SLOW": "1", "TEST_TAG": tag})
    try:
        # Both `second` instances run, each a shell with two sleeps.
        _wait_for(lambda: len(live_processes_with_env("TEST_TAG", tag)) >= 7)
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130, out
    assert live_processes_with_env("TEST_TAG", tag) == []
    data = show_json(tmp_path / ".fleetrun")
    assert data["run"]["status"] == "interrupted"
    assert {i["key"]: i["status"] for i in data["instances"]}["second@a"] == "cancelled"


def test_concurrent_apply_is_refused_and_a_dead_lock_taken_over(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    state = tmp_path / "st"
    tag = uuid.uuid4().hex
    p = spawn("apply", str(plan), "--state-dir", str(state),
              extra_env={"SLOW": "1", "TEST_TAG": tag})  # fmt: skip
    try:
        _wait_for(lambda: len(live_processes_with_env("TEST_TAG", tag)) >= 7)
        res = fleetrun("apply", str(plan), "--state-dir", str(state))
        assert res.returncode == 1
        assert f"pid {p.pid} on {socket.gethostname()}" in res.stderr
        p.send_signal(signal.SIGKILL)  # leaves its lock file and its children behind
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if p.stdout:
            p.stdout.close()
    assert live_processes_with_env("TEST_TAG", tag) != []  # orphans of the dead run
    res = fleetrun("apply", str(plan), "--state-dir", str(state), "--kill-orphans", "--grace", "1")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "took over the lock of run" in res.stdout
    assert f"(pid {p.pid} on {socket.gethostname()}), which is no longer running" in res.stdout
    assert res.stdout.count("orphan: second@") == 2
    assert "ended 2 orphaned process group(s)" in res.stdout
    assert live_processes_with_env("TEST_TAG", tag) == []
    hist = json.loads(fleetrun("history", "--state-dir", str(state), "--format", "json").stdout)
    assert [r["status"] for r in hist] == ["succeeded", "interrupted"]


def test_secrets_never_reach_the_journal(tmp_path: Path) -> None:
    secret = "hunter2-s3cr3t-value"
    (tmp_path / ".env").write_text(f"DB_PASSWORD={secret}\n")
    plan = _plan(
        tmp_path,
        "name: secretive\n"
        f"# the password is {secret} (a careless comment)\n"
        "env_file: .env\n"
        "vars:\n"
        f"  pw: {secret}\n"
        "tasks:\n"
        "  t:\n"
        '    run: echo {{ vars.pw }} && echo pw=$DB_PASSWORD >> "$FLEETRUN_OUTPUT"\n',
    )
    res = fleetrun("apply", str(plan))
    assert res.returncode == 0, res.stdout + res.stderr
    state = tmp_path / ".fleetrun"
    # The journal, the lock and the logs; the task's own $FLEETRUN_OUTPUT file
    # holds what the task wrote there.
    files = [f for f in state.rglob("*") if f.is_file() and f.suffix != ".outputs"]
    assert len(files) >= 3
    for f in files:
        assert secret.encode() not in f.read_bytes(), f
    with Journal(state) as j:
        run = j.runs()[0]
        snapshot = j.conn.execute("SELECT plan_snapshot FROM runs").fetchone()[0]
    assert run.status == "succeeded"
    assert "the password is *** (a careless comment)" in snapshot
    out = fleetrun("outputs", "--plan", str(plan), "--format", "json")
    assert json.loads(out.stdout) == {"t": {"pw": "***"}}


def test_fail_fast_takes_an_optional_value(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    for flag, policy in ((["--fail-fast"], "stop"), (["--fail-fast=kill"], "kill")):
        state = tmp_path / policy
        # A bare --fail-fast right before the plan does not swallow it.
        res = fleetrun("apply", *flag, str(plan), "--state-dir", str(state), "-j", "1",
                       extra_env={"FAIL": "a"})  # fmt: skip
        assert res.returncode == 1, res.stdout + res.stderr
        data = show_json(state)
        assert data["run"]["options"]["fail_fast"] == policy
        assert {i["key"]: i["status"] for i in data["instances"]}["second@a"] == "failed"


def test_retry_reruns_an_instance_whose_command_changed(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    state = tmp_path / "st"
    assert fleetrun("apply", str(plan), "--state-dir", str(state)).returncode == 0
    first = show_json(state)["run"]["id"]
    plan.write_text(PLAN.replace("echo first {{ target.name }}", "echo FIRST {{ target.name }}"))
    res = fleetrun("retry", "--state-dir", str(state), "--targets", "b")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"note: the plan changed since run {first}" in res.stdout
    assert f"re-run first@b: command changed since run {first}" in res.stdout
    data = show_json(state)
    # first@b changed; second@b consumes its output, so it runs again too. first@a
    # changed as well but --targets b leaves it out: neither run nor reused.
    assert {i["key"]: i["status"] for i in data["instances"]} == {
        "first@b": "succeeded", "second@a": "reused", "second@b": "succeeded",
    }  # fmt: skip
    assert fleetrun("logs", "first@b", "--state-dir", str(state)).stdout.startswith("FIRST b")
