"""The coordination file of shared pools, ``<pools dir>/pools.db`` (one per user
on the machine: ``layout.shared_pools_dir``): its layout,
the rows read from it, and its read side (``fleetrun pools``).

One SQLite database in WAL mode holds every shared pool of the user:
one row per pool (its effective limits, token bucket, Retry-After pause,
adaptive state and last change), one row per user (run, pid, process start
time, slots held), and the calls made on each adaptive pool's state since its
last snapshot. ``_shared_store.SharedStore`` changes it, one short
transaction per operation.

Why SQLite rather than a locked file of our own: a transaction is atomic
whatever happens to its process (a run SIGKILLed halfway through a take
leaves the file as it was before the take, where a half-written record would
need its own repair); WAL with ``synchronous=NORMAL`` commits without an
fsync, so an operation costs tens of microseconds (``bench/bench_shared_pool.py``),
and readers (``fleetrun pools``) never wait for writers. The journal uses the
same engine, so no new dependency or file format appears.

Times (token bucket, pause) are on the engine's clock, ``time.monotonic()``
in a real run, which every process of the machine shares.
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from fleetrun.engine._shared_state import describe, settings_from, settings_json
from fleetrun.errors import StateDirError
from fleetrun.executors import process_alive
from fleetrun.layout import POOLS_DIR_ENV, shared_pools_dir
from fleetrun.plan import AdaptiveSettings, Pool

POOLS_DB = "pools.db"
"""The coordination file's name in the pools directory."""

BUSY_TIMEOUT = 2.0
"""Seconds an operation waits for another process's transaction (each lasts
microseconds; only a stopped process holds the lock longer)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pools (
    name         TEXT PRIMARY KEY,
    concurrency  INTEGER,            -- effective cap (NULL: none)
    rate         REAL,               -- effective starts per second (NULL: none)
    burst        INTEGER NOT NULL,
    tokens       REAL NOT NULL,      -- token bucket, as of ``last``
    last         REAL NOT NULL,
    paused_until REAL NOT NULL,      -- no start before (engine clock; 0: none)
    in_use       INTEGER NOT NULL,   -- slots held, all users (= SUM(users.slots))
    settings     TEXT NOT NULL,      -- the opener's configured values (settings_json)
    opened_by    TEXT NOT NULL,      -- the run whose settings hold
    adaptive     TEXT,               -- snapshot (store_adaptive) of the state as of aseq
    aseq         INTEGER NOT NULL,   -- the last call the snapshot includes
    lseq         INTEGER NOT NULL,   -- the last call logged
    seq          INTEGER NOT NULL,   -- bumped at every change of limits or pause
    reason       TEXT NOT NULL,      -- the last change: why, by which run, when (wall)
    changed_by   TEXT NOT NULL,
    changed_at   REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS adaptive_log (
    pool TEXT NOT NULL,
    seq  INTEGER NOT NULL,
    call TEXT NOT NULL,              -- JSON: [method, arguments...]
    PRIMARY KEY (pool, seq)
);
CREATE TABLE IF NOT EXISTS users (
    pool      TEXT NOT NULL,
    run_id    TEXT NOT NULL,
    pid       INTEGER NOT NULL,
    pid_start INTEGER,               -- start time of pid, to tell it from a reused pid
    host      TEXT NOT NULL,
    slots     INTEGER NOT NULL,
    joined_at REAL NOT NULL,         -- wall clock
    PRIMARY KEY (pool, run_id, pid)
);
PRAGMA user_version = 1;
"""

COLUMNS = (
    "name, concurrency, rate, burst, tokens, last, paused_until, in_use, settings, "
    "opened_by, adaptive, aseq, lseq, seq, reason, changed_by, changed_at"
)

FULL, PAUSE, RATE = 0, 1, 2
"""What holds a start back (``PoolRow.wait``)."""


@dataclass(slots=True)
class PoolRow:
    """One shared pool as last read (a snapshot; the file is the truth)."""

    name: str
    concurrency: int | None
    rate: float | None
    burst: int
    tokens: float
    last: float
    paused_until: float
    in_use: int
    settings: str
    opened_by: str
    adaptive: str | None
    aseq: int
    lseq: int
    seq: int
    reason: str
    changed_by: str
    changed_at: float

    def wait(self, now: float) -> tuple[float, int]:
        """``(seconds, FULL|PAUSE|RATE)`` until a start may take a slot; 0 now,
        ``inf`` with FULL when every slot is held."""
        cap = self.concurrency
        if cap is not None and self.in_use >= cap:
            return float("inf"), FULL
        wait, why = 0.0, RATE
        if self.paused_until > now:
            wait, why = self.paused_until - now, PAUSE
        if self.rate:
            tokens = min(float(self.burst), self.tokens + max(0.0, now - self.last) * self.rate)
            if tokens < 1.0 and (1.0 - tokens) / self.rate > wait:
                wait, why = (1.0 - tokens) / self.rate, RATE
        return wait, why

    def take_token(self, now: float) -> None:
        """Refill the bucket up to ``now`` and take one token."""
        if self.rate:
            self.refill(now)
            self.tokens -= 1.0

    def refill(self, now: float) -> None:
        """Add the tokens earned since ``last`` at the current rate."""
        if self.rate and now > self.last:
            self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.rate)
        self.last = max(self.last, now)


