"""``JournalReader``: typed records, read-only opening, computed recovery, old schemas."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sqlite3
import stat
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fleetrun.cli import cli
from fleetrun.engine import AttemptEnded, AttemptStarted
from fleetrun.errors import RunNotFoundError, StateError
from fleetrun.state import (
    AttemptRecord,
    InstanceRecord,
    Journal,
    JournalReader,
    JournalWriter,
    RunRecord,
)

from .conftest import begin
from .test_recovery import _dead_pid, _own_run

NOBODY = 65534


def _files(d: Path) -> dict[str, tuple[bytes, int]]:
    """Every file in ``d``: its bytes and its mtime (ns)."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(d.iterdir())}


def _dead_run(journal: Journal) -> None:
    """A run whose process died mid-run: a succeeded, b running, c pending."""
    begin(journal, "dead", ["a@x", "b@x", "c@x"])
    _own_run(journal, "dead", _dead_pid(), None)
    c = journal.conn
    c.execute("UPDATE instances SET status='succeeded', ended_at=6 WHERE key='a@x'")
    c.execute("UPDATE instances SET status='running', attempts=1, started_at=5 WHERE key='b@x'")
    c.execute(
        "INSERT INTO attempts (run_id, key, n, started_at, log_path, pid, pgid)"
        " VALUES ('dead','b@x',1,5,'l',1,1)"
    )
    c.execute("INSERT INTO events VALUES ('dead', 1, 7.5, 'AttemptStarted', '{}')")


def test_records_are_typed_and_frozen(journal: Journal) -> None:
    begin(journal, "r1", ["a@x", "b"])
    journal.conn.execute(
        "INSERT INTO attempts (run_id, key, n, started_at, ended_at, exit_code, timed_out,"
        " outcome, log_path, retry_reason, throttled)"
        " VALUES ('r1','a@x',1,1.0,3.5,75,0,'retrying','l1','exit 75',1)"
    )
    with JournalReader(journal.state_dir) as r:
        run = r.run("r1")
        inst = r.instances("r1")
        (att,) = r.attempts("r1")
    assert isinstance(run, RunRecord)
    assert (run.id, run.status, run.options, run.counts, run.computed) == (
        "r1", "running", {"parallelism": None}, {"pending": 2}, False,
    )  # fmt: skip
    assert [type(i) for i in inst] == [InstanceRecord, InstanceRecord]
    assert [(i.key, i.node, i.task, i.target, i.outputs) for i in inst] == [
        ("a@x", 0, "a", "x", {}), ("b", 1, "b", None, {}),
    ]  # fmt: skip
    assert isinstance(att, AttemptRecord)
    assert (att.n, att.exit_code, att.timed_out, att.throttled, att.duration) == (
        1, 75, False, True, 2.5,
    )  # fmt: skip
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.status = "failed"  # type: ignore[misc]


def test_prefixes_and_unknown_runs(journal: Journal) -> None:
    begin(journal, "20260101T000000-aaaa", ["a"])
    begin(journal, "20260101T000100-bbbb", ["a"])
    with JournalReader(journal.state_dir) as r:
        assert r.run("20260101T0001").id == "20260101T000100-bbbb"
        assert r.run().id == "20260101T000100-bbbb"  # the latest
        with pytest.raises(RunNotFoundError, match="is ambiguous"):
            r.run("2026")
        with pytest.raises(RunNotFoundError, match="is not on record"):
            r.run("nope")


def test_reading_never_writes(journal: Journal) -> None:
    begin(journal, "r1", ["a@x"])
    journal.close()
    state = journal.state_dir
    before = _files(state)
    assert set(before) == {"state.db"}  # the last connection removed the WAL
    with JournalReader(state) as r:
        assert [x.id for x in r.runs()] == ["r1"]
        assert r.check() == []
        # The connection itself cannot write.
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            r.conn.execute("UPDATE runs SET status='failed'")
    assert _files(state) == before


def test_a_dead_run_reads_interrupted_and_the_file_is_left_alone(journal: Journal) -> None:
    _dead_run(journal)
    begin(journal, "live", ["a@x"])  # our own pid: alive, left as it is
    db = journal.db_path
    before = db.read_bytes()
    with JournalReader(journal.state_dir) as r:
        run = r.run("dead")
        inst = {i.key: i for i in r.instances("dead")}
        atts = r.attempts("dead")
        live = r.run("live")
    assert (run.status, run.ended_at, run.computed) == ("interrupted", 7.5, True)
    assert run.counts == {"succeeded": 1, "interrupted": 1, "not_started": 1}
    assert {k: i.status for k, i in inst.items()} == {
        "a@x": "succeeded", "b@x": "interrupted", "c@x": "not_started",
    }  # fmt: skip
    assert [a.outcome for a in atts] == ["interrupted"]
    assert (live.status, live.computed) == ("running", False)
    # Nothing was written: the file still says running.
    assert db.read_bytes() == before
    raw = journal.conn.execute("SELECT status FROM runs WHERE id='dead'").fetchone()[0]
    assert raw == "running"
    # What the reader computed is what recovery writes.
    assert journal.recover() == ["dead"]
    assert dataclasses.replace(run, computed=False) == journal.run("dead")
    assert list(inst.values()) == journal.instances("dead")
    assert atts == journal.attempts("dead")


