"""The journal as the CLI sees it: start and end runs, recover after a crash.

``Journal`` owns one connection used from one thread. Writing while a run goes
is the ``JournalWriter``'s job; ``Journal`` writes only the run's first rows
(before the writer starts), its last fix-ups, and crash recovery.

Recovery (``recover()``) is run by every command that extends the record
(reading commands compute the same view without writing: ``JournalReader``).
A run still marked ``running`` whose process is gone (pid missing or reused, on
this host) becomes ``interrupted``, ended at its last trace (its last event, its
writer's last heartbeat or the last write to its logs and outputs:
``last_write``); so do its instances that were running, while those still
pending become ``not_started``; attempts without an end get the outcome
``interrupted`` and the run's end, and keep their pid/pgid so orphaned process
groups can be found. An attempt that ran but never reached the
journal (the disk filled up under the writer) is put on record from its log
file in ``runs/<id>/logs`` (``interrupted``, its end unknown), so every attempt
that ran is on record after the next command at the latest. Recovery that
cannot write (a full or read-only disk) leaves the record as it is: reading
goes on.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetrun.errors import FleetrunError, RunNotFoundError
from fleetrun.executors import (
    Handle,
    LocalOrphanFinder,
    Orphan,
    RecordedAttempt,
    process_alive,
    process_start_time,
)
from fleetrun.state._db import DB_NAME, connect, journal_error, rollback
from fleetrun.state._fs import prepare_state_dir
from fleetrun.state._reader import UNRECORDED_REASON, JournalReader

"""Each run's logs and outputs: ``<state dir>/runs/<run id>/``."""


@dataclass(frozen=True, slots=True)
class NewInstance:
    """An instance row written when a run begins: pending, or reused from an earlier run
    (``reused_from``: that run, named in the row's reason)."""

    key: str
    node: int
    task: str
    target: str | None
    reused_outputs: Mapping[str, str] | None = None
    command_hash: str | None = None
    reused_from: str | None = None


def _dicts(cur: sqlite3.Cursor) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


