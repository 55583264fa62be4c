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