def test_attempts_known_only_by_their_logs_read_as_recovery_records_them(
    journal: Journal,
) -> None:
    # The writer could not commit c@x's first attempt nor b@x's second (a full
    # disk): their log files are all that is left of them.
    _dead_run(journal)
    logs = journal.state_dir / "runs" / "dead" / "logs"
    for task, name in (("c", "x.1.log"), ("b", "x.2.log"), ("c", "unrelated.txt")):
        (logs / task).mkdir(parents=True, exist_ok=True)
        (logs / task / name).write_text("ran\n")
    with JournalReader(journal.state_dir) as r:
        run = r.run("dead")
        inst = {i.key: i for i in r.instances("dead")}
        atts = r.attempts("dead")
        only_c = r.attempts("dead", "c@x")
    assert run.counts == {"succeeded": 1, "interrupted": 2}
    assert (inst["c@x"].status, inst["c@x"].attempts) == ("interrupted", 1)
    assert "could not record" in (inst["c@x"].reason or "")
    assert (inst["b@x"].status, inst["b@x"].attempts) == ("interrupted", 2)
    assert sorted((a.key, a.n, a.outcome) for a in atts) == [
        ("b@x", 1, "interrupted"), ("b@x", 2, "interrupted"), ("c@x", 1, "interrupted"),
    ]  # fmt: skip
    assert [(a.key, a.log_path) for a in only_c] == [("c@x", str(logs / "c" / "x.1.log"))]
    # What the reader showed is what recovery writes.
    assert journal.recover() == ["dead"]
    assert dataclasses.replace(run, computed=False) == journal.run("dead")
    assert list(inst.values()) == journal.instances("dead")
    assert atts == journal.attempts("dead")
    assert journal.check() == []


def test_no_journal_and_newer_schema(tmp_path: Path) -> None:
    with pytest.raises(RunNotFoundError, match="no journal"):
        JournalReader(tmp_path)
    Journal(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "state.db")
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(StateError, match="newer than this fleetrun"):
        JournalReader(tmp_path)


def _v1_journal(state: Path) -> None:
    """A journal as fleetrun wrote it before ``attempts.throttled`` existed."""
    Journal(state).close()
    conn = sqlite3.connect(state / "state.db", isolation_level=None)
    # added by versions 2, 3 and 5
    for column in ("throttled", "executor", "host", "job", "ready_at", "queued_reason"):
        conn.execute(f"ALTER TABLE attempts DROP COLUMN {column}")
    conn.execute("DROP TABLE exact_outputs")  # added by version 4
    conn.execute("ALTER TABLE runs DROP COLUMN alive_at")  # added by version 6
    conn.execute("PRAGMA user_version=1")
    conn.execute(
        "INSERT INTO runs (id, plan_path, plan_name, plan_hash, plan_snapshot, mode, kind,"
        " options, started_at, ended_at, status, user, host, pid)"
        " VALUES ('r1', '/p.yaml', 'p', 'h', '', 'dag', 'apply', '{}', 0, 9, 'succeeded',"
        " 'u', 'h', 1)"
    )
    conn.execute(
        "INSERT INTO instances (run_id, key, node, task, status, attempts) VALUES"
        " ('r1', 'a', 0, 'a', 'succeeded', 3), ('r1', 'b', 1, 'b', 'succeeded', 2)"
    )
    rows = [
        ("a", 1, "retrying", "exit 75"),  # a throttle by the old rule ...
        ("a", 2, "retrying", "output matched '429'"),  # ... and its event says it was not
        ("a", 3, "succeeded", None),
        ("b", 1, "retrying", "timeout"),  # never a throttle
        ("b", 2, "succeeded", None),
    ]
    conn.executemany(
        "INSERT INTO attempts (run_id, key, n, started_at, outcome, retry_reason, log_path)"
        " VALUES ('r1', ?, ?, 0, ?, ?, 'l')",
        rows,
    )
    conn.execute(
        "INSERT INTO events VALUES ('r1', 1, 0, 'AttemptEnded', ?)",
        (json.dumps({"key": "a", "attempt": 2, "throttled": False}),),
    )
    conn.close()


