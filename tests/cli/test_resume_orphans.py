"""A run that would start an instance whose attempt in a dead run still runs is
refused (exit 3) with the command that ends it first; with ``--kill-orphans``
the attempt is ended, then started again. Never two copies side by side."""

from __future__ import annotations

import json
import signal
import time
import uuid
from pathlib import Path

import pytest

from ._helpers import fleetrun, kill_processes_with_env, live_processes_with_env, show_json, spawn


@pytest.mark.slow  # two fleetrun runs, a refusal and the record: about 6 s
def test_resume_with_a_live_orphan_is_refused_until_it_is_ended(tmp_path: Path) -> None:
    marker = tmp_path / "started-once"
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "targets: {a: {}, b: {}}\n"
        "tasks:\n"
        "  quick: {for_each: all, run: 'true'}\n"
        "  step:\n"
        "    for_each: all\n"
        "    needs: [quick]\n"
        f"    run: if [ -e {marker}-{{{{ target.name }}}} ]; then echo again; "
        f"else touch {marker}-{{{{ target.name }}}}; sleep 60; fi\n"
    )
    state = tmp_path / ".fleetrun"
    tag = uuid.uuid4().hex
    p = spawn("apply", str(plan), "--plain", extra_env={"TEST_TAG": tag})
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(Path(f"{marker}-{t}").exists() for t in "ab"):
            time.sleep(0.05)
        p.send_signal(signal.SIGKILL)  # the two `sleep 60` go on without it
        p.communicate()
        orphans = live_processes_with_env("TEST_TAG", tag)
        assert orphans, "the killed run's steps should still run"

        refused = fleetrun("apply", str(plan), "--resume")
        assert refused.returncode == 3, refused.stdout + refused.stderr
        said = refused.stderr.strip().splitlines()[-1]
        assert "2 attempt(s) of a run that died still run" in said
        assert "step@a (run " in said
        assert "step@b (run " in said
        assert f"fleetrun apply --resume --kill-orphans {plan}" in said
        # Nothing was started beside them and no run was recorded.
        assert sorted(live_processes_with_env("TEST_TAG", tag)) == sorted(orphans)
        runs = json.loads(fleetrun("history", "--plan", str(plan), "--format", "json").stdout)
        assert len(runs) == 1

        ended = fleetrun("apply", str(plan), "--resume", "--kill-orphans", "--grace", "1")
        assert ended.returncode == 0, ended.stdout + ended.stderr
        assert "ended 2 orphaned process group(s)" in ended.stdout
        assert live_processes_with_env("TEST_TAG", tag) == []
        resumed = show_json(state)
        assert {i["key"]: i["status"] for i in resumed["instances"]} == {
            "quick@a": "reused",
            "quick@b": "reused",
            "step@a": "succeeded",
            "step@b": "succeeded",
        }
    finally:
        kill_processes_with_env("TEST_TAG", tag)
        if p.poll() is None:
            p.kill()
            p.communicate()


@pytest.mark.slow  # two fleetrun runs, a refusal and the record: about 6 s
def test_processes_that_left_the_dead_runs_groups_are_seen_and_ended(tmp_path: Path) -> None:
    # Each attempt leaves its process group (setsid) with a shell and two sleeps.
    marker = tmp_path / "started-once"
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "targets: {a: {}, b: {}}\n"
        "tasks:\n"
        "  step:\n"
        "    for_each: all\n"
        f"    run: if [ -e {marker}-{{{{ target.name }}}} ]; then echo again; "
        f"else touch {marker}-{{{{ target.name }}}}; "
        "setsid sh -c 'sleep 300 & sleep 303' & sleep 304; fi\n"
    )
    tag = uuid.uuid4().hex
    p = spawn("apply", str(plan), "--plain", extra_env={"TEST_TAG": tag})
    try:
        # Per target: the task's shell and `sleep 304` in its group; the setsid
        # shell, `sleep 300` and `sleep 303` outside it.
        def tasks() -> list[int]:
            return [pid for pid in live_processes_with_env("TEST_TAG", tag) if pid != p.pid]

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(tasks()) < 10:
            time.sleep(0.05)
        assert len(tasks()) == 10
        p.send_signal(signal.SIGKILL)
        p.communicate()

        refused = fleetrun("apply", str(plan), "--resume")
        assert refused.returncode == 3, refused.stdout + refused.stderr
        said = refused.stdout + refused.stderr
        assert "2 attempt(s) of a run that died still run" in said
        orphan_lines = [line for line in said.splitlines() if line.startswith("orphan: step@")]
        assert len(orphan_lines) == 2, said
        for line in orphan_lines:
            assert len(line.split("outside it: pids ")[1].split()) == 3, line
        assert len(live_processes_with_env("TEST_TAG", tag)) == 10

        ended = fleetrun("apply", str(plan), "--resume", "--kill-orphans", "--grace", "1")
        assert ended.returncode == 0, ended.stdout + ended.stderr
        assert "ended 2 orphaned process group(s) and 6 process(es) that left them" in ended.stdout
        assert live_processes_with_env("TEST_TAG", tag) == []
    finally:
        kill_processes_with_env("TEST_TAG", tag)
        if p.poll() is None:
            p.kill()
            p.communicate()
