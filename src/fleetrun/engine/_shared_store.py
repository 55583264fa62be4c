"""Shared pools' operations on their coordination file (``_shared_file``).

Each operation is one short transaction: ``BEGIN IMMEDIATE`` (the write lock,
so a check and a take cannot interleave with another process's), a few
statements on small tables, ``COMMIT``. SQLite's own busy handler sleeps at
least a millisecond when the lock is taken; the lock is held for
microseconds, so ``_write`` retries on its own, from 20 µs up.

Slots of dead runs come back: a user row records the pid and the process's
start time, and a user whose process is gone (``executors.process_alive``,
the rule the journal's recovery uses: a pid alone may be reused, a pid and its
start time may not; a user on another host is never judged from here) has its
slots taken back at the pool's next start by any run: ``take`` looks for dead
users when its caller says it is time (``_shared.RECLAIM_EVERY`` apart per run,
so a start does not read the process table each time), and so do joining a
pool, a run that finds it full, and leaving it.

The adaptive state is shared as a snapshot plus the calls made on it since
(``adaptive_log``: method and arguments, in order). Every run keeps a replica
in memory and, inside each transaction, applies the calls it has not seen
yet, then its own, which it logs: the algorithm is deterministic (its clock
is passed in), so every replica goes through the same states, and an
operation costs the same whatever the size of the state. Every
``SNAPSHOT_EVERY`` calls the state is written whole and the log behind it
dropped; a run that joins, or that fell behind the snapshot, starts from it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fleetrun.engine._adaptive import AdaptiveLimit, Change
from fleetrun.engine._shared_file import (
    BUSY_TIMEOUT,
    COLUMNS,
    POOLS_DB,
    Config,
    PoolRow,
    User,
    open_pools_db,
    settings_of,
)
from fleetrun.engine._shared_state import load_adaptive, store_adaptive
from fleetrun.executors import process_alive, process_start_time

MAX_PAUSE = 3600.0
"""A pause found further away than this when a pool reopens is not kept (the
machine restarted since, and the clock with it)."""

SNAPSHOT_EVERY = 256
"""Calls on an adaptive state between two snapshots of it."""

Call = tuple[str, tuple[Any, ...]]
"""A call on an ``AdaptiveLimit``: a method's name and its arguments (JSON values)."""


