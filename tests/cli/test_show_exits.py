"""``show``'s EXIT column for attempts that ended without an exit code."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from fleetrun.cli import cli


def test_a_retried_failure_without_exit_code_reads_failed_for_every_attempt(
    tmp_path: Path,
) -> None:
    # A connection refused ends the attempt with no exit code; that it was
    # retried is what came after it, not how it ended.
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "targets: {down: {ssh: {host: 127.0.0.1, port: 1, connect_timeout: 5}}}\n"
        "tasks:\n"
        "  pub:\n"
        "    for_each: all\n"
        "    runs_on: ssh\n"
        "    retry: {attempts: 3, backoff: 0}\n"
        "    run: echo hi\n"
    )
    runner = CliRunner()
    applied = runner.invoke(cli, ["apply", str(plan)])
    assert applied.exit_code == 1, applied.output
    shown = runner.invoke(cli, ["show", "--plan", str(plan), "--format", "json"])
    assert shown.exit_code == 0, shown.output
    (inst,) = json.loads(shown.output)["instances"]
    outcomes = [a["outcome"] for a in inst["attempt_list"]]
    assert outcomes == ["retrying", "retrying", "failed"]
    table = runner.invoke(cli, ["show", "--plan", str(plan)])
    row = next(line for line in table.output.splitlines() if line.startswith("pub@down "))
    assert row.split()[1:5] == ["failed", "3", row.split()[3], "failedx3"], row
    assert "retrying" not in row
