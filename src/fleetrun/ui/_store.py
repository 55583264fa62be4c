"""The record as the web application reads it: one ``Store`` per state directory.

A ``Store`` hands each worker thread its own read-only connection to the
journal (SQLite connections are not shared between threads), opened so that
it sees what live runs commit: ``mode=ro`` reads the database and its WAL,
including commits made after it opened. (``JournalReader`` alone would read a
journal without a WAL with ``immutable=1``, a snapshot that never changes,
which suits a command that reads once and exits, not a page that follows
runs.) Only where that cannot be opened (a read-only directory without the
``-shm`` file) does it fall back to the snapshot, and says so.

Nothing here writes the record: the connections cannot, and recovery is
computed by the reader as the read commands compute it.

A journal that does not exist yet (``fleetrun apply --ui`` starts beside a
first run) or is newer than this fleetrun reads as a ``problem`` line, never an
exception, so one bad state directory does not take the pages of the others.
"""

from __future__ import annotations

import sqlite3
import threading
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar

from fleetrun.errors import RunNotFoundError, StateDirError, StateError
from fleetrun.layout import DB_NAME
from fleetrun.state import SCHEMA_VERSION, JournalReader, RunRecord

T = TypeVar("T")


class LiveReader(JournalReader):
    """A ``JournalReader`` whose connection follows the journal as runs write it."""

    live: bool = True
    """False when the journal could only be read as a snapshot (no live updates)."""

    def __init__(self, state_dir: Path, *, any_thread: bool = False) -> None:
        """Open ``state_dir``'s journal; ``any_thread``: the connection may be used
        from any thread (one at a time: the caller serializes)."""
        self.state_dir = state_dir
        self.db_path = state_dir / DB_NAME
        if not self.db_path.is_file():
            raise RunNotFoundError(f"no journal in {state_dir}: no run has been recorded there")
        uri = "file:" + urllib.parse.quote(str(self.db_path.absolute()))
        try:
            conn = sqlite3.connect(
                f"{uri}?mode=ro", uri=True, timeout=30.0, check_same_thread=not any_thread
            )
            conn.execute("PRAGMA user_version").fetchone()
        except sqlite3.DatabaseError:
            # A read-only directory without the -shm file SQLite needs for WAL.
            conn = sqlite3.connect(
                f"{uri}?mode=ro&immutable=1", uri=True, check_same_thread=not any_thread
            )
            self.live = False
            self.wal_unread = Path(f"{self.db_path}-wal").exists()
        self.conn = conn
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.DatabaseError as e:
            conn.close()
            raise StateDirError(
                f"cannot read the journal {self.db_path}: {e}; move it aside or "
                "name another state directory with --state-dir"
            ) from e
        if version > SCHEMA_VERSION:
            conn.close()
            raise StateError(
                f"{self.db_path} was written by a newer fleetrun (journal schema version "
                f"{version}; this one reads up to {SCHEMA_VERSION}): upgrade fleetrun to see it"
            )
        if version == 0:
            conn.close()
            raise RunNotFoundError(f"no journal in {state_dir}: no run has been recorded there")

    def data_version(self) -> int:
        """SQLite's ``data_version``: it changes whenever another connection commits."""
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])


def check_journal(state_dir: Path) -> None:
    """Open ``state_dir``'s journal once, as ``fleetrun ui`` does at start:
    ``StateDirError`` (exit 2, naming the file) when it is not a journal at all.
    A journal from a newer fleetrun is let through: its pages say so."""
    try:
        LiveReader(state_dir).close()
    except StateDirError:
        raise
    except StateError:
        pass


class Store:
    """One state directory's journal, for many threads, and a cache of what was
    computed from it (keyed by what the computation depends on)."""

    def __init__(self, state_dir: Path, index: int = 0) -> None:
        self.state_dir = state_dir
        self.index = index
        self._local = threading.local()
        self._cache: OrderedDict[Hashable, Any] = OrderedDict()
        self._cache_lock = threading.Lock()

    @property
    def has_journal(self) -> bool:
        """Whether the journal file exists (it may still be unreadable)."""
        return (self.state_dir / DB_NAME).is_file()

    def reader(self) -> LiveReader:
        """This thread's reader (opened on first use; ``StateError`` when the
        journal is missing, unreadable or newer than this fleetrun)."""
        reader: LiveReader | None = getattr(self._local, "reader", None)
        if reader is None:
            reader = LiveReader(self.state_dir)
            self._local.reader = reader
        return reader

    def problem(self) -> str | None:
        """Why this journal cannot be shown (one line), or None."""
        try:
            self.reader()
        except StateError as e:
            return str(e)
        return None

    def find(self, run_id: str) -> RunRecord | None:
        """The run ``run_id`` (exact id) when it is on record here."""
        try:
            reader = self.reader()
        except StateError:
            return None
        row = reader.conn.execute("SELECT 1 FROM runs WHERE id=?", (run_id,)).fetchone()
        return None if row is None else reader.run(run_id)

    def fingerprint(self, run_id: str) -> tuple[Any, ...]:
        """What changes whenever run ``run_id``'s record does: its last event's
        number, its end and status (a run whose process died reads differently
        once it is gone, so liveness is part of it for a run not ended), and
        the runs that retry it (its page links them)."""
        reader = self.reader()
        seq = reader.conn.execute(
            "SELECT max(seq) FROM events WHERE run_id=?", (run_id,)
        ).fetchone()[0]
        row = reader.conn.execute(
            "SELECT status, ended_at FROM runs WHERE id=?", (run_id,)
        ).fetchone()
        if row is None:
            raise RunNotFoundError(f"run {run_id} is not on record in {self.state_dir}")
        live = reader.run(run_id).status if row[1] is None else row[0]
        children = tuple(
            r[0] for r in reader.conn.execute("SELECT id FROM runs WHERE parent_id=?", (run_id,))
        )
        return (seq, row[0], row[1], live, children)

    def cached(self, key: Hashable, compute: Callable[[], T], size: int = 64) -> T:
        """``compute()``, remembered under ``key`` (the ``size`` latest kept)."""
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                value: T = self._cache[key]
                return value
        value = compute()
        with self._cache_lock:
            self._cache[key] = value
            while len(self._cache) > size:
                self._cache.popitem(last=False)
        return value


class Stores:
    """The state directories the application serves, in the order given."""

    def __init__(self, dirs: list[Path]) -> None:
        self.all = [Store(d, i) for i, d in enumerate(dirs)]

    def locate(self, run_id: str) -> tuple[Store, RunRecord]:
        """The store holding run ``run_id`` and its record; ``RunNotFoundError``."""
        for store in self.all:
            run = store.find(run_id)
            if run is not None:
                return store, run
        raise RunNotFoundError(f"run {run_id} is not on record (pruned, or never recorded here)")
