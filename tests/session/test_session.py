"""The session in two steps: ``prepare`` (load, lock, recover, plan) and ``execute``
(orphans, the engine, the record, in one event loop). Real plans, real
processes, a real journal."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, get_args

import click
import pytest
from cli._helpers import live_processes_with_env, spawn

from fleetrun.cli._apply_cmd import apply
from fleetrun.cli._main import EXIT_FAILED, EXIT_OK, outcome_exit_code
from fleetrun.engine import (
    Event,
    FailFast,
    Mode,
    OutputMode,
    RunResult,
    RunStarted,
    Subscriber,
)
from fleetrun.errors import RunLockedError, UsageError
from fleetrun.session import (
    Notice,
    PreparedRun,
    Report,
    RunOutcome,
    RunRequest,
    RunSetup,
    Session,
)
from fleetrun.state import Journal

PLAN = """\
name: small
targets: {a: {}, b: {}}
tasks:
  first: {for_each: all, run: "echo first {{ target.name }}"}
  second:
    for_each: all
    needs: [first]
    run: 'if [ -n "$SLOW" ]; then sleep 30; fi; echo second'
"""


def _plan(tmp_path: Path) -> Path:
    p = tmp_path / "plan.yaml"
    p.write_text(PLAN)
    return p


class _Recorder:
    """A console that records what happened to it, in order."""

    def __init__(self, setup: RunSetup, log: list[str], failed: bool | None = None) -> None:
        self.setup = setup
        self.log = log
        self.failed = failed
        self.subscribers: tuple[Subscriber, ...] = (self._event,)

    def _event(self, ev: Event) -> None:
        if isinstance(ev, RunStarted):
            self.log.append("event")

    def start(self) -> None:
        self.log.append("start")

    def stop(self) -> None:
        self.log.append("stop")

    def report(self, result: RunResult) -> Report:
        self.log.append("report")
        return Report(f"{len(result.states)} instances\n", failed=self.failed)


def _runs(state: Path) -> list[str]:
    with Journal(state) as j:
        return [r.id for r in j.runs()]


def test_prepare_holds_the_lock_and_records_nothing_until_execute(tmp_path: Path) -> None:
    plan, state = _plan(tmp_path), tmp_path / "st"
    notices: list[Notice] = []
    req = RunRequest(kind="apply", plan=str(plan), state_dir=str(state))
    session = Session(handle_signals=False)
    prepared = session.prepare(req, notify=notices.append)
    assert isinstance(prepared, PreparedRun)
    with pytest.raises(dataclasses.FrozenInstanceError):
        prepared.request = req  # type: ignore[misc]
    with pytest.raises(RunLockedError):
        session.prepare(req, notify=notices.append)
    assert _runs(state) == []
    assert notices == []  # nothing to say before the run starts

    log: list[str] = []
    outcome = session.execute(prepared, notify=notices.append, console=lambda s: _Recorder(s, log))
    assert outcome.status == "succeeded"
    assert log == ["start", "event", "stop", "report"]
    assert outcome.report == Report("4 instances\n")
    assert [n.kind for n in notices] == ["start"]
    assert _runs(state) == [prepared.work.setup.run_id]  # type: ignore[union-attr]

    again = session.prepare(req, notify=notices.append)  # the lock is free again
    assert isinstance(again, PreparedRun)
    again.close()


def test_an_apply_dry_run_takes_no_lock_and_leaves_no_state(tmp_path: Path) -> None:
    plan, state = _plan(tmp_path), tmp_path / "st"
    req = RunRequest(kind="apply", plan=str(plan), state_dir=str(state), dry_run=True)
    outcome = Session(handle_signals=False).prepare(req, notify=lambda n: None)
    assert isinstance(outcome, RunOutcome)
    assert outcome.status == "dry_run"
    assert [line.split(":")[0] for line in outcome.lines] == [
        "first@a", "first@b", "second@a", "second@b",
    ]  # fmt: skip
    assert not state.exists()


def test_a_console_that_cannot_open_leaves_no_run_and_frees_the_lock(tmp_path: Path) -> None:
    plan, state = _plan(tmp_path), tmp_path / "st"
    req = RunRequest(kind="apply", plan=str(plan), state_dir=str(state))
    session = Session(handle_signals=False)

    def broken(setup: RunSetup) -> _Recorder:
        raise UsageError("--events: cannot open")

    with pytest.raises(UsageError):
        session.run(req, notify=lambda n: None, console=broken)
    assert _runs(state) == []
    again = session.prepare(req, notify=lambda n: None)
    assert isinstance(again, PreparedRun)
    again.close()


def test_the_console_report_decides_the_exit_code(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    req = RunRequest(kind="apply", plan=str(plan), state_dir=str(tmp_path / "st"))
    log: list[str] = []
    outcome = Session(handle_signals=False).run(
        req, notify=lambda n: None, console=lambda s: _Recorder(s, log, failed=True)
    )
    assert outcome.status == "succeeded"
    assert outcome.failed
    assert outcome_exit_code(outcome) == EXIT_FAILED
    assert outcome_exit_code(RunOutcome("succeeded")) == EXIT_OK
    assert outcome_exit_code(RunOutcome("nothing")) == EXIT_OK


def _wait_for(pred: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def _attempts(state: Path) -> int:
    if not (state / "state.db").exists():
        return 0
    with Journal(state) as j:
        row = j.conn.execute("SELECT count(*) FROM attempts WHERE key LIKE 'second@%'")
        n: int = row.fetchone()[0]
    return n


def test_orphans_are_ended_and_the_retry_runs_in_one_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan, state = _plan(tmp_path), tmp_path / "st"
    tag = uuid.uuid4().hex
    p = spawn("apply", str(plan), "--state-dir", str(state),
              extra_env={"SLOW": "1", "TEST_TAG": tag})  # fmt: skip
    try:
        # Both `second` attempts on record, each a shell and its sleep running.
        _wait_for(
            lambda: _attempts(state) == 2 and len(live_processes_with_env("TEST_TAG", tag)) >= 4
        )
        p.send_signal(signal.SIGKILL)  # leaves its lock and both `second` attempts behind
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if p.stdout:
            p.stdout.close()
    assert live_processes_with_env("TEST_TAG", tag) != []

    loops = 0
    real_run = asyncio.run

    def counting_run(coro: Coroutine[Any, Any, Any], **kw: Any) -> Any:
        nonlocal loops
        loops += 1
        return real_run(coro, **kw)

    monkeypatch.setattr(asyncio, "run", counting_run)
    notices: list[Notice] = []
    req = RunRequest(kind="retry", plan=str(plan), state_dir=str(state), kill_orphans=True, grace=1)
    outcome = Session(handle_signals=False).run(req, notify=notices.append)
    assert loops == 1
    assert outcome.status == "succeeded"
    assert outcome.parent_id is not None
    assert live_processes_with_env("TEST_TAG", tag) == []
    kinds = [n.kind for n in notices]
    assert kinds.count("orphan") == 3  # two orphans, then "ended 2 ..."
    assert "ended 2 orphaned process group(s)" in [n.text for n in notices]
    # Orphans are ended before the run starts.
    assert kinds.index("start") > max(i for i, k in enumerate(kinds) if k == "orphan")


def test_the_cli_offers_the_engine_s_choices() -> None:
    params = {p.name: p for p in apply.params}
    for name, values in (("mode", Mode), ("output", OutputMode), ("fail_fast", FailFast)):
        choice = params[name].type
        assert isinstance(choice, click.Choice)
        assert tuple(choice.choices) == get_args(values)


def test_the_plan_snapshot_is_read_as_the_loader_reads_it(tmp_path: Path) -> None:
    """The run's record keeps the plan's text, read again after loading: a plan
    path that has become a FIFO or a device since is a one-line usage error, not
    a read that waits for ever or fills memory."""
    from fleetrun.errors import UsageError
    from fleetrun.session._prepare import _plan_text

    plan = tmp_path / "plan.yaml"
    plan.write_text("name: p\n")
    assert _plan_text(plan) == "name: p\n"
    plan.unlink()
    os.mkfifo(plan)
    with pytest.raises(UsageError, match=r"not a regular file \(it changed since it was read\)"):
        _plan_text(plan)
    with pytest.raises(UsageError, match="character device"):
        _plan_text(Path("/dev/zero"))
