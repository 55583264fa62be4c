"""``apply -q``: only failures and the summary; a run that succeeded says one line."""

from __future__ import annotations

from pathlib import Path

from ._helpers import fleetrun

PLAN = """\
name: quiet
targets: {a: {}, b: {}, c: {}}
tasks:
  hello:
    for_each: all
    run: echo hi {{ target.name }}
"""


def test_quiet_success_prints_one_summary_line(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)
    done = fleetrun("apply", str(plan), "-q")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["3 succeeded (of 3)"]
    # The same run without -q says the same counts first among its summary lines.
    loud = fleetrun("apply", str(plan), "--plain")
    assert loud.returncode == 0, loud.stderr
    assert "3 succeeded (of 3)" in loud.stdout.splitlines()