@dataclass(frozen=True, slots=True)
class User:
    """One run using a shared pool, as recorded."""

    pool: str
    run_id: str
    pid: int
    pid_start: int | None
    host: str
    slots: int
    joined_at: float


@dataclass(frozen=True, slots=True)
class Config:
    """A plan's pool, as it would open a shared pool."""

    shared: str
    concurrency: int | None
    rate: float | None
    burst: int
    settings: str


@functools.lru_cache(maxsize=64)
def settings_of(text: str) -> tuple[int | None, float | None, int, AdaptiveSettings | None]:
    """``settings_from``, remembered (every operation on a pool reads its settings)."""
    return settings_from(text)


SCHEMA_VERSION = 1
"""``PRAGMA user_version`` of a coordination file with ``_SCHEMA``."""


@functools.cache
def _layout() -> dict[str, tuple[tuple[str, str, int, int], ...]]:
    """Each table of ``_SCHEMA`` and its columns (name, type, not null, key rank),
    as SQLite reports them: the one description a file's tables are checked against."""
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(_SCHEMA)
        return _tables(db)
    finally:
        db.close()


def _tables(db: sqlite3.Connection) -> dict[str, tuple[tuple[str, str, int, int], ...]]:
    names = db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    ).fetchall()
    return {
        name: tuple(
            (c[1], c[2].upper(), c[3], c[5])
            for c in db.execute(f"PRAGMA table_info({_quoted(name)})").fetchall()
        )
        for (name,) in names
    }


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _schema_problem(db: sqlite3.Connection) -> str | None:
    """What makes the database on ``db`` other than a coordination file (None:
    fleetrun's, or empty, or partly made by a run that stopped while creating it).
    Reads only: a file that is not fleetrun's is never changed."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    objects = db.execute(
        "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_autoindex_%'"
    ).fetchall()
    others = sorted(f"{t} {n}" for t, n in objects if t != "table")
    tables = _tables(db)
    layout = _layout()
    wrong = sorted(n for n, cols in tables.items() if layout.get(n) != cols)
    if version not in (0, SCHEMA_VERSION):
        return (
            f"it has schema version {version}, not {SCHEMA_VERSION} "
            "(another version of fleetrun, or another program)"
        )
    if version == SCHEMA_VERSION and len(tables) < len(layout):
        wrong.extend(f"no table {n}" for n in layout if n not in tables)
    if not wrong and not others:
        return None
    shown = [
        f"table {n}({', '.join(c[0] for c in tables[n])})" if n in tables else n for n in wrong
    ]
    listed = ", ".join([*shown, *others])
    if len(listed) > 120:
        listed = listed[:117] + "..."
    return f"it is an SQLite database that is not fleetrun's ({listed})"


def _initialise(db: sqlite3.Connection) -> None:
    """Create the tables of a file with none or some of them (one transaction:
    two runs creating it at once make it once)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        problem = _schema_problem(db)  # again, under the lock
        if problem is not None:
            raise _NotOurs(problem)
        for statement in _statements(_SCHEMA):
            db.execute(statement)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _statements(script: str) -> list[str]:
    """The statements of ``script``, one a line or more (``executescript`` would
    commit the transaction they must run in)."""
    out, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            out.append(pending)
            pending = ""
    return out


class _NotOurs(Exception):
    """The file is a database of another program or layout (the message says how)."""