class SharedStore:
    """This run's connection to the coordination file (see the module doc).

    Every method is one transaction of microseconds: the engine calls them on
    its event loop, as it decides, because no other part of a start may wait.
    """

    def __init__(self, pools_dir: Path, run_id: str) -> None:
        self.path = pools_dir / POOLS_DB
        self.run_id = run_id
        self.pid = os.getpid()
        self.pid_start = process_start_time(self.pid)
        self.host = socket.gethostname()
        self.db = open_pools_db(self.path)
        self.joined: set[str] = set()
        # Per adaptive pool: this run's replica of its state, and the last call applied.
        self._replicas: dict[str, tuple[AdaptiveLimit, int]] = {}

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self.db
        pause, deadline = 20e-6, time.monotonic() + BUSY_TIMEOUT
        while True:
            try:
                db.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError:
                # Another process holds the write lock (for microseconds).
                if time.monotonic() > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 1e-3)
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _row(self, name: str) -> PoolRow | None:
        r = self.db.execute(f"SELECT {COLUMNS} FROM pools WHERE name = ?", (name,)).fetchone()
        return None if r is None else PoolRow(*r)

    def _save(self, row: PoolRow) -> None:
        self.db.execute(
            "UPDATE pools SET concurrency = ?, rate = ?, burst = ?, tokens = ?, last = ?, "
            "paused_until = ?, in_use = ?, settings = ?, opened_by = ?, adaptive = ?, aseq = ?, "
            "lseq = ?, seq = ?, reason = ?, changed_by = ?, changed_at = ? WHERE name = ?",
            (
                row.concurrency, row.rate, row.burst, row.tokens, row.last, row.paused_until,
                row.in_use, row.settings, row.opened_by, row.adaptive, row.aseq, row.lseq,
                row.seq, row.reason, row.changed_by, row.changed_at, row.name,
            ),
        )  # fmt: skip

    def _changed(self, row: PoolRow, reason: str) -> None:
        row.seq += 1
        row.reason = reason
        row.changed_by = self.run_id
        row.changed_at = time.time()

    # -- joining and leaving ------------------------------------------------------------

    def join(self, cfg: Config, now: float) -> tuple[PoolRow, bool]:
        """Become a user of ``cfg.shared``; open it with this plan's settings when
        no live run uses it. Returns the pool and whether this run opened it."""
        with self._write() as db:
            self._reclaim(cfg.shared, everyone=True)
            row = self._row(cfg.shared)
            users = db.execute("SELECT COUNT(*) FROM users WHERE pool = ?", (cfg.shared,))
            opened = row is None or users.fetchone()[0] == 0
            if opened:
                row = self._open(cfg, row, now)
            assert row is not None
            db.execute(
                "INSERT OR REPLACE INTO users VALUES (?, ?, ?, ?, ?, 0, ?)",
                (cfg.shared, self.run_id, self.pid, self.pid_start, self.host, time.time()),
            )
        self.joined.add(cfg.shared)
        return row, opened

    def _open(self, cfg: Config, row: PoolRow | None, now: float) -> PoolRow:
        """Inside a write: (re)open pool ``cfg.shared`` with this plan's settings.
        An idle pool's settings and what adapted to them go; its bucket's tokens
        and a pause still running stay (the provider remembers them)."""
        if row is None:
            row = PoolRow(
                cfg.shared, cfg.concurrency, cfg.rate, cfg.burst, float(cfg.burst), now,
                0.0, 0, cfg.settings, self.run_id, None, 0, 0, 0, "", "", 0.0,
            )  # fmt: skip
            self.db.execute(
                f"INSERT INTO pools ({COLUMNS}) VALUES ({', '.join('?' * 17)})",
                (
                    row.name, row.concurrency, row.rate, row.burst, row.tokens, row.last,
                    row.paused_until, row.in_use, row.settings, row.opened_by, row.adaptive,
                    row.aseq, row.lseq, row.seq, row.reason, row.changed_by, row.changed_at,
                ),
            )  # fmt: skip
        else:
            row.refill(now)
            row.tokens = min(row.tokens, float(cfg.burst))
            if not now < row.paused_until <= now + MAX_PAUSE:
                row.paused_until = 0.0  # over, or from before the machine restarted
            row.burst, row.settings, row.opened_by = cfg.burst, cfg.settings, self.run_id
        # An adaptive pool starts where its algorithm starts (which may be below
        # the configured ceilings), from a fresh state that every replica reloads
        # (the snapshot is newer than any of them).
        settings = settings_of(cfg.settings)[3]
        limit = (
            None if settings is None else AdaptiveLimit(settings, cfg.rate, cfg.concurrency, now)
        )
        row.concurrency = cfg.concurrency if limit is None else limit.concurrency
        row.rate = cfg.rate if limit is None else limit.rate
        row.adaptive = None if limit is None else store_adaptive(limit)
        row.lseq += 1
        row.aseq = row.lseq
        self.db.execute("DELETE FROM adaptive_log WHERE pool = ?", (row.name,))
        row.in_use = 0
        self._changed(row, "opened")
        self._save(row)
        return row

    def leave(self) -> None:
        """Give back every slot this run still holds and stop being a user (the
        slots of dead users come back too)."""
        if not self.joined:
            return
        with self._write() as db:
            for name in self.joined:
                self._reclaim(name, everyone=True)
                r = db.execute(
                    "SELECT slots FROM users WHERE pool = ? AND run_id = ? AND pid = ?",
                    (name, self.run_id, self.pid),
                ).fetchone()
                if r is not None and r[0]:
                    db.execute(
                        "UPDATE pools SET in_use = MAX(0, in_use - ?) WHERE name = ?", (r[0], name)
                    )
                db.execute(
                    "DELETE FROM users WHERE pool = ? AND run_id = ? AND pid = ?",
                    (name, self.run_id, self.pid),
                )
        self.joined.clear()

    def close(self) -> None:
        """Leave every pool (best effort) and close the file."""
        with contextlib.suppress(sqlite3.Error):
            self.leave()
        self.db.close()

    def _reclaim(self, name: str, everyone: bool = False) -> int:
        """Inside a write: drop the users of ``name`` whose process is gone (with
        slots only, unless ``everyone``); their slots come back. Returns the count."""
        db = self.db
        where = "" if everyone else " AND slots > 0"
        users = db.execute(f"SELECT * FROM users WHERE pool = ?{where}", (name,)).fetchall()
        gone = [
            u
            for u in (User(*x) for x in users)
            if u.host == self.host and u.pid != self.pid and not process_alive(u.pid, u.pid_start)
        ]
        for u in gone:
            db.execute(
                "DELETE FROM users WHERE pool = ? AND run_id = ? AND pid = ?",
                (name, u.run_id, u.pid),
            )
            if u.slots:
                db.execute(
                    "UPDATE pools SET in_use = MAX(0, in_use - ?) WHERE name = ?", (u.slots, name)
                )
        return len(gone)

    def reclaim(self, name: str) -> PoolRow | None:
        """Take back the slots of dead users of ``name``; the pool afterwards."""
        with self._write():
            self._reclaim(name)
            return self._row(name)

    # -- starts ---------------------------------------------------------------------------

    def read(self, name: str) -> PoolRow | None:
        """The pool as it is now (a read: no lock taken)."""
        return self._row(name)

    def take(
        self,
        names: tuple[str, ...],
        now: float,
        calls: list[list[Call]],
        sweep: tuple[str, ...] = (),
    ) -> tuple[bool, list[PoolRow], list[list[Change]]]:
        """One slot and one token in each of ``names``, or nothing when one of them
        is full, paused or out of tokens; each adaptive pool's state gets its
        ``calls`` (a start). The pools named in ``sweep`` first take back the
        slots of their dead users. Returns whether it took, the pools, and the
        changes the calls decided in each."""
        with self._write() as db:
            for name in sweep:
                self._reclaim(name, everyone=True)
            found = [self._row(n) for n in names]
            out = [r for r in found if r is not None]
            if len(out) < len(found):
                return False, [], []  # never here: a joined pool's row is not deleted
            if any(r.wait(now)[0] > 0 for r in out):
                return False, out, []
            changes = []
            for r, pool_calls in zip(out, calls, strict=True):
                r.in_use += 1
                r.take_token(now)
                changes.append(self._adapt(r, now, pool_calls))
                self._save(r)
                db.execute(
                    "UPDATE users SET slots = slots + 1 WHERE pool = ? AND run_id = ? AND pid = ?",
                    (r.name, self.run_id, self.pid),
                )
        return True, out, changes

    def release(self, names: tuple[str, ...]) -> None:
        """Give back one slot in each of ``names``."""
        with self._write() as db:
            for n in names:
                db.execute("UPDATE pools SET in_use = MAX(0, in_use - 1) WHERE name = ?", (n,))
                db.execute(
                    "UPDATE users SET slots = MAX(0, slots - 1) "
                    "WHERE pool = ? AND run_id = ? AND pid = ?",
                    (n, self.run_id, self.pid),
                )

    # -- signals ----------------------------------------------------------------------------

    def observe(
        self,
        name: str,
        now: float,
        calls: Callable[[int, bool, bool], list[Call]],
        pause_until: float = 0.0,
        pause_reason: str = "",
        started_at: float | None = None,
    ) -> tuple[PoolRow | None, bool, list[Change], bool]:
        """Extend the pool's pause to ``pause_until``, then make the calls
        ``calls(slots in use, whether the pause grew, whether it pauses the
        whole pool)`` on its shared adaptive state. With ``started_at`` (a
        throttle of the attempt started then), the shared state decides
        whether its Retry-After pauses the whole pool or only that attempt's
        retry (``AdaptiveLimit.pauses``). Returns the pool, whether the pause
        grew, the changes of limits the calls decided (the pool has the last
        one), and whether the pause was the whole pool's."""
        with self._write():
            row = self._row(name)
            if row is None:
                return None, False, [], True
            whole = True
            if started_at is not None and pause_until > 0.0:
                limit = self.replica(row, now)
                if limit is not None:
                    whole = limit.pauses(started_at, now, row.in_use)
            paused = whole and pause_until > row.paused_until
            if paused:
                row.paused_until = pause_until
                self._changed(row, pause_reason)
            changes = self._adapt(row, now, calls(row.in_use, paused, whole))
            self._save(row)
            return row, paused, changes, whole

    def _adapt(self, row: PoolRow, now: float, calls: list[Call]) -> list[Change]:
        """Inside a write: bring this run's replica of ``row``'s adaptive state up
        to date, log ``calls`` and make them; apply the changes they decide to
        ``row`` and return them."""
        if not calls:
            return []
        limit = self.replica(row, now)
        if limit is None:
            return []
        changes = []
        for method, args in calls:
            row.lseq += 1
            self.db.execute(
                "INSERT INTO adaptive_log VALUES (?, ?, ?)",
                (row.name, row.lseq, json.dumps([method, *args], separators=(",", ":"))),
            )
            change = getattr(limit, method)(*args)
            if isinstance(change, Change):
                changes.append(change)
                row.refill(now)  # the tokens earned so far, at the old rate
                if row.rate is not None and change.rate is not None:
                    row.rate = change.rate
                row.concurrency = change.concurrency
                if change.pause > 0:  # a back-off of the pool's own, for every run
                    row.paused_until = max(row.paused_until, now + change.pause)
                self._changed(row, change.reason)
        self._replicas[row.name] = (limit, row.lseq)
        if row.lseq - row.aseq >= SNAPSHOT_EVERY:
            row.adaptive, row.aseq = store_adaptive(limit), row.lseq
            self.db.execute(
                "DELETE FROM adaptive_log WHERE pool = ? AND seq <= ?", (row.name, row.aseq)
            )
        return changes

    def replica(self, row: PoolRow, now: float) -> AdaptiveLimit | None:
        """This run's replica of ``row``'s adaptive state, brought up to date with
        the calls logged since (None: not adaptive). Inside a write it is exact;
        outside, it is as of the moment it reads the log."""
        concurrency, rate, _, settings = settings_of(row.settings)
        if settings is None:
            return None
        for _ in range(2):
            replica = self._replicas.get(row.name)
            if replica is None or replica[1] < row.aseq:
                # No replica, or one behind the snapshot (the calls since were dropped).
                limit = None if row.adaptive is None else load_adaptive(row.adaptive, settings)
                limit = limit or AdaptiveLimit(settings, rate, concurrency, now)
                applied = row.aseq
            else:
                limit, applied = replica
            logged = self.db.execute(
                "SELECT seq, call FROM adaptive_log WHERE pool = ? AND seq > ? ORDER BY seq",
                (row.name, applied),
            ).fetchall()
            if logged and logged[0][0] != applied + 1:
                # A snapshot was taken since ``row`` was read: start from it.
                self._replicas.pop(row.name, None)
                fresh = self._row(row.name)
                if fresh is None:
                    return None
                row = fresh
                continue
            for seq, text in logged:
                method, *args = json.loads(text)
                getattr(limit, method)(*args)
                applied = seq
            self._replicas[row.name] = (limit, applied)
            return limit
        return None  # never here: a second read is not behind a snapshot again
