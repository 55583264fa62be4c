"""``JournalReader``: the record, read without ever writing to it.

The read commands (``history``, ``show``, ``logs``, ``outputs``, ``report``)
use it, so they work on a journal whose disk is full or read-only, and never
change what they read. ``Journal`` (the write side) inherits the same queries.

How the file is opened (``open_read_only``):

- ``state.db-wal`` exists: a writer is live, or one stopped without
  checkpointing. SQLite's ``mode=ro`` reads the database plus its WAL. Where
  that cannot be opened (a read-only directory without the ``-shm`` file
  SQLite needs, an unreadable WAL), the database file alone is read with
  ``immutable=1`` and ``wal_unread`` says that commits still in the WAL are
  not seen.
- no WAL: nothing is open on the journal and every commit is in the database
  file; it is read with ``immutable=1``. (``mode=ro`` would create the WAL and
  ``-shm`` files beside it, which is a write, and fails on a read-only
  directory.) A writer that opens the journal meanwhile commits to a new WAL,
  not to the database file, until it checkpoints, and the snapshot read is the
  one from before it.

Crash recovery is computed, not written: a run still marked ``running`` whose
process is gone (same host, pid and start time; ``process_alive``) reads as
``interrupted``, ended at its last trace (``last_write``: its last event, its
writer's last heartbeat or the last write to its logs and outputs, whichever
is latest), its running instances as ``interrupted``, its pending ones as
``not_started`` and its open attempts as ``interrupted``, ended at that same
time, which is what
``Journal.recover()`` will write the next time a command that writes runs.
An attempt whose log file exists but whose row the writer could not commit
(a full disk) is shown as recovery will record it (``unrecorded_attempts``).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import urllib.parse
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetrun.errors import RunNotFoundError, StateDirError
from fleetrun.executors import process_alive
from fleetrun.layout import RunLayout
from fleetrun.state._db import DB_NAME, SCHEMA_VERSION, unusable_journal
from fleetrun.state._records import AttemptRecord, InstanceRecord, RunRecord, columns
from fleetrun.state._replay import decode_event
from fleetrun.state._retry import waves_opened

if TYPE_CHECKING:
    from fleetrun.engine import Event
    from fleetrun.plan import Plan

INTERRUPTED_REASON = "fleetrun stopped while it was running"
"""The reason of an instance that was running when its run's process died."""

NOT_STARTED_REASON = "the run stopped first"
"""The reason of an instance still pending when its run's process died."""

UNRECORDED_REASON = "ran, but the journal could not record how it ended"
"""The reason of an instance whose only trace of an attempt is its log file."""

_UNRECORDED_ATTEMPT = "the journal could not record this attempt; its log was found afterwards"

_RUN_COLUMNS = columns(RunRecord)
_INSTANCE_COLUMNS = columns(InstanceRecord)
_ATTEMPT_COLUMNS = columns(AttemptRecord)

# How a column added by a later schema version reads in an older journal,
# which a reader cannot migrate. Journals from before ``attempts.throttled``
# get the rule the report used before the engine recorded its decision.
_DEFAULTS = {
    ("attempts", "throttled"): "(outcome = 'retrying' AND (retry_reason LIKE 'exit %'"
    " OR retry_reason LIKE 'output matched%'))",
    ("attempts", "executor"): "'local'",
}


def open_read_only(db_path: Path) -> tuple[sqlite3.Connection, bool]:
    """A connection that cannot write to ``db_path``, and whether a WAL went unread."""
    uri = "file:" + urllib.parse.quote(str(db_path.absolute()))
    if Path(f"{db_path}-wal").exists():
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30.0)
        try:
            conn.execute("PRAGMA user_version").fetchone()
            return conn, False
        except sqlite3.OperationalError:
            conn.close()
            wal_unread = True
    else:
        wal_unread = False
    try:
        conn = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True)
        conn.execute("PRAGMA user_version").fetchone()
    except sqlite3.DatabaseError as e:
        raise unusable_journal(db_path, e) from e
    return conn, wal_unread


