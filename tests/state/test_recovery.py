"""Crash safety: SIGKILL while writing, recovery of dead runs, orphaned process groups."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from fleetrun.state import Journal, kill_groups, process_start_time

from .conftest import begin

_SRC = str(Path(__file__).resolve().parents[2] / "src")


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _own_run(journal: Journal, run_id: str, pid: int, start: int | None) -> None:
    journal.conn.execute("UPDATE runs SET pid=?, pid_start=? WHERE id=?", (pid, start, run_id))


def test_recover_marks_a_dead_run_interrupted(journal: Journal) -> None:
    begin(journal, "dead", ["a@x", "b@x", "c@x"])
    _own_run(journal, "dead", _dead_pid(), None)
    c = journal.conn
    c.execute("UPDATE instances SET status='succeeded' WHERE key='a@x'")
    c.execute("UPDATE instances SET status='running', attempts=1 WHERE key='b@x'")
    c.execute(
        "INSERT INTO attempts (run_id, key, n, started_at, log_path) VALUES ('dead','b@x',1,5,'l')"
    )
    c.execute("INSERT INTO events VALUES ('dead', 1, 7.5, 'AttemptStarted', '{}')")
    begin(journal, "live", ["a@x"])  # our own pid: alive, must be left alone

    assert journal.recover() == ["dead"]
    assert journal.recover() == []  # idempotent
    run = journal.run("dead")
    assert (run.status, run.ended_at) == ("interrupted", 7.5)
    assert run.counts == {"succeeded": 1, "interrupted": 1, "not_started": 1}
    states = {i.key: i.status for i in journal.instances("dead")}
    assert states == {"a@x": "succeeded", "b@x": "interrupted", "c@x": "not_started"}
    assert journal.attempts("dead")[0].outcome == "interrupted"
    assert journal.run("live").status == "running"


def test_a_reused_pid_counts_as_dead(journal: Journal) -> None:
    begin(journal, "r", ["a"])
    start = process_start_time(os.getpid())
    assert start is not None
    _own_run(journal, "r", os.getpid(), start - 1)  # same pid, another process
    assert journal.recover() == ["r"]


_WRITER = """
import sys, time
from fleetrun.engine._events import AttemptStarted, AttemptEnded, InstanceSettled
from fleetrun.state import Journal, JournalWriter, NewInstance
state, run = sys.argv[1], sys.argv[2]
j = Journal(__import__("pathlib").Path(state))
keys = [f"t@{i}" for i in range(10000)]  # seconds of writes: a kill lands mid-way
j.begin_run(run_id=run, parent_id=None, plan_path="p", plan_name="p", plan_hash="h",
            plan_snapshot="", mode="dag", kind="apply", options={},
            instances=[NewInstance(k, i, "t", str(i)) for i, k in enumerate(keys)])
w = JournalWriter(j.db_path, run)
w.start()
print("ready", flush=True)
for i, k in enumerate(keys):
    now = time.time()
    w(AttemptStarted(at=now, node=i, key=k, attempt=1, command="c", pid=1, pgid=1, log_path="l"))
    w(AttemptEnded(at=now, node=i, key=k, attempt=1, started_at=now, exit_code=0, signal=None,
                   timed_out=False, outcome="succeeded"))
    w(InstanceSettled(at=now, node=i, key=k, state="succeeded", attempts=1))
    if i % 200 == 0:
        time.sleep(0.001)
