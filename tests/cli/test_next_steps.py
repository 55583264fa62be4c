"""After a failure, the summary names what failed and the command to run next."""

from __future__ import annotations

from pathlib import Path

from fleetrun.engine import AttemptEnded, InstanceSettled
from fleetrun.report import FailureNotes, first_error_line, next_steps

from ._helpers import fleetrun

PLAN = """\
name: nxt
targets: {a: {}, b: {}, c: {}}
tasks:
  t:
    for_each: all
    run: >-
      if [ "$FLEETRUN_TARGET" = b ]; then
      echo "fetching"; echo "Error: boom in b"; echo more; exit 3; fi
  u: {for_each: all, needs: [t], run: "true"}
"""


def test_a_failed_run_names_the_failures_and_the_next_commands(tmp_path: Path) -> None:
    plan = tmp_path / "p.yaml"
    plan.write_text(PLAN)
    first = fleetrun("apply", str(plan), "--plain")
    assert first.returncode == 1
    lines = first.stdout.splitlines()
    at = lines.index("failed (1):")
    assert lines[at + 1].split() == ["t@b", "exit", "3", "—", "Error:", "boom", "in", "b"]
    assert lines[at + 2].startswith(f"next: fleetrun retry --plan {plan}")
    assert "re-runs the 2 that did not succeed" in lines[at + 2]
    assert lines[at + 3].strip() == f"fleetrun logs t@b --plan {plan}"

    again = fleetrun("retry", "--plan", str(plan), "--plain")
    assert again.returncode == 1
    assert any(
        line.startswith("2 re-run, 4 reused (from run ") for line in again.stdout.splitlines()
    )


def test_a_successful_run_suggests_nothing(tmp_path: Path) -> None:
    plan = tmp_path / "p.yaml"
    plan.write_text(PLAN.replace("exit 3", "exit 0"))
    done = fleetrun("apply", str(plan), "--plain")
    assert done.returncode == 0
    assert "next:" not in done.stdout
    assert "failed (" not in done.stdout


def test_first_error_line_prefers_an_error_then_the_last_line() -> None:
    assert first_error_line(["fetching", "Error: boom", "more"]) == "Error: boom"
    assert first_error_line(["a", "b", "  "]) == "b"
    assert first_error_line([]) == ""


def test_long_failure_lists_are_cut_to_a_screenful() -> None:
    notes = FailureNotes()
    for i in range(25):
        key = f"t@r{i:02d}"
        notes(
            AttemptEnded(
                at=0,
                node=i,
                key=key,
                attempt=1,
                started_at=0,
                exit_code=1,
                signal=None,
                timed_out=False,
                outcome="failed",
                tail=("x", "fatal: no"),
            )
        )
        notes(InstanceSettled(at=0, node=i, key=key, state="failed", reason="exit 1"))
    lines = next_steps(notes.failures, {"failed": 25}, where=["--plan", "my plan.yaml"])
    assert lines[0] == "failed (25):"
    assert lines[1].split() == ["t@r00", "exit", "1", "—", "fatal:", "no"]
    assert lines[21] == "  and 5 more (fleetrun show --state failed)"
    assert lines[22].startswith("next: fleetrun retry --plan 'my plan.yaml'")