class JournalReader:
    """The state directory's journal, opened read-only."""

    conn: sqlite3.Connection
    wal_unread: bool = False
    """True when commits still in the journal's WAL could not be read."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.db_path = state_dir / DB_NAME
        if not self.db_path.is_file():
            raise RunNotFoundError(f"no journal in {state_dir}: no run has been recorded there")
        self.conn, self.wal_unread = open_read_only(self.db_path)
        try:
            version = int(self.conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise StateDirError(
                    f"{self.db_path} has journal schema version {version}, newer than this "
                    f"fleetrun understands ({SCHEMA_VERSION}); upgrade fleetrun"
                )
            if version == 0:
                raise RunNotFoundError(f"no journal in {state_dir}: no run has been recorded there")
        except BaseException:
            self.conn.close()
            raise

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def __enter__(self) -> JournalReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs ----------------------------------------------------------------

    def runs(self, plan_path: str | None = None, limit: int | None = None) -> list[RunRecord]:
        """Runs, newest first (of one plan when ``plan_path`` is given)."""
        sql = f"SELECT {self._select('runs', _RUN_COLUMNS)} FROM runs"
        args: list[Any] = []
        if plan_path is not None:
            sql += " WHERE plan_path=?"
            args.append(plan_path)
        sql += " ORDER BY started_at DESC, id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [self._run(row) for row in self.conn.execute(sql, args).fetchall()]

    def run(self, ref: str | None = None, *, plan_path: str | None = None) -> RunRecord:
        """One run: by id (or unique id prefix), else the latest (of the plan)."""
        if ref is None:
            latest = self.runs(plan_path, limit=1)
            if latest:
                return latest[0]
            where = f" of {plan_path}" if plan_path else ""
            raise RunNotFoundError(f"no run{where} is on record in {self.state_dir}")
        ids = [
            r[0]
            for r in self.conn.execute(
                "SELECT id FROM runs WHERE substr(id, 1, ?) = ? ORDER BY started_at DESC, id DESC",
                (len(ref), ref),
            )
        ]
        matches = [ref] if ref in ids else ids
        if len(matches) != 1:
            problem = "is ambiguous" if matches else "is not on record"
            raise RunNotFoundError(
                f"run {ref!r} {problem} in {self.state_dir}; `fleetrun history` lists the runs"
            )
        row = self.conn.execute(
            f"SELECT {self._select('runs', _RUN_COLUMNS)} FROM runs WHERE id=?", (matches[0],)
        ).fetchone()
        return self._run(row)

    def _run(self, row: Sequence[Any]) -> RunRecord:
        raw = dict(zip(_RUN_COLUMNS, row, strict=True))
        raw["options"] = json.loads(raw["options"])
        counts = json.loads(raw["counts"]) if raw["counts"] else self._counts(raw["id"])
        raw["counts"] = counts
        run = RunRecord(**raw)
        end = self._dead_end(run)
        if end is None:
            return run
        settled: dict[str, int] = {}
        for i in self._settled(run.id, self._instances(run.id), end):
            settled[i.status] = settled.get(i.status, 0) + 1
        return replace(run, status="interrupted", ended_at=end, counts=settled, computed=True)

    def _counts(self, run_id: str) -> dict[str, int]:
        return dict(
            self.conn.execute(
                "SELECT status, count(*) FROM instances WHERE run_id=? GROUP BY status", (run_id,)
            ).fetchall()
        )

    def _dead_end(self, run: RunRecord) -> float | None:
        """When a run whose process died without ending it stopped (``last_write``),
        or None when it ended or may still be running."""
        if run.ended_at is not None or run.host != socket.gethostname():
            return None
        if process_alive(run.pid, run.pid_start):
            return None
        return self.last_write(run.id, run.started_at)

    def last_write(self, run_id: str, started_at: float) -> float:
        """The last trace a run left: its last journaled event, its writer's last
        heartbeat (``runs.alive_at``, every ``HEARTBEAT`` seconds while the run
        went), or the last write to a file in its run directory (an attempt's
        log or outputs), whichever is latest; ``started_at`` when there is none.

        The end of a run whose process died: an attempt that ran for minutes
        without an event or output still kept the heartbeat going, so the run
        lasted at least that long, to within a heartbeat (a process the dead
        run left running extends it while it writes, until recovery records
        the end).
        """
        alive = self._select("runs", ("alive_at",))  # NULL in journals before version 6
        row = self.conn.execute(
            f"SELECT (SELECT max(at) FROM events WHERE run_id=?1),"
            f" (SELECT {alive} FROM runs WHERE id=?1)",
            (run_id,),
        ).fetchone()
        traces = [float(t) for t in row if t is not None]
        last = max(traces) if traces else None
        files = _last_mtime(RunLayout.of(self.state_dir, run_id).directory)
        if files is not None and (last is None or files > last):
            last = files
        return started_at if last is None else last

    def _dead_end_of(self, run_id: str) -> float | None:
        """``_dead_end`` of the run with id ``run_id`` (None when it is not on record)."""
        row = self.conn.execute(
            f"SELECT {self._select('runs', _RUN_COLUMNS)} FROM runs WHERE id=?", (run_id,)
        ).fetchone()
        if row is None:
            return None
        raw = dict(zip(_RUN_COLUMNS, row, strict=True))
        raw.update(options={}, counts={})
        return self._dead_end(RunRecord(**raw))

    # -- instances and attempts ----------------------------------------------

    def instances(self, run_id: str) -> list[InstanceRecord]:
        """Every instance of a run, in node order, with its outputs decoded."""
        out = self._instances(run_id)
        end = self._dead_end_of(run_id) if any(i.status in _OPEN for i in out) else None
        if end is None:
            return out
        return self._settled(run_id, out, end)

    def latest_records(self, plan_path: str) -> dict[str, InstanceRecord]:
        """Instance key -> its latest record in the runs of ``plan_path`` that says
        something about it: it succeeded or was reused, or an attempt of it ran
        (failed, cancelled, interrupted). Records of instances that never started
        there (skipped, not started) leave the earlier one standing, and so does
        a reused record that copies it (same command hash and outputs): the record
        returned is that of the run where the instance succeeded. Read after
        ``Journal.recover()``: a dead run's open rows are not settled here."""
        # Per key, in SQL: its latest record, and its latest one that is not a
        # copy (reused). The windows sort narrow rows; only the chosen ones
        # (at most two per key) are read whole.
        cols = self._select("instances", _INSTANCE_COLUMNS)  # no name clashes with w's
        rows = self.conn.execute(
            f"SELECT {cols}, w.latest FROM ("
            " SELECT i.run_id AS wrun, i.key AS wkey, i.status AS wstatus,"
            "  ROW_NUMBER() OVER (PARTITION BY i.key ORDER BY r.at DESC, r.rid DESC) AS latest,"
            "  ROW_NUMBER() OVER (PARTITION BY i.key, i.status = 'reused'"
            "   ORDER BY r.at DESC, r.rid DESC) AS of_kind"
            "  FROM instances i"
            "  JOIN (SELECT id AS rid, started_at AS at FROM runs WHERE plan_path=?) r"
            "   ON r.rid = i.run_id"
            "  WHERE i.status IN ('succeeded', 'reused') OR i.attempts > 0) w"
            " JOIN instances ON instances.run_id = w.wrun AND instances.key = w.wkey"
            " WHERE w.latest = 1 OR (w.of_kind = 1 AND w.wstatus != 'reused')",
            (plan_path,),
        ).fetchall()
        latest: dict[str, InstanceRecord] = {}
        origin: dict[str, InstanceRecord] = {}
        for row in rows:
            raw = dict(zip(_INSTANCE_COLUMNS, row[:-1], strict=True))
            raw["outputs"] = json.loads(raw["outputs"])
            rec = InstanceRecord(**raw)
            if row[-1] == 1:
                latest[rec.key] = rec
            if rec.status == "succeeded":
                origin[rec.key] = rec
        for key, rec in latest.items():
            was = origin.get(key)
            if (
                rec.status == "reused"
                and was is not None
                and (was.command_hash, was.outputs) == (rec.command_hash, rec.outputs)
            ):
                latest[key] = was
        return latest

    def _instances(self, run_id: str) -> list[InstanceRecord]:
        rows = self.conn.execute(
            f"SELECT {self._select('instances', _INSTANCE_COLUMNS)} FROM instances"
            " WHERE run_id=? ORDER BY node",
            (run_id,),
        ).fetchall()
        out = []
        for row in rows:
            raw = dict(zip(_INSTANCE_COLUMNS, row, strict=True))
            raw["outputs"] = json.loads(raw["outputs"])
            out.append(InstanceRecord(**raw))
        return out

    def _settled(
        self, run_id: str, instances: list[InstanceRecord], end: float
    ) -> list[InstanceRecord]:
        """The instances of a dead run as recovery will record them."""
        logged: dict[str, AttemptRecord] = {}
        for found in self.unrecorded_attempts(run_id):
            if found.key not in logged or found.n > logged[found.key].n:
                logged[found.key] = found
        out = []
        for i in instances:
            a = logged.get(i.key)
            if a is not None:
                i = replace(
                    i, attempts=max(i.attempts, a.n), started_at=i.started_at or a.started_at
                )
                if i.status in _OPEN:
                    i = replace(
                        i, status="interrupted", ended_at=a.ended_at, reason=UNRECORDED_REASON
                    )
            out.append(_settle(i, end))
        return out

    def attempts(self, run_id: str, key: str | None = None) -> list[AttemptRecord]:
        """Attempts of a run (of one instance), in start order."""
        sql = f"SELECT {self._select('attempts', _ATTEMPT_COLUMNS)} FROM attempts WHERE run_id=?"
        args: list[Any] = [run_id]
        if key is not None:
            sql += " AND key=?"
            args.append(key)
        out = []
        for row in self.conn.execute(sql + " ORDER BY started_at, key, n", args).fetchall():
            raw = dict(zip(_ATTEMPT_COLUMNS, row, strict=True))
            raw["timed_out"] = bool(raw["timed_out"])
            raw["throttled"] = bool(raw["throttled"])
            out.append(AttemptRecord(**raw))
        end = self._dead_end_of(run_id)
        if end is None:
            return out
        out = [a if a.outcome is not None else _end_attempt(a, end) for a in out]
        logged = [a for a in self.unrecorded_attempts(run_id) if key is None or a.key == key]
        if logged:
            out = sorted(out + logged, key=lambda a: (a.started_at, a.key, a.n))
        return out

    def unrecorded_attempts(self, run_id: str) -> list[AttemptRecord]:
        """Attempts of ``run_id`` whose log file exists but whose row does not (the
        writer could not commit them: a full disk), as ``interrupted`` attempts that
        started when the log was created and ended when it was last written."""
        layout = RunLayout.of(self.state_dir, run_id)
        logs = layout.logs
        if not logs.is_dir():
            return []
        c = self.conn
        instances = list(
            c.execute("SELECT key, task, target FROM instances WHERE run_id=?", (run_id,))
        )
        by_file = {
            (layout.task_logs(task), RunLayout.stem(task, target)): key
            for key, task, target in instances
        }
        # A run recorded with the older spelling of names: its files by that
        # spelling, where it names one instance and no file of today's spelling.
        legacy: dict[tuple[str, str], list[str]] = {}
        for key, task, target in instances:
            legacy.setdefault(layout.legacy_names(task, target), []).append(key)
        for where, keys in legacy.items():
            if len(keys) == 1:
                by_file.setdefault(where, keys[0])
        known = set(c.execute("SELECT key, n FROM attempts WHERE run_id=?", (run_id,)))
        found = []
        for task_dir in sorted(logs.iterdir()):
            if task_dir.is_symlink() or not task_dir.is_dir():
                continue
            for log in sorted(task_dir.iterdir()):
                m = RunLayout.parse_log_name(log.name)
                key = by_file.get((str(task_dir), m[0])) if m else None
                if m is None or key is None or (key, m[1]) in known:
                    continue
                try:
                    st = os.lstat(log)
                except OSError:
                    continue
                found.append(
                    AttemptRecord(
                        run_id=run_id,
                        key=key,
                        n=m[1],
                        started_at=min(st.st_ctime, st.st_mtime),
                        ended_at=st.st_mtime,
                        exit_code=None,
                        signal=None,
                        timed_out=False,
                        outcome="interrupted",
                        log_path=str(log),
                        retry_reason=_UNRECORDED_ATTEMPT,
                        pid=None,
                        pgid=None,
                        proc_start=None,
                        throttled=False,
                        executor="local",
                        host=None,
                        job=None,
                    )
                )
        return found

    def attempt(self, run_id: str, key: str, n: int | None = None) -> AttemptRecord:
        """One attempt (the last one when ``n`` is None) or ``RunNotFoundError``."""
        rows = self.attempts(run_id, key)
        if n is not None:
            rows = [a for a in rows if a.n == n]
        if not rows:
            known = self.conn.execute(
                "SELECT 1 FROM instances WHERE run_id=? AND key=?", (run_id, key)
            ).fetchone()
            if known is None:
                raise RunNotFoundError(f"{key} is not an instance of run {run_id}")
            which = f"attempt {n}" if n is not None else "attempts"
            have = len(self.attempts(run_id, key)) if n is not None else 0
            made = (
                f"; its attempts are 1..{have}"
                if have > 1
                else "; its only attempt is 1"
                if have
                else ""
            )
            raise RunNotFoundError(f"{key} has no {which} in run {run_id}{made}")
        return max(rows, key=lambda a: a.n)

    def ran_in(self, run_id: str, key: str) -> str:
        """The run whose attempts of ``key`` to show: ``run_id`` if ``key`` has
        attempts there, else the nearest ancestor (parent links: a retry's
        reused or never-started instance) that has some; ``run_id`` if none."""
        seen = set()
        current: str | None = run_id
        while current is not None and current not in seen:
            seen.add(current)
            if self.conn.execute(
                "SELECT 1 FROM attempts WHERE run_id=? AND key=? LIMIT 1", (current, key)
            ).fetchone():
                return current
            row = self.conn.execute("SELECT parent_id FROM runs WHERE id=?", (current,)).fetchone()
            current = row[0] if row else None
        return run_id

    def waves_opened(self, run: RunRecord, plan: Plan) -> int:
        """How many of ``plan``'s rollout waves had opened in ``run``, for the run
        that continues it (``state.waves_opened``)."""
        started_with = run.options.get("waves_opened")
        return waves_opened(
            plan,
            self.event_data(run.id, "WaveChanged"),
            started_with if isinstance(started_with, int) else 0,
        )

    def event_data(self, run_id: str, event_type: str) -> list[dict[str, Any]]:
        """The fields of a run's events of one type (``"PoolChanged"``), in order."""
        return [
            json.loads(data)
            for (data,) in self.conn.execute(
                "SELECT data FROM events WHERE run_id=? AND type=? ORDER BY seq",
                (run_id, event_type),
            )
        ]

    def events_after(self, run_id: str, seq: int = 0, limit: int = 1000) -> tuple[int, list[Event]]:
        """A run's journaled events after sequence number ``seq`` (at most ``limit``
        rows), as typed engine events in order, and the last sequence number read
        (``seq`` when there is nothing new): pass it back to read on from there.
        Rows of types this fleetrun does not know are read and left out."""
        rows = self.conn.execute(
            "SELECT seq, type, data FROM events WHERE run_id=? AND seq>? ORDER BY seq LIMIT ?",
            (run_id, seq, limit),
        ).fetchall()
        events = []
        for n, type_name, data in rows:
            seq = n
            ev = decode_event(type_name, data)
            if ev is not None:
                events.append(ev)
        return seq, events

    def heartbeat(self, run_id: str) -> float | None:
        """The run's writer's last heartbeat (``runs.alive_at``); None before the
        first, or in a journal from before heartbeats (schema version 6)."""
        alive = self._select("runs", ("alive_at",))
        row = self.conn.execute(f"SELECT {alive} FROM runs WHERE id=?", (run_id,)).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def check(self) -> list[str]:
        """Integrity problems: SQLite's own check plus the journal's invariants."""
        problems = [
            f"sqlite: {row[0]}"
            for row in self.conn.execute("PRAGMA integrity_check").fetchall()
            if row[0] != "ok"
        ]
        problems += [
            f"attempt {r}/{k}#{n} belongs to no instance"
            for r, k, n in self.conn.execute(
                "SELECT a.run_id, a.key, a.n FROM attempts a LEFT JOIN instances i"
                " ON i.run_id=a.run_id AND i.key=a.key WHERE i.key IS NULL"
            )
        ]
        problems += [
            f"instance {r}/{k} is {s} in ended run"
            for r, k, s in self.conn.execute(
                "SELECT i.run_id, i.key, i.status FROM instances i JOIN runs r ON r.id=i.run_id"
                " WHERE r.ended_at IS NOT NULL AND i.status IN ('running', 'pending')"
            )
        ]
        problems += [
            f"instance {r}/{k} records {a} attempts but has {m}"
            for r, k, a, m in self.conn.execute(
                "SELECT i.run_id, i.key, i.attempts, count(a.n) FROM instances i"
                " JOIN attempts a ON a.run_id=i.run_id AND a.key=i.key"
                " GROUP BY i.run_id, i.key HAVING max(a.n) > i.attempts"
            )
        ]
        problems += [
            f"run {r} has parent {p}, which is not on record"
            for r, p in self.conn.execute(
                "SELECT r.id, r.parent_id FROM runs r LEFT JOIN runs p ON p.id=r.parent_id"
                " WHERE r.parent_id IS NOT NULL AND p.id IS NULL"
            )
        ]
        return problems

    def _select(self, table: str, wanted: Sequence[str]) -> str:
        """``wanted`` as a select list; a column this journal's schema lacks reads
        as its default (``_DEFAULTS``)."""
        have = {row[1] for row in self.conn.execute(f"PRAGMA table_info({table})")}
        return ", ".join(
            c if c in have else f"{_DEFAULTS.get((table, c), 'NULL')} AS {c}" for c in wanted
        )


_OPEN = frozenset({"running", "pending"})


def _last_mtime(top: Path) -> float | None:
    """The latest modification time of ``top`` and everything below it (links
    are not followed); None when ``top`` does not exist."""
    try:
        latest = os.lstat(top).st_mtime
    except OSError:
        return None
    stack = [top]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    latest = max(latest, st.st_mtime)
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
        except OSError:
            continue
    return latest


def _end_attempt(a: AttemptRecord, end: float) -> AttemptRecord:
    """An attempt of a dead run that had not ended, as recovery will record it:
    ``interrupted``, ended when the run ended (never before it started)."""
    ended = a.ended_at if a.ended_at is not None else max(end, a.started_at)
    return replace(a, outcome="interrupted", ended_at=ended)


def _settle(i: InstanceRecord, end: float) -> InstanceRecord:
    """An instance of a dead run as recovery will record it."""
    if i.status == "running":
        return replace(i, status="interrupted", ended_at=end, reason=INTERRUPTED_REASON)
    if i.status == "pending":
        return replace(i, status="not_started", reason=NOT_STARTED_REASON)
    return i
