"""The read commands on a journal they may not write: a read-only state directory.

``history``, ``show``, ``logs``, ``outputs`` and ``report`` read through
``JournalReader``: they work where the directory and its files are read-only,
show a run whose process died as interrupted without recording it, and leave
every byte and every modification time of the state directory as it was. Root
ignores permission bits, so the commands also run as user ``nobody``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fleetrun.cli import cli
from fleetrun.state import Journal, NewInstance

from ._helpers import fleetrun

NOBODY = 65534

PLAN = """\
name: read-only
targets:
  a: {}
  b: {}
tasks:
  build:
    run: echo built; echo version=1.2 >> "$FLEETRUN_OUTPUT"
  deploy:
    for_each: all
    needs: [build]
    run: echo deploying {{ target.name }}; test {{ target.name }} != b
"""


def _tree(d: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file under ``d``: bytes, mtime (ns), mode; directories by mtime and mode."""
    out: dict[str, tuple[bytes, int, int]] = {}
    for p in sorted([d, *d.rglob("*")]):
        st = p.stat()
        out[str(p.relative_to(d))] = (
            b"" if p.is_dir() else p.read_bytes(),
            st.st_mtime_ns,
            st.st_mode,
        )
    return out


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


class Frozen:
    """A recorded state directory made read-only: the runs on it and its files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.plan = root / "plan.yaml"
        self.state = root / "state"


@pytest.fixture(scope="module")
def frozen() -> Iterator[Frozen]:
    root = Path(tempfile.mkdtemp(prefix="fleetrun-ro-"))
    root.chmod(0o755)  # nobody must be able to enter it
    f = Frozen(root)
    f.plan.write_text(PLAN)
    res = fleetrun("apply", str(f.plan), "--state-dir", str(f.state), "--plain")
    assert res.returncode == 1, res.stdout + res.stderr  # deploy@b fails
    # A second run whose process died while deploy@a was running.
    with Journal(f.state) as j:
        j.begin_run(
            run_id="20990101T000000-dead", parent_id=None, plan_path=str(f.plan),
            plan_name="read-only", plan_hash="h", plan_snapshot=PLAN, mode="dag",
            kind="apply", options={}, started_at=4_000_000_000.0,
            instances=[NewInstance("build", 0, "build", None),
                       NewInstance("deploy@a", 1, "deploy", "a")],
        )  # fmt: skip
        j.conn.execute(
            "UPDATE runs SET pid=?, pid_start=NULL WHERE id='20990101T000000-dead'",
            (_dead_pid(),),
        )
        j.conn.execute(
            "UPDATE instances SET status='running', started_at=4000000001"
            " WHERE run_id='20990101T000000-dead' AND key='build'"
        )
    for p in sorted(f.state.rglob("*"), reverse=True):
        p.chmod(0o555 if p.is_dir() else 0o444)
    f.state.chmod(0o555)
    try:
        yield f
    finally:
        for p in [f.state, *f.state.rglob("*")]:
            if p.is_dir():
                p.chmod(0o755)
        shutil.rmtree(root)


def _commands(f: Frozen) -> dict[str, list[str]]:
    s = ["--state-dir", str(f.state)]
    return {
        "history": ["history", *s],
        "history-json": ["history", *s, "--format", "json"],
        "show": ["show", *s, "--plan", str(f.plan)],
        "show-dead": ["show", "20990101T000000-dead", *s],
        "show-apply-json": ["show", *s, "--format", "json", _apply_id(f)],
        "logs": ["logs", "deploy@a", "--run", _apply_id(f), *s],
        "logs-json": ["logs", "deploy@b", "--run", _apply_id(f), *s, "--format", "json"],
        "outputs": ["outputs", _apply_id(f), *s, "--format", "env"],
        "report": ["report", _apply_id(f), *s, "--format", "json"],
        "report-dead": ["report", "20990101T000000-dead", *s],
    }


def _apply_id(f: Frozen) -> str:
    conn = sqlite3.connect(f"file:{f.state / 'state.db'}?immutable=1", uri=True)
    try:
        (run_id,) = conn.execute("SELECT id FROM runs WHERE kind='apply' AND pid_start IS NOT NULL"
                                 " ORDER BY started_at LIMIT 1").fetchone()  # fmt: skip
    finally:
        conn.close()
    return str(run_id)


def _invoke_all(commands: dict[str, list[str]]) -> dict[str, Any]:
    runner = CliRunner()
    out = {}
    for name, args in commands.items():
        res = runner.invoke(cli, args)
        out[name] = [res.exit_code, res.output]
    return out


def _check(f: Frozen, got: dict[str, Any]) -> None:
    for name, (code, text) in got.items():
        assert code == 0, (name, text)
    apply_id = _apply_id(f)
    history = {line.split()[0]: line.split() for line in got["history"][1].splitlines()[1:]}
    assert history[apply_id][2:4] == ["apply", "failed"]
    assert history["20990101T000000-dead"][2:4] == ["apply", "interrupted"]
    assert history["20990101T000000-dead"][-4:] == ["1", "interrupted,", "1", "not_started"]
    assert [r["status"] for r in json.loads(got["history-json"][1])] == ["interrupted", "failed"]
    assert "status   interrupted" in got["show-dead"][1]
    rows = {line.split()[0]: line.split() for line in got["show"][1].splitlines() if "@" in line}
    assert rows["deploy@a"][1] == "not_started"
    data = json.loads(got["show-apply-json"][1])
    assert {i["key"]: i["status"] for i in data["instances"]} == {
        "build": "succeeded", "deploy@a": "succeeded", "deploy@b": "failed",
    }  # fmt: skip
    assert got["logs"][1] == "deploying a\n"
    assert json.loads(got["logs-json"][1])["text"] == "deploying b\n"
    assert got["outputs"][1] == "BUILD_VERSION=1.2\n"
    report = json.loads(got["report"][1])
    assert (report["run_id"], report["status"], report["overall"]["instances"]) == (
        apply_id, "failed", 3,
    )  # fmt: skip
    assert "interrupted" in got["report-dead"][1]


def test_read_commands_work_on_a_read_only_journal_and_change_nothing(frozen: Frozen) -> None:
    before = _tree(frozen.state)
    got = _invoke_all(_commands(frozen))
    _check(frozen, got)
    # Root could have written despite the permission bits: nothing did.
    assert _tree(frozen.state) == before
    conn = sqlite3.connect(f"file:{frozen.state / 'state.db'}?immutable=1", uri=True)
    status = conn.execute("SELECT status FROM runs WHERE id='20990101T000000-dead'").fetchone()
    conn.close()
    assert status == ("running",)  # shown as interrupted, never recorded so


def as_nobody(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` in a forked child running as user ``nobody``; its JSON result.

    A fork, not a new interpreter: nobody may not be allowed to run this Python."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            out = json.dumps({"ok": fn(*args)})
        except BaseException:
            out = json.dumps({"error": traceback.format_exc()})
            code = 1
        with os.fdopen(write_fd, "w") as w:
            w.write(out)
        os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd) as r:
        got = json.loads(r.read() or '{"error": "the child wrote nothing"}')
    os.waitpid(pid, 0)
    if "error" in got:
        raise AssertionError(got["error"])
    return got["ok"]


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to switch to user nobody")
def test_read_commands_as_a_user_who_cannot_write(frozen: Frozen) -> None:
    before = _tree(frozen.state)
    commands = _commands(frozen)
    # Every module the commands use is imported first, as root (the same
    # commands on another journal): nobody may not read this Python's library.
    with tempfile.TemporaryDirectory() as d:
        warm = Path(d, "state")
        shutil.copytree(frozen.state, warm)
        _invoke_all({k: [str(warm) if a == str(frozen.state) else a for a in v]
                     for k, v in commands.items()})  # fmt: skip
    got = as_nobody(_invoke_all, commands)
    _check(frozen, got)
    assert _tree(frozen.state) == before
