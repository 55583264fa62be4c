"""The SQLite file behind the journal: connection settings, schema, migrations.

The schema version lives in ``PRAGMA user_version``; ``MIGRATIONS[i]`` brings a
database from version ``i`` to ``i + 1``. Opening a database newer than this
code knows is refused rather than guessed at.

Durability: WAL with ``synchronous=NORMAL``. A committed transaction survives a
crash of the process (SIGKILL) because it is in the WAL file the moment
``COMMIT`` returns; only a power loss can drop the last few commits, and even
then the database stays consistent. Several runs (of different plans) write at
once: each waits up to ``BUSY_TIMEOUT`` seconds for another's transaction.

Privacy: ``state.db`` is created 0600 before SQLite opens it (SQLite gives its
``-wal`` and ``-shm`` files the database file's mode), and neither it nor those
two may be symbolic links. It is the one place that keeps published outputs
exactly (``exact_outputs``), for retries; every other place shows them redacted.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from fleetrun.errors import StateDirError, StateError
from fleetrun.layout import DB_NAME as DB_NAME
from fleetrun.layout import RUNS_DIR as RUNS_DIR
from fleetrun.state._fs import check_not_links, make_private, open_private, prepare_state_dir

_V1 = """
CREATE TABLE runs (
    id            TEXT PRIMARY KEY,
    parent_id     TEXT REFERENCES runs(id),
    plan_path     TEXT NOT NULL,
    plan_name     TEXT NOT NULL,
    plan_hash     TEXT NOT NULL,
    plan_snapshot TEXT NOT NULL,
    mode          TEXT NOT NULL,
    kind          TEXT NOT NULL,          -- apply | retry | resume
    options       TEXT NOT NULL,          -- JSON
    started_at    REAL NOT NULL,
    ended_at      REAL,
    status        TEXT NOT NULL,          -- running | succeeded | failed | interrupted
    counts        TEXT,                   -- JSON: final state -> number of instances
    user          TEXT NOT NULL,
    host          TEXT NOT NULL,
    pid           INTEGER NOT NULL,
    pid_start     INTEGER                 -- process start time (clock ticks since boot)
);
CREATE INDEX runs_by_plan ON runs(plan_path, started_at);

