"""The journal writer with synthetic event sequences and real SQLite."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import MappingProxyType

import pytest

from fleetrun.engine._events import (
    AttemptEnded,
    AttemptOutput,
    AttemptStarted,
    InstanceReused,
    InstanceSettled,
    RunEnded,
    RunStarted,
)
from fleetrun.errors import StateError
from fleetrun.executors import process_start_time
from fleetrun.state import (
    SCHEMA_VERSION,
    Journal,
    JournalWriter,
    NewInstance,
    command_hash,
    connect,
)

from .conftest import begin


def test_schema_is_versioned_and_in_wal_mode(tmp_path: Path) -> None:
    conn = connect(tmp_path / "s" / "state.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"runs", "instances", "attempts", "events", "exact_outputs"}
    conn.close()
    # Reopening does not migrate again (the tables would already exist).
    connect(tmp_path / "s" / "state.db").close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA user_version=99")
    raw.close()
    with pytest.raises(StateError, match="schema version 99"):
        connect(path)


def _events(t0: float) -> list[object]:
    return [
        RunStarted(at=t0, run_id="r1", plan_name="p", mode="dag", parallelism=2, nodes=3),
        InstanceReused(at=t0, node=2, key="old@x", outputs={"addr": "0xAB"}),
        AttemptStarted(
            at=t0 + 1, node=0, key="a@x", attempt=1, command="echo a", pid=1, pgid=1, log_path="l1"
        ),
        AttemptOutput(at=t0 + 1.5, node=0, key="a@x", attempt=1, text="hello\n"),
        AttemptEnded(
            at=t0 + 2,
            node=0,
            key="a@x",
            attempt=1,
            started_at=t0 + 1,
            exit_code=75,
            signal=None,
            timed_out=False,
            outcome="retrying",
            retry_reason="exit 75",
            retry_delay=0.5,
        ),
        AttemptStarted(
            at=t0 + 3, node=0, key="a@x", attempt=2, command="echo a", pid=1, pgid=1, log_path="l2"
        ),
        AttemptEnded(
            at=t0 + 4,
            node=0,
            key="a@x",
            attempt=2,
            started_at=t0 + 3,
            exit_code=0,
            signal=None,
            timed_out=False,
            outcome="succeeded",
        ),
        InstanceSettled(
            at=t0 + 4, node=0, key="a@x", state="succeeded", attempts=2, outputs={"k": "v"}
        ),
        InstanceSettled(at=t0 + 4, node=1, key="b@x", state="skipped", reason="needs c@x"),
        RunEnded(at=t0 + 5, run_id="r1", status="failed", counts={"succeeded": 1, "skipped": 1}),
    ]


def test_writer_records_a_run(journal: Journal) -> None:
    begin(journal, "r1", ["a@x", "b@x", "old@x"])
    t0 = time.time()
    w = JournalWriter(journal.db_path, "r1")
    w.start()
    for ev in _events(t0):
        w(ev)  # type: ignore[arg-type]
    w.close()

    run = journal.run("r1")
    assert (run.status, run.ended_at, run.counts) == (
        "failed",
        t0 + 5,
        {"succeeded": 1, "skipped": 1},
    )
    inst = {i.key: i for i in journal.instances("r1")}
    a = inst["a@x"]
    assert (a.status, a.attempts, a.exit_code, a.outputs) == (
        "succeeded",
        2,
        0,
        {"k": "v"},
    )
    assert a.command_hash == command_hash("echo a")
    assert (inst["b@x"].status, inst["b@x"].reason) == ("skipped", "needs c@x")
    assert (inst["old@x"].status, inst["old@x"].outputs) == ("reused", {"addr": "0xAB"})
    att = journal.attempts("r1", "a@x")
    assert [(x.n, x.exit_code, x.outcome, x.retry_reason, x.log_path) for x in att] == [
        (1, 75, "retrying", "exit 75", "l1"),
        (2, 0, "succeeded", None, "l2"),
    ]
    # AttemptOutput is not journaled (the log holds it); everything else is, in order.
    types = [r[0] for r in journal.conn.execute("SELECT type FROM events ORDER BY seq")]
    assert types == [
        "RunStarted",
        "InstanceReused",
        "AttemptStarted",
        "AttemptEnded",
        "AttemptStarted",
        "AttemptEnded",
        "InstanceSettled",
        "InstanceSettled",
        "RunEnded",
    ]
    assert journal.check() == []


def test_durable_returns_only_after_commit(journal: Journal) -> None:
    keys = [f"t@{i}" for i in range(200)]
    begin(journal, "r1", keys)
    w = JournalWriter(journal.db_path, "r1")
    w.start()
    seen: list[int] = []

    async def main() -> None:
        reader = sqlite3.connect(journal.db_path)
        for i, k in enumerate(keys):
            w(InstanceSettled(at=float(i), node=i, key=k, state="succeeded"))
            if i % 50 == 49:
                await w.durable()
                # A separate connection sees every event enqueued before durable().
                seen.append(
                    reader.execute(
                        "SELECT count(*) FROM instances WHERE status='succeeded'"
                    ).fetchone()[0]
                )
        await w.durable()  # nothing new: returns at once
        reader.close()

    asyncio.run(main())
    w.close()
    assert seen == [50, 100, 150, 200]


def test_writer_failure_surfaces_as_state_error(tmp_path: Path) -> None:
    j = Journal(tmp_path / "st")
    begin(j, "r1", ["a"])
    w = JournalWriter(j.db_path, "r1")
    w.start()
    # A second event with the same seq cannot be inserted: the events row of
    # this run already exists, so the batch fails.
    j.conn.execute("INSERT INTO events VALUES ('r1', 1, 0, 'X', '{}')")
    w(InstanceSettled(at=1.0, node=0, key="a", state="failed"))

    async def wait() -> None:
        await w.durable()

    with pytest.raises(StateError, match=r"writing the journal .* failed"):
        asyncio.run(wait())
    with pytest.raises(StateError):
        w.close()
    j.close()


def test_ran_in_follows_reused_instances_to_their_run(journal: Journal) -> None:
    begin(journal, "r1", ["a", "b"])
    journal.begin_run(
        run_id="r2", parent_id="r1", plan_path="/plans/p.yaml", plan_name="p", plan_hash="h1",
        plan_snapshot="", mode="dag", kind="retry", options={},
        instances=[NewInstance("a", 0, "a", None, reused_outputs={"x": "1"}),
                   NewInstance("b", 1, "b", None)],
    )  # fmt: skip
    journal.conn.execute(
        "INSERT INTO attempts (run_id, key, n, started_at, log_path) VALUES ('r1','a',1,0,'l')"
    )
    journal.conn.execute("UPDATE instances SET attempts=1 WHERE run_id='r1' AND key='a'")
    assert journal.ran_in("r2", "a") == "r1"  # reused in r2: its attempts are in r1
    assert journal.ran_in("r2", "b") == "r2"  # never ran anywhere: r2 itself
    assert journal.instances("r2")[0].outputs == {"x": "1"}
    assert journal.check() == []


def _started(key: str, n: int, pid: int, at: float) -> AttemptStarted:
    return AttemptStarted(
        at=at, node=0, key=key, attempt=n, command="run " + key, pid=pid, pgid=pid, log_path=key
    )


def _ended(key: str, n: int, at: float, code: int) -> AttemptEnded:
    return AttemptEnded(
        at=at, node=0, key=key, attempt=n, started_at=at - 1, exit_code=code, signal=None,
        timed_out=False, outcome="succeeded" if code == 0 else "failed",
    )  # fmt: skip


def test_start_time_is_recorded_for_attempts_still_running(journal: Journal) -> None:
    begin(journal, "r1", ["done", "live"])
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = process_start_time(child.pid)
        assert start is not None
        w = JournalWriter(journal.db_path, "r1")
        # Queued before the thread starts: one batch. "done" starts and ends in
        # it (its pid is not looked at: it may belong to another process by
        # then); "live" is still running when the batch is written.
        w(_started("done", 1, child.pid, 1.0))
        w(_ended("done", 1, 2.0, 0))
        w(_started("live", 1, child.pid, 1.5))
        w.start()
        w.close()
    finally:
        child.kill()
        child.wait()
    rows = journal.conn.execute(
        "SELECT key, pid, pgid, proc_start, ended_at, exit_code FROM attempts ORDER BY key"
    ).fetchall()
    assert rows == [
        ("done", child.pid, child.pid, None, 2.0, 0),
        ("live", child.pid, child.pid, start, None, None),
    ]
    assert journal.check() == []


def test_large_batches_keep_every_row_in_order(journal: Journal) -> None:
    # 150 instances in one batch (450 events: rows go in multi-row chunks of
    # 64, 32, ... 1), then 3 more in a second batch: seq stays contiguous.
    keys = [f"t@{i}" for i in range(153)]
    begin(journal, "r1", keys)
    w = JournalWriter(journal.db_path, "r1")
    expected: list[tuple[str, str]] = []
    for i, k in enumerate(keys[:150]):
        for ev in (_started(k, 1, 0, i), _ended(k, 1, i + 0.5, i % 3), _settled(k, i)):
            w(ev)
            expected.append((type(ev).__name__, k))
    w.start()

    async def rest() -> None:
        await w.durable()
        for i, k in enumerate(keys[150:], start=150):
            for ev in (_started(k, 1, 0, i), _ended(k, 1, i + 0.5, i % 3), _settled(k, i)):
                w(ev)
                expected.append((type(ev).__name__, k))
        await w.durable()

    asyncio.run(rest())
    w.close()
    got = journal.conn.execute("SELECT seq, type, data FROM events ORDER BY seq").fetchall()
    assert [r[0] for r in got] == list(range(1, 3 * 153 + 1))
    assert [(r[1], json.loads(r[2])["key"]) for r in got] == expected
    att = journal.conn.execute(
        "SELECT key, n, started_at, ended_at, exit_code FROM attempts"
        " ORDER BY CAST(substr(key, 3) AS INTEGER)"
    ).fetchall()
    assert att == [(k, 1, float(i), i + 0.5, i % 3) for i, k in enumerate(keys)]
    inst = {i.key: i for i in journal.instances("r1")}
    assert [(inst[k].status, inst[k].exit_code) for k in keys] == [
        ("succeeded" if i % 3 == 0 else "failed", i % 3) for i in range(153)
    ]
    assert journal.check() == []


def _settled(key: str, i: int) -> InstanceSettled:
    state = "succeeded" if i % 3 == 0 else "failed"
    return InstanceSettled(at=i + 0.5, node=i, key=key, state=state, attempts=1)


def test_event_data_is_compact_json_of_every_field(journal: Journal) -> None:
    begin(journal, "r1", ["a"])
    w = JournalWriter(journal.db_path, "r1")
    w.start()
    ev = InstanceSettled(
        at=1.25, node=0, key="a", state="failed", reason="x \u00e9\u2028\"q\"", attempts=3,
        outputs=MappingProxyType({"k": "v\n", "n": "1"}),
    )  # fmt: skip
    w(ev)
    w.close()
    (data,) = journal.conn.execute("SELECT data FROM events").fetchone()
    assert data == json.dumps(
        {"at": 1.25, "node": 0, "key": "a", "state": "failed", "reason": ev.reason,
         "attempts": 3, "outputs": {"k": "v\n", "n": "1"}},
        separators=(",", ":"),
    )  # fmt: skip


def test_settling_in_a_later_batch_takes_the_last_attempt(journal: Journal) -> None:
    begin(journal, "r1", ["a", "b"])
    w = JournalWriter(journal.db_path, "r1")
    w.start()

    async def main() -> None:
        # One durable() per step: each step is its own batch (transaction).
        for ev in (
            _started("a", 1, 0, 1.0),
            _ended("a", 1, 2.0, 75),
            _started("a", 2, 0, 3.0),
            _ended("a", 2, 4.0, 3),
            InstanceSettled(at=4.0, node=0, key="a", state="failed", attempts=2),
        ):
            w(ev)
            await w.durable()

    asyncio.run(main())
    w.close()
    inst = {i.key: i for i in journal.instances("r1")}
    a = inst["a"]
    assert (a.status, a.attempts, a.exit_code, a.started_at, a.ended_at) == (
        "failed",
        2,
        3,
        1.0,
        4.0,
    )
    assert a.command_hash == command_hash("run a")
    assert (inst["b"].status, inst["b"].exit_code) == ("pending", None)
    assert journal.check() == []
