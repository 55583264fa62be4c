"""The end of a run whose process died: its last trace, event or file write."""

from __future__ import annotations

import os
from pathlib import Path

from fleetrun.state import Journal, JournalReader

from .conftest import begin
from .test_recovery import _dead_pid, _own_run


def _dead_run(journal: Journal, last_event: float | None) -> None:
    begin(journal, "dead", ["a@x"])
    _own_run(journal, "dead", _dead_pid(), None)
    c = journal.conn
    c.execute("UPDATE runs SET started_at=1 WHERE id='dead'")
    c.execute("UPDATE instances SET status='running', attempts=1, started_at=5 WHERE key='a@x'")
    if last_event is not None:
        c.execute("INSERT INTO events VALUES ('dead', 1, ?, 'AttemptStarted', '{}')", (last_event,))


def _log(state: Path, mtime: float) -> None:
    log = state / "runs" / "dead" / "logs" / "a" / "x.1.log"
    log.parent.mkdir(parents=True)
    log.write_text("working\n")
    for d in (log.parent, log.parent.parent, log.parent.parent.parent):
        os.utime(d, (2, 2))
    os.utime(log, (mtime, mtime))


def test_a_log_written_after_the_last_event_ends_the_run(journal: Journal) -> None:
    _dead_run(journal, 7.5)
    _log(journal.state_dir, 9.25)
    with JournalReader(journal.state_dir) as r:
        run = r.run("dead")
        (inst,) = r.instances("dead")
    assert (run.status, run.ended_at, run.computed) == ("interrupted", 9.25, True)
    assert (inst.status, inst.ended_at) == ("interrupted", 9.25)
    assert journal.recover() == ["dead"]
    run = journal.run("dead")
    assert (run.status, run.ended_at, run.computed) == ("interrupted", 9.25, False)
    assert journal.instances("dead")[0].ended_at == 9.25


def test_the_last_event_counts_when_it_is_later(journal: Journal) -> None:
    _dead_run(journal, 7.5)
    _log(journal.state_dir, 6.0)
    assert journal.recover() == ["dead"]
    assert journal.run("dead").ended_at == 7.5


def test_without_any_trace_the_run_ends_where_it_started(journal: Journal) -> None:
    _dead_run(journal, None)
    with JournalReader(journal.state_dir) as r:
        assert r.run("dead").ended_at == 1
    assert journal.recover() == ["dead"]
    assert journal.run("dead").ended_at == 1
