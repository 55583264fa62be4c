"""``show --state`` filters; ``logs`` finds an instance in earlier runs and suggests
close matches for a wrong name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ._helpers import fleetrun

PLAN = """\
name: find
targets: {alpha: {}, beta: {}, gamma: {}}
tasks:
  t:
    for_each: all
    run: 'echo "log of $FLEETRUN_TARGET"; test "$FLEETRUN_TARGET" != beta'
  u: {for_each: all, needs: [t], run: "true"}
  solo: {run: "echo solo ran"}
"""


@pytest.mark.slow
def test_show_state_logs_earlier_runs_and_close_matches(tmp_path: Path) -> None:
    plan = tmp_path / "p.yaml"
    plan.write_text(PLAN)
    assert fleetrun("apply", str(plan), "--plain").returncode == 1
    shown = fleetrun("show", "--plan", str(plan), "--state", "failed,skipped", "--format", "json")
    assert shown.returncode == 0, shown.stderr
    states = {i["key"]: i["status"] for i in json.loads(shown.stdout)["instances"]}
    assert states == {"t@beta": "failed", "u@beta": "skipped"}
    bad = fleetrun("show", "--plan", str(plan), "--state", "faild")
    assert bad.returncode == 2
    assert "did you mean 'failed'" in bad.stderr

    # A later run of other instances: `logs solo` still finds it in the first run.
    assert (
        fleetrun("apply", str(plan), "--plain", "--targets", "alpha", "--tasks", "t").returncode
        == 0
    )
    found = fleetrun("logs", "solo", "--plan", str(plan))
    assert found.returncode == 0, found.stderr
    assert found.stdout == "solo ran\n"
    assert "solo last ran in run " in found.stderr

    wrong = fleetrun("logs", "t@alpah", "--plan", str(plan))
    assert wrong.returncode == 2
    assert "close matches: t@alpha" in wrong.stderr
    assert "instances of t: t@alpha" in wrong.stderr
    assert "Traceback" not in wrong.stderr

    beyond = fleetrun("logs", "t@alpha", "--attempt", "3", "--plan", str(plan))
    assert beyond.returncode == 2
    assert "t@alpha has no attempt 3 in run " in beyond.stderr
    assert "its only attempt is 1" in beyond.stderr