"""


def _wait_for_a_commit(state: Path, run_id: str) -> None:
    deadline = time.monotonic() + 20
    with Journal(state) as j:
        while time.monotonic() < deadline:
            sql = "SELECT 1 FROM instances WHERE run_id=? AND status='succeeded' LIMIT 1"
            if j.conn.execute(sql, (run_id,)).fetchone():
                return
            time.sleep(0.01)


def test_sigkill_while_writing_leaves_a_consistent_journal(tmp_path: Path) -> None:
    state = tmp_path / "st"
    rng = random.Random(138)
    env = {**os.environ, "PYTHONPATH": _SRC}
    for trial in range(4):
        p = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(state), f"run{trial}"],
            stdout=subprocess.PIPE,
            env=env,
        )
        assert p.stdout is not None
        assert p.stdout.readline().strip() == b"ready"
        _wait_for_a_commit(state, f"run{trial}")  # a loaded machine may be slow to start
        time.sleep(rng.uniform(0.05, 0.4))
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stdout.close()
    with Journal(state) as j:
        assert sorted(j.recover()) == [f"run{t}" for t in range(4)]
        assert j.check() == []
        for t in range(4):
            # Every instance the journal calls succeeded has its finished attempt:
            # the three rows of one event batch commit together or not at all.
            bad = j.conn.execute(
                "SELECT count(*) FROM instances i LEFT JOIN attempts a"
                " ON a.run_id=i.run_id AND a.key=i.key"
                " WHERE i.run_id=? AND i.status='succeeded' AND a.outcome IS NOT 'succeeded'",
                (f"run{t}",),
            ).fetchone()[0]
            assert bad == 0
            counts = j.run(f"run{t}").counts
            assert counts.get("succeeded", 0) > 0
            assert set(counts) <= {"succeeded", "interrupted", "not_started"}


def test_orphaned_groups_are_found_and_ended(journal: Journal) -> None:
    # A process group as an attempt leaves it: a shell and a child that ignores TERM.
    child = subprocess.Popen(
        ["sh", "-c", "trap '' TERM; sleep 60 & sleep 60; wait"], start_new_session=True
    )
    try:
        begin(journal, "dead", ["a@x", "b@x"])
        _own_run(journal, "dead", _dead_pid(), None)
        start = process_start_time(child.pid)
        c = journal.conn
        c.execute("UPDATE instances SET status='running', attempts=1")
        for key, recorded in (("a@x", start), ("b@x", (start or 0) + 1)):
            # b@x records another start time: its pgid was reused, it is not ours.
            c.execute(
                "INSERT INTO attempts (run_id, key, n, started_at, log_path, pid, pgid,"
                " proc_start) VALUES ('dead', ?, 1, 0, 'l', ?, ?, ?)",
                (key, child.pid, child.pid, recorded),
            )
        journal.recover()
        deadline = time.monotonic() + 10
        orphans = journal.orphans()
        while len(orphans[0].pids if orphans else ()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)  # the shell has not forked both sleeps yet
            orphans = journal.orphans()
        assert [(o.key, o.pgid, len(o.pids)) for o in orphans] == [("a@x", child.pid, 3)]
        kill_groups([o.pgid for o in orphans], grace=0.3)
        child.wait(timeout=10)
        assert journal.orphans() == []
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def test_an_attempt_the_dead_run_never_journaled_is_found_by_its_run_id(
    journal: Journal,
) -> None:
    # The run died right after a spawn, before the attempt reached the journal:
    # the group is found through FLEETRUN_RUN_ID in its processes' environment.
    env = {
        **os.environ,
        "FLEETRUN_RUN_ID": "dead",
        "FLEETRUN_TASK": "b",
        "FLEETRUN_TARGET": "x",
        "FLEETRUN_ATTEMPT": "2",
    }
    child = subprocess.Popen(
        ["sh", "-c", "sleep 60 & sleep 60; wait"], start_new_session=True, env=env
    )
    # Another run's process (alive run, or another id) is never an orphan.
    other = subprocess.Popen(
        ["sleep", "60"], start_new_session=True, env={**env, "FLEETRUN_RUN_ID": "live"}
    )
    try:
        begin(journal, "dead", ["a@x", "b@x"])
        _own_run(journal, "dead", _dead_pid(), None)
        begin(journal, "live", ["a@x"])
        journal.recover()
        deadline = time.monotonic() + 10
        orphans = journal.orphans()
        while len(orphans[0].pids if orphans else ()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
            orphans = journal.orphans()
        assert [(o.run_id, o.key, o.attempt, o.pgid, len(o.pids)) for o in orphans] == [
            ("dead", "b@x", 2, child.pid, 3)
        ]
        kill_groups([o.pgid for o in orphans], grace=0.3)
        child.wait(timeout=10)
        assert journal.orphans() == []
        assert other.poll() is None
    finally:
        for p in (child, other):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def test_options_and_counts_round_trip_as_json(journal: Journal) -> None:
    begin(journal, "r", ["a"])
    raw = journal.conn.execute("SELECT options FROM runs").fetchone()[0]
    assert json.loads(raw) == {"parallelism": None}
    assert journal.runs()[0].counts == {"pending": 1}