def open_pools_db(path: Path, readonly: bool = False) -> sqlite3.Connection:
    """Open (and, unless ``readonly``, create) the coordination file at ``path``;
    a ``StateDirError`` naming the file and the fix when it cannot be used,
    among them a database that is not fleetrun's (its tables are checked
    first, and such a file is left as it is)."""
    db: sqlite3.Connection | None = None
    try:
        if readonly:
            uri = f"{path.absolute().as_uri()}?mode=ro"
            db = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT)
            problem = _schema_problem(db)
            if problem is not None:
                raise _NotOurs(problem)
            return db
        # Owner-only, never through a link, like the journal.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
        db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
        # Checked before anything is written (WAL mode rewrites the header).
        problem = _schema_problem(db)
        if problem is not None:
            raise _NotOurs(problem)
        db.execute("PRAGMA journal_mode = WAL")
        # WAL with NORMAL: a commit does not fsync. The file holds who uses what
        # now, nothing that must outlive a power cut.
        db.execute("PRAGMA synchronous = NORMAL")
        if db.execute("PRAGMA user_version").fetchone()[0] == 0:
            _initialise(db)
        # From here on ``SharedStore._write`` waits for the lock itself, finer
        # than SQLite's busy handler (which sleeps a millisecond or more).
        db.execute("PRAGMA busy_timeout = 0")
        return db
    except _NotOurs as e:
        if db is not None:
            db.close()
        raise StateDirError(
            f"cannot {'read' if readonly else 'use'} the shared pools file {path}: {e}; "
            f"move it away, or {_pools_dir_fix(path.parent, 'another directory')}"
        ) from None
    except (OSError, sqlite3.Error) as e:
        if db is not None:
            db.close()
        raise StateDirError(_open_problem(path, e, readonly)) from None


def _open_problem(path: Path, e: OSError | sqlite3.Error, readonly: bool) -> str:
    """Why the coordination file at ``path`` could not be opened, and the fix
    that fits the cause: the directory first (the message ``fleetrun pools``
    gives for it), then the file itself, then what the error says."""
    pools_dir = path.parent
    problem = _dir_problem(pools_dir)
    if problem is None and not pools_dir.is_dir():
        problem = "it does not exist and could not be made"
    if problem is not None:
        return _dir_message(pools_dir, problem)
    what = f"cannot {'read' if readonly else 'use'} the shared pools file {path}"
    elsewhere = _pools_dir_fix(pools_dir, "another directory")
    code = getattr(e, "errno", None)
    sqlite_code = getattr(e, "sqlite_errorcode", None)
    if path.is_symlink():
        # Never followed (as the journal), so that a link cannot aim a write elsewhere.
        return f"{what}: it is a symbolic link; remove the link, or {elsewhere}"
    if path.is_dir():
        return f"{what}: it is a directory; move it away, or {elsewhere}"
    if path.exists() and not path.is_file():
        return f"{what}: it is not a regular file; move it away, or {elsewhere}"
    if sqlite_code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
        return (
            f"{what}: {e} (damaged, or another program's file); "
            f"remove it while no run uses it (it holds only who uses what now), or {elsewhere}"
        )
    if sqlite_code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return (
            f"{what}: another process holds it locked ({e}); try again once that process "
            f"ends (`fleetrun pools` lists the runs using it), or {elsewhere}"
        )
    if code in (errno.EACCES, errno.EPERM) or sqlite_code in (
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_AUTH,
    ):
        return (
            f"{what}: permission denied; make it and {pools_dir} readable and writable "
            f"by you, or {_pools_dir_fix(pools_dir, 'a writable directory')}"
        )
    if code in (errno.ENOSPC, errno.EDQUOT) or sqlite_code == sqlite3.SQLITE_FULL:
        return f"{what}: no space left on its device; free some, or {elsewhere}"
    if code == errno.EROFS:
        return f"{what}: its file system is read-only; {elsewhere}"
    return (
        f"{what}: {getattr(e, 'strerror', None) or e}; check {pools_dir}'s permissions and "
        f"free space, or {_pools_dir_fix(pools_dir, 'a writable directory')}"
    )


def _dir_message(pools_dir: Path, problem: str) -> str:
    """The one line for a pools directory no run can use (``_dir_problem``)."""
    return (
        f"cannot use the shared pools directory {pools_dir}: {problem}; "
        f"{_pools_dir_fix(pools_dir, 'a writable directory')}"
    )


def _pools_dir_fix(pools_dir: Path, where: str) -> str:
    """The fix that changes ``pools_dir``: it usually comes from the
    environment, so say so, or the user looks for a setting in the plan."""
    given = os.environ.get(POOLS_DIR_ENV)
    if given and Path(given) == pools_dir:
        return f"${POOLS_DIR_ENV} is {given!r}: point it at {where}"
    if pools_dir == shared_pools_dir(create=False):
        return f"set ${POOLS_DIR_ENV} to {where}"
    return f"use {where}"


@dataclass(frozen=True, slots=True)
class SharedPoolUser:
    """A run that uses a shared pool: ``alive`` False when its process is gone
    (its slots come back at the pool's next start)."""

    run_id: str
    pid: int
    host: str
    slots: int
    since: float  # wall clock
    alive: bool


