"""Telling runs apart: ``history`` shows each run's plan file, kind (apply, retry,
resume, exec), variables (secret ones masked) and what a retry retried; every read
command finds ``fleetrun exec`` runs as ``retry --plan`` does; a retry says which
run it continues and with which variables. A live run: ``show`` says how long its
running instances have run, and ``apply --resume`` is refused as ``apply`` is."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from fleetrun.cli import cli
from fleetrun.errors import RunNotFoundError
from fleetrun.state import JournalReader

from ._helpers import env, fleetrun, spawn

# One plan driven by --var action=...; an action fails while fail-<action> exists.
PLAN = """\
name: services
vars:
  action: status
  api_token: unset-token
targets:
  a: {}
  b: {}
tasks:
  svc:
    for_each: all
    run: test ! -e fail-{{ vars.action }} && echo "{{ vars.action }} on {{ target.name }}"
"""

SECRET = "s3cr3t-token-value"


def _cli(*args: str) -> str:
    res = CliRunner().invoke(cli, list(args))
    assert res.exit_code == 0, res.output
    return res.output


def _in(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``fleetrun ARGS`` run in ``folder`` (its ``.fleetrun`` is the state directory)."""
    return subprocess.run(
        [sys.executable, "-m", "fleetrun", *args],
        cwd=folder, env=env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _started(state: Path) -> bool:
    """Whether the latest run on record has started an attempt."""
    try:
        with JournalReader(state) as j:
            runs = j.runs()
            return bool(runs and j.attempts(runs[0].id))
    except RunNotFoundError:  # no journal yet
        return False


def _ids(state: Path) -> list[str]:
    with JournalReader(state) as j:
        return [r.id for r in j.runs()][::-1]


def test_history_tells_runs_of_one_plan_apart_and_a_bare_retry_says_which(
    tmp_path: Path,
) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)
    state = tmp_path / ".fleetrun"
    p = str(plan)
    start = fleetrun("apply", p, "--var", "action=start", "--var", f"api_token={SECRET}")
    assert start.returncode == 0, start.stdout + start.stderr
    assert fleetrun("exec", p, "--runs-on", "local", "--", "true").returncode == 0
    (tmp_path / "fail-stop").touch()
    assert fleetrun("apply", p, "--var", "action=stop").returncode == 1
    (tmp_path / "fail-stop").unlink()
    # A bare retry (the state directory of the current folder) says which run
    # it retries and with which variables.
    retry = _in(tmp_path, "retry", "--plain")
    assert retry.returncode == 0, retry.stdout + retry.stderr
    r_start, r_exec, r_stop, r_retry = _ids(state)
    assert (
        f"run {r_retry} (retry of {r_stop}, an apply of plan.yaml that failed, "
        "with action=stop): 2 instance(s) to run"
    ) in retry.stdout

    out = _cli("history", "--state-dir", str(state))
    assert SECRET not in out
    head, *lines = out.splitlines()[:5]
    assert head.split() == [
        "RUN", "PARENT", "KIND", "STATUS", "PLAN", "VARS", "STARTED", "DURATION", "INSTANCES",
    ]  # fmt: skip
    rows = {line.split()[0]: line for line in lines}
    assert rows[r_retry].split()[1:6] == [r_stop, "retry", "succeeded", "plan.yaml", "action=stop"]
    assert rows[r_stop].split()[1:6] == ["-", "apply", "failed", "plan.yaml", "action=stop"]
    assert rows[r_exec].split()[1:6] == ["-", "exec", "succeeded", "plan.yaml", "-"]
    assert rows[r_start].split()[1:7] == [
        "-", "apply", "succeeded", "plan.yaml", "action=start", "api_token=***",
    ]  # fmt: skip
    # --plan lists the plan's exec runs too.
    listed = json.loads(_cli("history", "--plan", p, "--format", "json"))
    assert [r["id"] for r in listed] == [r_retry, r_stop, r_exec, r_start]


def test_every_read_command_finds_exec_runs_as_retry_does(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("web-1: {}\nweb-2: {}\n")
    res = fleetrun(
        "exec", str(fleet), "--runs-on", "local", "--", "echo", "up on {{ target.name }}"
    )
    assert res.returncode == 0, res.stdout + res.stderr
    (run,) = _ids(tmp_path / ".fleetrun")
    f = str(fleet)
    hist = _cli("history", "--plan", f).splitlines()
    assert hist[1].split()[:5] == [run, "-", "exec", "succeeded", "fleet.yaml"]
    assert _cli("show", "--plan", f).startswith(f"run      {run}\n")
    assert _cli("logs", "exec@web-2", "--plan", f) == "up on web-2\n"
    assert _cli("outputs", "--plan", f) == "no outputs\n"
    assert f"- run      {run} " in _cli("report", "--plan", f, "--format", "markdown")
    # retry --plan FILE picks the same run.
    again = fleetrun("retry", "--plan", f)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"nothing to retry: everything in run {run} succeeded" in again.stdout


def test_a_live_run_shows_how_long_it_has_run_and_refuses_resume_with_exit_3(
    tmp_path: Path,
) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("name: live\ntasks:\n  wait: {run: sleep 60}\n")
    state = tmp_path / ".fleetrun"
    p = spawn("apply", str(plan), "--plain", "--grace", "0.5")
    try:
        deadline = time.monotonic() + 60
        while True:
            assert p.poll() is None, p.communicate()[0]
            assert time.monotonic() < deadline, "the run never started its task"
            if _started(state):
                break
            time.sleep(0.05)
        shown = _cli("show", "--state-dir", str(state), "--state", "running")
        (row,) = [line.split() for line in shown.splitlines() if line.startswith("wait ")]
        assert row[:3] == ["wait", "running", "1"]
        assert row[3].endswith("s+"), shown  # how long so far, not "-"
        resumed = fleetrun("apply", str(plan), "--resume")
        assert resumed.returncode == 3, resumed.stdout + resumed.stderr
        assert "is live" in resumed.stderr
        assert "Traceback" not in resumed.stderr
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
        p.communicate(timeout=60)
    assert p.returncode == 130