def test_old_journals_read_and_migrate_throttled(tmp_path: Path) -> None:
    state = tmp_path / "st"
    _v1_journal(state)
    # Read-only: no migration, the column reads by the rule of old reports.
    with JournalReader(state) as r:
        old = [(a.key, a.n, a.throttled) for a in r.attempts("r1")]
    assert old == [("a", 1, True), ("a", 2, True), ("a", 3, False), ("b", 1, False),
                   ("b", 2, False)]  # fmt: skip
    assert sqlite3.connect(state / "state.db").execute("PRAGMA user_version").fetchone()[0] == 1
    # Migrated: the journaled event wins where it carries the decision.
    with Journal(state) as j:
        migrated = [(a.key, a.n, a.throttled) for a in j.attempts("r1")]
        assert j.check() == []
    assert migrated == [("a", 1, True), ("a", 2, False), ("a", 3, False), ("b", 1, False),
                        ("b", 2, False)]  # fmt: skip


def test_v4_journals_read_queued_time_as_unrecorded_then_migrate(tmp_path: Path) -> None:
    state = tmp_path / "st"
    Journal(state).close()
    conn = sqlite3.connect(state / "state.db", isolation_level=None)
    for column in ("ready_at", "queued_reason"):  # added by version 5
        conn.execute(f"ALTER TABLE attempts DROP COLUMN {column}")
    conn.execute("ALTER TABLE runs DROP COLUMN alive_at")  # added by version 6
    conn.execute("PRAGMA user_version=4")
    conn.execute(
        "INSERT INTO runs (id, plan_path, plan_name, plan_hash, plan_snapshot, mode, kind,"
        " options, started_at, ended_at, status, user, host, pid)"
        " VALUES ('r1', '/p.yaml', 'p', 'h', '', 'dag', 'apply', '{}', 0, 9, 'succeeded',"
        " 'u', 'h', 1)"
    )
    conn.execute(
        "INSERT INTO instances (run_id, key, node, task, status, attempts) VALUES"
        " ('r1', 'a', 0, 'a', 'succeeded', 2), ('r1', 'b', 1, 'b', 'succeeded', 1)"
    )
    conn.executemany(
        "INSERT INTO attempts (run_id, key, n, started_at, ended_at, outcome, log_path)"
        " VALUES ('r1', ?, ?, ?, ?, ?, 'l')",
        [("a", 1, 1.0, 2.0, "retrying"), ("a", 2, 5.0, 6.0, "succeeded"),
         ("b", 1, 3.0, 4.0, "succeeded")],
    )  # fmt: skip
    # Version 4 journaled AttemptStarted with ready_at (not for b: an older fleetrun).
    for seq, (key, n, ready) in enumerate([("a", 1, 0.5), ("a", 2, 4.0)], 1):
        conn.execute(
            "INSERT INTO events VALUES ('r1', ?, 0, 'AttemptStarted', ?)",
            (seq, json.dumps({"key": key, "attempt": n, "ready_at": ready})),
        )
    conn.close()
    # Read-only: no migration; the new columns read as NULL, nothing queued.
    with JournalReader(state) as r:
        old = [(a.key, a.n, a.ready_at, a.queued_reason, a.queued) for a in r.attempts("r1")]
    assert old == [("a", 1, None, None, 0.0), ("b", 1, None, None, 0.0),
                   ("a", 2, None, None, 0.0)]  # fmt: skip
    assert sqlite3.connect(state / "state.db").execute("PRAGMA user_version").fetchone()[0] == 4
    # Migrated: ready_at comes from the journaled event where it has one; no reason.
    with Journal(state) as j:
        new = [(a.key, a.n, a.ready_at, a.queued_reason, a.queued) for a in j.attempts("r1")]
        assert j.check() == []
    assert new == [("a", 1, 0.5, None, 0.5), ("b", 1, None, None, 0.0),
                   ("a", 2, 4.0, None, 1.0)]  # fmt: skip