CREATE TABLE instances (
    run_id        TEXT NOT NULL REFERENCES runs(id),
    key           TEXT NOT NULL,          -- task@target, or task when unfanned
    node          INTEGER NOT NULL,
    task          TEXT NOT NULL,
    target        TEXT,
    status        TEXT NOT NULL,
    command_hash  TEXT,
    exit_code     INTEGER,
    outputs       TEXT NOT NULL DEFAULT '{}',   -- JSON
    reason        TEXT NOT NULL DEFAULT '',
    attempts      INTEGER NOT NULL DEFAULT 0,
    started_at    REAL,
    ended_at      REAL,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;

CREATE TABLE attempts (
    run_id        TEXT NOT NULL,
    key           TEXT NOT NULL,
    n             INTEGER NOT NULL,
    started_at    REAL NOT NULL,
    ended_at      REAL,
    exit_code     INTEGER,
    signal        INTEGER,
    timed_out     INTEGER NOT NULL DEFAULT 0,
    outcome       TEXT,                   -- succeeded | failed | retrying | cancelled | interrupted
    log_path      TEXT NOT NULL,
    retry_reason  TEXT,
    pid           INTEGER,
    pgid          INTEGER,
    proc_start    INTEGER,                -- start time of pid, to tell it from a reused pid
    PRIMARY KEY (run_id, key, n),
    FOREIGN KEY (run_id, key) REFERENCES instances(run_id, key)
) WITHOUT ROWID;

CREATE TABLE events (
    run_id        TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    at            REAL NOT NULL,
    type          TEXT NOT NULL,
    data          TEXT NOT NULL,          -- JSON of the event's fields
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
"""

# Version 2: whether the engine took an attempt's ending as a throttle signal
# (``AttemptEnded.throttled``). Existing attempts take it from their journaled
# event where it carries the field, else from the rule the report used before
# the engine recorded its decision: a retry caused by ``on.exit``/``on.output``.
_V2 = """
ALTER TABLE attempts ADD COLUMN throttled INTEGER NOT NULL DEFAULT 0;
UPDATE attempts SET throttled = 1
 WHERE outcome = 'retrying'
   AND (retry_reason LIKE 'exit %' OR retry_reason LIKE 'output matched%');
UPDATE attempts SET throttled = coalesce(e.flag, attempts.throttled)
  FROM (SELECT run_id, json_extract(data, '$.key') AS key,
               json_extract(data, '$.attempt') AS n,
               json_extract(data, '$.throttled') AS flag
          FROM events WHERE type = 'AttemptEnded') AS e
 WHERE attempts.run_id = e.run_id AND attempts.key = e.key AND attempts.n = e.n
"""

# An attempt's handle: its executor kind, the host it ran on, a cluster job's key.
_V3 = """
ALTER TABLE attempts ADD COLUMN executor TEXT NOT NULL DEFAULT 'local';
ALTER TABLE attempts ADD COLUMN host TEXT;
ALTER TABLE attempts ADD COLUMN job TEXT
"""

# Published outputs exactly as the task wrote them (secrets included), for the
# next retry to hand to dependents; ``instances.outputs`` holds the redacted
# form that is shown. A separate table, so that reading instances never
# carries the exact values along.
_V4 = """
CREATE TABLE exact_outputs (
    run_id        TEXT NOT NULL,
    key           TEXT NOT NULL,
    outputs       TEXT NOT NULL,          -- JSON, unredacted
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID
"""

# When an attempt's instance became ready and why it was queued until the
# attempt started (``AttemptStarted.ready_at`` / ``queued_reason``). Existing
# attempts take ``ready_at`` from their journaled event where it carries the
# field; their reason stays NULL (not recorded).
_V5 = """
ALTER TABLE attempts ADD COLUMN ready_at REAL;
ALTER TABLE attempts ADD COLUMN queued_reason TEXT;
UPDATE attempts SET ready_at = e.ready
  FROM (SELECT run_id, json_extract(data, '$.key') AS key,
               json_extract(data, '$.attempt') AS n,
               json_extract(data, '$.ready_at') AS ready
          FROM events WHERE type = 'AttemptStarted') AS e
 WHERE attempts.run_id = e.run_id AND attempts.key = e.key AND attempts.n = e.n
   AND e.ready IS NOT NULL
"""

# When the run's journal writer last showed it alive: a heartbeat written every
# ``HEARTBEAT`` seconds (``state._writer``) while the run goes, so a run killed
# while its commands are quiet still ends, on recovery, within one heartbeat of
# the kill. Existing runs have none (their end is their last event or file write).
_V6 = """
ALTER TABLE runs ADD COLUMN alive_at REAL
"""

MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3, _V4, _V5, _V6)
"""``MIGRATIONS[i]`` upgrades schema version ``i`` to ``i + 1``."""

SCHEMA_VERSION = len(MIGRATIONS)


BUSY_TIMEOUT = 30.0
"""Seconds a connection waits for another run's write transaction."""


def connect(path: Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """Open (creating and migrating if needed) the journal database at ``path``.

    ``path.parent`` (the state directory) must exist; see ``prepare_state_dir``.
    """
    if not path.parent.is_dir():
        prepare_state_dir(path.parent)
    sidecars = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
    check_not_links(*sidecars)
    if not path.exists():
        with contextlib.suppress(FileExistsError):
            os.close(open_private(path, os.O_RDWR, new=True))
    make_private(*sidecars)
    try:
        conn = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=check_same_thread
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        _migrate(conn, path)
    except sqlite3.DatabaseError as e:
        if not_a_journal(e):
            raise unusable_journal(path, e) from e
        raise journal_error("opening", path, e) from e
    return conn


def not_a_journal(e: sqlite3.DatabaseError) -> bool:
    """Whether SQLite refused the file itself ("file is not a database", "database
    disk image is malformed"), not an operation on it (locked, read-only, full)."""
    return type(e) is sqlite3.DatabaseError


def unusable_journal(path: Path, e: BaseException) -> StateDirError:
    """The error for a journal file that is corrupt or no journal at all: the state
    directory cannot be used as it is (exit 2, as for an unsafe state directory)."""
    return StateDirError(
        f"cannot read the journal {path}: {e}; move it aside (the next run makes "
        "a new one) or choose another --state-dir"
    )


def journal_error(doing: str, path: Path, e: BaseException) -> StateError:
    """One line for a failed journal operation: the cause, the path, what to do."""
    text = str(e)
    if "disk is full" in text or "disk I/O error" in text or getattr(e, "errno", None) == 28:
        hint = (
            "free space on its filesystem (the attempts that ran are reconciled from "
            "their logs by the next fleetrun command), or choose another --state-dir"
        )
    elif "readonly" in text or "read-only" in text:
        hint = "make it writable, or choose another --state-dir"
    elif "locked" in text or "busy" in text:
        hint = f"another fleetrun held it for over {BUSY_TIMEOUT:g}s; try again"
    else:
        hint = "`fleetrun history` shows what is on record"
    return StateError(f"{doing} the journal {path} failed: {text}; {hint}")


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back the open transaction, if SQLite has not ended it already.

    A failed ``COMMIT`` (``database or disk is full``) may leave no transaction
    open; a plain ``ROLLBACK`` would then raise its own error and hide the cause.
    """
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise StateDirError(
            f"{path} has journal schema version {version}, newer than this fleetrun "
            f"understands ({SCHEMA_VERSION}); upgrade fleetrun"
        )
    if version == SCHEMA_VERSION:
        return
    # BEGIN IMMEDIATE serializes concurrent first openers; re-read the version
    # inside the transaction so only one of them migrates.
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        for i in range(version, SCHEMA_VERSION):
            for stmt in MIGRATIONS[i].split(";"):
                if stmt.strip():
                    conn.execute(stmt)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise
