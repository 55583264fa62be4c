"""``RunLayout``: the one spelling of a run directory, and the journal's reader
finding attempts by it."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetrun.layout import RUN_DIRS, RunLayout, disk_name


def test_every_path_of_a_run_directory(tmp_path: Path) -> None:
    layout = RunLayout.of(tmp_path / ".fleetrun", "r1")
    run = tmp_path / ".fleetrun" / "runs" / "r1"
    assert layout.directory == run
    assert (layout.logs, layout.outputs, layout.vars_file) == (
        run / "logs", run / "outputs", run / "vars.json",
    )  # fmt: skip
    assert [layout.directory / d for d in RUN_DIRS] == [layout.logs, layout.outputs]
    assert layout.log("deploy", "eu-west", 3) == run / "logs" / "deploy" / "eu-west.3.log"
    assert layout.attempt_outputs("deploy", "eu-west", 3) == (
        run / "outputs" / "deploy" / "eu-west.3.outputs"
    )
    # An unfanned task's files are named after the task.
    assert layout.log("build", None, 1) == run / "logs" / "build" / "build.1.log"


def test_the_per_attempt_strings_are_the_paths(tmp_path: Path) -> None:
    # The engine joins strings per attempt; they name the same files as the Paths.
    layout = RunLayout(tmp_path.absolute())
    logs, outs = layout.task_logs("a/b"), layout.task_outputs("a/b")
    stem = RunLayout.stem("a/b", "../x")
    assert Path(RunLayout.log_file(logs, stem, 2)) == layout.log("a/b", "../x", 2)
    assert Path(RunLayout.outputs_file(outs, stem, 2)) == layout.attempt_outputs("a/b", "../x", 2)
    # Names never leave their folder.
    assert Path(logs).parent == layout.logs
    assert Path(logs).name == disk_name("a/b") != "a_b"
    assert Path(logs).name.startswith("a_b~")
    assert stem == disk_name("../x")
    assert "/" not in stem


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("eu.3.log", ("eu", 3)),
        ("a.b.12.log", ("a.b", 12)),
        ("eu.3.outputs", None),
        ("eu.log", None),
        ("eu.x.log", None),
        ("notes.txt", None),
    ],
)
def test_log_names_read_back(name: str, parsed: tuple[str, int] | None) -> None:
    assert RunLayout.parse_log_name(name) == parsed
    if parsed is not None:
        assert Path(RunLayout.log_file("d", *parsed)).name == name