# -- read-only directories, as another user ------------------------------------


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can enter (pytest's tmp_path is private to root)."""
    d = Path(tempfile.mkdtemp(prefix="fleetrun-ro-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        for p in [d, *d.rglob("*")]:
            if p.is_dir():
                p.chmod(0o755)
        shutil.rmtree(d)


def as_nobody(fn: Callable[[], Any]) -> Any:
    """``fn()`` in a forked child running as user ``nobody``; its result (JSON data),
    or ``AssertionError`` with the child's traceback. A fork rather than a new
    interpreter: nobody may not be allowed to execute this test's Python."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            out = json.dumps({"ok": fn()})
        except BaseException:
            out = json.dumps({"error": traceback.format_exc()})
            code = 1
        with os.fdopen(write_fd, "w") as f:
            f.write(out)
        os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        got = json.loads(f.read() or '{"error": "the child wrote nothing"}')
    os.waitpid(pid, 0)
    if "error" in got:
        raise AssertionError(got["error"])
    return got["ok"]


needs_root = pytest.mark.skipif(
    not hasattr(os, "getuid") or os.getuid() != 0, reason="needs root to switch users"
)


def _read(state: Path) -> Callable[[], dict[str, Any]]:
    def read() -> dict[str, Any]:
        with JournalReader(state) as r:
            return {"wal_unread": r.wal_unread, "runs": [x.id for x in r.runs()]}

    return read


def _history(state: Path) -> Callable[[], tuple[int, str, str]]:
    # Imported here, as root: nobody may not read this Python's standard library.
    # The CLI loads its commands (and what they import) lazily: run ``history``
    # once as root on a state directory that does not exist, so that the child
    # running as nobody imports nothing, whichever tests ran before in this
    # process.
    CliRunner().invoke(cli, ["history", "--state-dir", str(state.parent / "absent")])

    def history() -> tuple[int, str, str]:
        res = CliRunner().invoke(cli, ["history", "--state-dir", str(state)])
        return res.exit_code, res.stdout, res.stderr

    return history


def _freeze(state: Path) -> None:
    for p in state.iterdir():
        p.chmod(0o444)
    state.chmod(0o555)


def _with_wal(state: Path) -> None:
    """A journal whose last commit (run r2) is still only in its WAL, as after a
    crash: the files are copied while a writer holds them open."""
    live = state.parent / "live"
    with Journal(live) as j:
        begin(j, "r1", ["a"])
        j.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        j.conn.execute("PRAGMA wal_autocheckpoint=0")
        begin(j, "r2", ["a"])
        state.mkdir()
        for name in ("state.db", "state.db-wal", "state.db-shm"):
            shutil.copy(live / name, state / name)


@needs_root
def test_nobody_reads_a_read_only_journal_without_a_wal(shared_dir: Path) -> None:
    state = shared_dir / "st"
    with Journal(state) as j:
        begin(j, "r1", ["a"])
    _freeze(state)
    before = _files(state)
    assert as_nobody(_read(state)) == {"wal_unread": False, "runs": ["r1"]}
    assert _files(state) == before


@needs_root
def test_nobody_reads_the_wal_when_sqlite_can_open_it(shared_dir: Path) -> None:
    state = shared_dir / "st"
    _with_wal(state)
    _freeze(state)
    before = _files(state)
    assert as_nobody(_read(state)) == {"wal_unread": False, "runs": ["r2", "r1"]}
    assert _files(state) == before


@needs_root
def test_a_wal_that_cannot_be_opened_falls_back_to_the_database_file(shared_dir: Path) -> None:
    # Without its -shm file, in a directory nobody may write, SQLite cannot
    # open the WAL read-only: the reader reads the database file alone.
    state = shared_dir / "st"
    _with_wal(state)
    (state / "state.db-shm").unlink()
    _freeze(state)
    assert stat.S_IMODE(state.stat().st_mode) == 0o555
    before = _files(state)
    assert as_nobody(_read(state)) == {"wal_unread": True, "runs": ["r1"]}
    code, out, err = as_nobody(_history(state))
    assert code == 0
    rows = [line.split()[0] for line in out.splitlines()[1:]]
    assert rows == ["r1", "journal:"]  # the runs, then the journal's size
    assert err.startswith(f"note: {state / 'state.db'}-wal cannot be read here")
    assert _files(state) == before


def test_the_writer_records_the_engines_throttle_decision(journal: Journal) -> None:
    begin(journal, "r1", ["a@x"])
    w = JournalWriter(journal.db_path, "r1")
    w.start()
    for n, (outcome, throttled) in enumerate(
        [("retrying", True), ("retrying", False), ("succeeded", False)], start=1
    ):
        w(AttemptStarted(at=n, node=0, key="a@x", attempt=n, command="c", pid=1, pgid=1,
                         log_path=f"l{n}"))  # fmt: skip
        if n == 2:
            w.close()  # the end of attempt 2 updates a row committed before
            w = JournalWriter(journal.db_path, "r1")
            w.start()
        w(AttemptEnded(at=n + 0.5, node=0, key="a@x", attempt=n, started_at=n, exit_code=75,
                       signal=None, timed_out=False, outcome=outcome, retry_reason="exit 75",
                       throttled=throttled))  # fmt: skip
    w.close()
    with JournalReader(journal.state_dir) as r:
        assert [(a.n, a.throttled) for a in r.attempts("r1")] == [(1, True), (2, False),
                                                                  (3, False)]  # fmt: skip