@dataclass(frozen=True, slots=True)
class SharedPoolInfo:
    """A shared pool as ``fleetrun pools`` shows it.

    ``concurrency`` and ``rate`` are the effective limits now (None: none);
    ``in_use``: the slots held by runs that are alive; ``gone_slots``: those
    still held by runs that are gone (the pool's next start takes them back);
    ``paused_for``: seconds until its Retry-After pause ends (0: not paused);
    ``settings``: the configured values that hold, in words, and the run that
    opened the pool with them; ``last_change``: why, by which run, when (wall
    clock; ``""`` and 0 before any).
    """

    name: str
    concurrency: int | None
    in_use: int
    gone_slots: int
    rate: float | None
    paused_for: float
    settings: str
    opened_by: str
    last_change: str
    changed_by: str
    changed_at: float
    users: tuple[SharedPoolUser, ...]


def check_pools_dir(pools_dir: Path) -> None:
    """Make sure the shared pools' file in ``pools_dir`` can be used (created if
    missing): a ``StateDirError`` naming it and the fix otherwise. A run checks
    before it is recorded, so an unusable directory refuses it cleanly."""
    open_pools_db(pools_dir / POOLS_DB).close()


def _dir_problem(pools_dir: Path) -> str | None:
    """Why a run could not make its coordination file in ``pools_dir`` (None: it
    could, or the file is there), found without writing anything: a reader
    creates nothing. A missing directory is judged by the nearest one above it
    that exists, which a run would make it in."""
    if pools_dir.is_dir():
        db = pools_dir / POOLS_DB
        return None if db.exists() or db.is_symlink() else _unwritable(pools_dir, "it")
    if pools_dir.exists() or pools_dir.is_symlink():
        return "it is not a directory"
    above = pools_dir.absolute().parent
    while not above.exists():
        above = above.parent
    if not above.is_dir():
        return f"{above} is not a directory"
    return _unwritable(above, f"it does not exist, and {above}")


def _unwritable(directory: Path, subject: str) -> str | None:
    """Why no file can be made in the existing ``directory`` (None: one can);
    ``subject`` names it in the answer."""
    try:
        fs = os.statvfs(directory)
    except OSError as e:
        return f"{directory}: {e.strerror}"
    if fs.f_flag & os.ST_RDONLY:
        return f"{subject} is on a read-only file system"
    if fs.f_blocks == 0:
        # /proc, /sys and their kind: a pseudo file system holds no files of ours.
        return f"{subject} cannot hold files (a pseudo file system)"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"{subject} is not writable"
    return None


def read_shared_pools(pools_dir: Path) -> list[SharedPoolInfo]:
    """Every shared pool in ``pools_dir`` with its users, read-only (``[]``
    when no run ever used one)."""
    path = pools_dir / POOLS_DB
    if not path.exists():
        problem = _dir_problem(pools_dir)
        if problem is not None:
            raise StateDirError(_dir_message(pools_dir, problem))
        return []
    db = open_pools_db(path, readonly=True)
    try:
        tables = db.execute("SELECT name FROM sqlite_master WHERE name = 'users'").fetchall()
        if not tables:
            return []  # being created by a run right now
        host = socket.gethostname()
        now = time.monotonic()  # the clock the runs' pauses are on
        out = []
        for r in db.execute(f"SELECT {COLUMNS} FROM pools ORDER BY name").fetchall():
            row = PoolRow(*r)
            users = tuple(
                SharedPoolUser(
                    u.run_id,
                    u.pid,
                    u.host,
                    u.slots,
                    u.joined_at,
                    u.host != host or process_alive(u.pid, u.pid_start),
                )
                for u in (
                    User(*x)
                    for x in db.execute(
                        "SELECT * FROM users WHERE pool = ? ORDER BY joined_at", (row.name,)
                    ).fetchall()
                )
            )
            gone = sum(u.slots for u in users if not u.alive)
            out.append(
                SharedPoolInfo(
                    row.name,
                    row.concurrency,
                    max(0, row.in_use - gone),
                    gone,
                    row.rate,
                    max(0.0, row.paused_until - now),
                    describe(row.settings),
                    row.opened_by,
                    row.reason,
                    row.changed_by,
                    row.changed_at,
                    users,
                )
            )
        return out
    except sqlite3.Error as e:
        raise StateDirError(f"cannot read the shared pools file {path}: {e}") from None
    finally:
        db.close()


def config_of(pool: Pool) -> Config:
    """The ``Config`` of a plan's shared pool."""
    assert pool.shared is not None
    a = pool.adaptive
    settings = a if isinstance(a, AdaptiveSettings) else AdaptiveSettings() if a else None
    return Config(
        pool.shared,
        pool.concurrency,
        pool.rate,
        pool.burst,
        settings_json(pool.concurrency, pool.rate, pool.burst, settings),
    )