class Journal(JournalReader):
    """The state directory's journal (``<state dir>/state.db``), opened for writing.

    It reads like a ``JournalReader`` (the queries are inherited), through a
    connection that creates and migrates the database.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.db_path = state_dir / DB_NAME
        if not state_dir.is_dir():
            prepare_state_dir(state_dir)
        self.conn = connect(self.db_path)

    @classmethod
    def open_existing(cls, state_dir: Path) -> Journal:
        """Open a journal that must already exist (reading commands)."""
        if not (state_dir / DB_NAME).is_file():
            raise RunNotFoundError(f"no journal in {state_dir}: no run has been recorded there")
        return cls(state_dir)

    def __enter__(self) -> Journal:
        return self

    # -- writing -------------------------------------------------------------

    def begin_run(
        self,
        *,
        run_id: str,
        parent_id: str | None,
        plan_path: str,
        plan_name: str,
        plan_hash: str,
        plan_snapshot: str,
        mode: str,
        kind: str,
        options: Mapping[str, Any],
        instances: Iterable[NewInstance],
        started_at: float | None = None,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        """Record a new run and its instances in one transaction.

        Reused outputs are kept exactly in ``exact_outputs`` (for the next retry)
        and shown as ``redact`` leaves them (``redact``: JSON-aware redaction).
        """
        pid = os.getpid()
        instances = list(instances)
        shown = redact or (lambda text: text)
        now = time.time() if started_at is None else started_at
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            c.execute(
                "INSERT INTO runs (id, parent_id, plan_path, plan_name, plan_hash, plan_snapshot,"
                " mode, kind, options, started_at, status, user, host, pid, pid_start)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,'running',?,?,?,?)",
                (
                    run_id,
                    parent_id,
                    plan_path,
                    plan_name,
                    plan_hash,
                    plan_snapshot,
                    mode,
                    kind,
                    json.dumps(options, sort_keys=True),
                    now,
                    _user(),
                    socket.gethostname(),
                    pid,
                    process_start_time(pid),
                ),
            )
            c.executemany(
                "INSERT INTO instances (run_id, key, node, task, target, status, outputs,"
                " command_hash, ended_at, reason) VALUES (?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        run_id,
                        i.key,
                        i.node,
                        i.task,
                        i.target,
                        "pending" if i.reused_outputs is None else "reused",
                        shown(json.dumps(dict(i.reused_outputs or {}))),
                        i.command_hash,
                        None if i.reused_outputs is None else now,
                        f"reused from run {i.reused_from}" if i.reused_from else "",
                    )
                    for i in instances
                ],
            )
            c.executemany(
                "INSERT OR REPLACE INTO exact_outputs (run_id, key, outputs) VALUES (?,?,?)",
                [
                    (run_id, i.key, json.dumps(dict(i.reused_outputs)))
                    for i in instances
                    if i.reused_outputs
                ],
            )
            c.execute("COMMIT")
        except sqlite3.Error as e:
            rollback(c)
            raise journal_error("writing", self.db_path, e) from e
        except BaseException:
            rollback(c)
            raise

    def exact_outputs(self, run_id: str) -> dict[str, dict[str, str]]:
        """Instance key -> its outputs exactly as published (secrets included), for
        retry planning only; never show them. Instances recorded before fleetrun
        kept exact values are absent."""
        return {
            key: json.loads(text)
            for key, text in self.conn.execute(
                "SELECT key, outputs FROM exact_outputs WHERE run_id=?", (run_id,)
            )
        }

    def end_run(self, run_id: str, status: str) -> None:
        """Close a run the engine did not close itself (it raised, or was interrupted
        before its end event). Leaves a run that already has an end alone."""
        self._close_run(run_id, status, time.time())

    def _close_run(self, run_id: str, status: str, at: float) -> None:
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            row = c.execute("SELECT ended_at FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is None or row[0] is not None:
                c.execute("COMMIT")
                return
            self._reconcile_logs(run_id)
            c.execute(
                "UPDATE instances SET status='interrupted', ended_at=?,"
                " reason='fleetrun stopped while it was running'"
                " WHERE run_id=? AND status='running'",
                (at, run_id),
            )
            c.execute(
                "UPDATE instances SET status='not_started', reason='the run stopped first'"
                " WHERE run_id=? AND status='pending'",
                (run_id,),
            )
            # Attempts that were running end when the run does (an attempt that
            # started later than that, an instant before the death: at its start).
            c.execute(
                "UPDATE attempts SET outcome='interrupted',"
                " ended_at=coalesce(ended_at, max(started_at, ?))"
                " WHERE run_id=? AND outcome IS NULL",
                (at, run_id),
            )
            counts = dict(
                c.execute(
                    "SELECT status, count(*) FROM instances WHERE run_id=? GROUP BY status",
                    (run_id,),
                ).fetchall()
            )
            c.execute(
                "UPDATE runs SET status=?, ended_at=?, counts=? WHERE id=?",
                (status, at, json.dumps(counts), run_id),
            )
            c.execute("COMMIT")
        except sqlite3.Error as e:
            rollback(c)
            raise journal_error("writing", self.db_path, e) from e
        except BaseException:
            rollback(c)
            raise

    def _reconcile_logs(self, run_id: str) -> None:
        """Put on record the attempts whose log file exists but whose row does not
        (the writer could not commit them), as ``JournalReader`` already shows them."""
        c = self.conn
        for a in self.unrecorded_attempts(run_id):
            c.execute(
                "INSERT INTO attempts (run_id, key, n, started_at, ended_at, outcome, log_path,"
                " retry_reason) VALUES (?,?,?,?,?,'interrupted',?,?)",
                (run_id, a.key, a.n, a.started_at, a.ended_at, a.log_path, a.retry_reason),
            )
            c.execute(
                "UPDATE instances SET attempts=max(attempts, ?),"
                " started_at=coalesce(started_at, ?),"
                " status=CASE WHEN status IN ('pending', 'running') THEN 'interrupted'"
                " ELSE status END,"
                " reason=CASE WHEN status IN ('pending', 'running') THEN ? ELSE reason END,"
                " ended_at=CASE WHEN status IN ('pending', 'running') THEN ? ELSE ended_at END"
                " WHERE run_id=? AND key=?",
                (a.n, a.started_at, UNRECORDED_REASON, a.ended_at, run_id, a.key),
            )

    def recover(self) -> list[str]:
        """Mark runs whose process died as ``interrupted``; return their ids."""
        host = socket.gethostname()
        dead: list[str] = []
        for r in _dicts(
            self.conn.execute(
                "SELECT id, host, pid, pid_start, started_at FROM runs WHERE ended_at IS NULL"
            )
        ):
            # Only this host's runs whose own process is gone: a live run of
            # another plan in the same state directory is left alone.
            if r["host"] == host and not process_alive(r["pid"], r["pid_start"]):
                try:
                    # Ended at its last trace: an event, a heartbeat, or a write
                    # to its logs.
                    self._close_run(
                        r["id"], "interrupted", self.last_write(r["id"], r["started_at"])
                    )
                except FleetrunError:
                    # Cannot write (full or read-only disk): the record stays
                    # readable as it is; the next command that can write settles it.
                    break
                dead.append(r["id"])
        return dead

    def interrupted_attempts(self) -> list[RecordedAttempt]:
        """Attempts of this host's dead runs that were running when they died,
        with their handles (every executor kind)."""
        rows = self.conn.execute(
            "SELECT a.run_id, a.key, a.n, a.executor, a.host, a.pid, a.pgid, a.proc_start, a.job"
            " FROM attempts a JOIN runs r ON r.id = a.run_id"
            " WHERE a.outcome='interrupted' AND r.host=?",
            (socket.gethostname(),),
        ).fetchall()
        return [
            RecordedAttempt(run_id, key, n, Handle(kind, host or "", pid, pgid, start, job))
            for run_id, key, n, kind, host, pid, pgid, start, job in rows
        ]

    def dead_runs(self) -> list[str]:
        """Ids of this host's runs that were interrupted."""
        return [
            r[0]
            for r in self.conn.execute(
                "SELECT id FROM runs WHERE status='interrupted' AND host=?",
                (socket.gethostname(),),
            )
        ]

    def orphans(self) -> list[Orphan]:
        """Local process groups started by attempts of dead runs that are still alive
        (other executor kinds: their ``OrphanFinder`` with ``interrupted_attempts``)."""
        return LocalOrphanFinder().find_now(self.interrupted_attempts(), self.dead_runs())


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())
