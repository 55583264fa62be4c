"""Exit codes of commands with nothing to act on, and of an unusable journal.

docs/exit-codes.md: 1 is for tasks that failed; 2 for bad usage (a run that is
not on record, nothing live to cancel or promote) and for a state directory
that cannot be used, a journal that is not a journal included.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from fleetrun.cli import cli
from fleetrun.state import JournalReader

PLAN = """\
name: quick
targets: {a: {}}
tasks:
  hello: {for_each: all, run: "true"}
"""


def _run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, list(args))
    assert res.exception is None or isinstance(res.exception, SystemExit), res.output
    return res.exit_code, res.output


@pytest.fixture(scope="module")
def ended(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state directory holding one run that ended."""
    d = tmp_path_factory.mktemp("ended")
    (d / "plan.yaml").write_text(PLAN)
    code, out = _run("apply", str(d / "plan.yaml"), "--state-dir", str(d / "st"), "--plain")
    assert code == 0, out
    return d / "st"


@pytest.mark.parametrize("command", ["cancel", "promote"])
def test_no_live_run_is_bad_usage_not_a_failed_task(ended: Path, command: str) -> None:
    code, out = _run(command, "--state-dir", str(ended))
    assert code == 2, out
    assert "no run is live" in out
    assert out.count("\n") == 1, out


@pytest.mark.parametrize("command", ["cancel", "promote"])
def test_a_named_run_that_ended_is_bad_usage(ended: Path, command: str) -> None:
    with JournalReader(ended) as r:
        run_id = r.run().id
    code, out = _run(command, run_id, "--state-dir", str(ended))
    assert code == 2, out
    assert f"run {run_id} is not live: it ended succeeded" in out


def _garbage(d: Path) -> Path:
    d.mkdir()
    (d / "state.db").write_bytes(bytes(range(256)) * 16)
    return d


def _newer(d: Path) -> Path:
    d.mkdir()
    with sqlite3.connect(d / "state.db") as conn:
        conn.execute("PRAGMA user_version=9999")
    return d


@pytest.mark.parametrize("make", [_garbage, _newer])
@pytest.mark.parametrize(
    "command", [["history"], ["show"], ["watch"], ["logs", "hello"], ["cancel"], ["promote"]]
)
def test_an_unusable_journal_is_exit_2_in_one_line(
    tmp_path: Path, make: object, command: list[str]
) -> None:
    state = make(tmp_path / "st")  # type: ignore[operator]
    code, out = _run(*command, "--state-dir", str(state))
    assert code == 2, out
    assert out.count("\n") == 1, out
    assert str(state / "state.db") in out
