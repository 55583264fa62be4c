"""The journal writer: one thread that turns engine events into SQLite rows.

The scheduler calls the writer (a Subscriber) on the event loop; ``__call__``
only appends to a queue, so the loop never waits for SQLite. The thread takes
everything queued, writes it in one transaction, commits, and only then
answers the ``durable()`` calls that were waiting on it.

Invariant: when an awaited ``durable()`` returns, every event enqueued before
the call is committed (in the WAL: it survives a crash of this process) — or
writing failed (a full disk), ``on_failure`` has been called (the session
interrupts the run: no attempt starts that the journal cannot record, running
ones end as on Ctrl-C) and ``close()`` raises the cause.
Events no ``durable()`` waits for are committed within ``_LINGER`` seconds,
batched with what follows; a crash loses at most those, never half a batch.

Consoles follow the record (``follow``): they are told each event once it is
committed, so they never say what the journal does not hold (``_relay``).

Heartbeat: until the run's ``RunEnded`` is written (or the writer stops), the
thread sets ``runs.alive_at`` to the current time every ``HEARTBEAT`` seconds,
in the batch it is committing or, when the run is quiet, in a transaction of
its own. A run whose process is killed while its commands print nothing thus
leaves a trace within ``HEARTBEAT`` seconds of its death, which recovery takes
as its end (``JournalReader.last_write``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import operator
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from fleetrun.engine import (
    AttemptEnded,
    AttemptOutput,
    AttemptStarted,
    Event,
    InstanceReused,
    InstanceSettled,
    RunEnded,
    Subscriber,
)
from fleetrun.errors import StateError
from fleetrun.executors import process_start_time
from fleetrun.redact import Redactor
from fleetrun.state._db import connect, journal_error, rollback
from fleetrun.state._relay import RecordFirst

log = logging.getLogger(__name__)

_MAX_BATCH = 5000
"""Most events written in one transaction (bounds the time a reader waits)."""

_LINGER = 0.01
"""Seconds a batch without a waiting ``durable()`` waits for more events.

Each commit and each wake-up of the thread costs far more than a row (and the
thread takes the GIL from the event loop each time it wakes), so events nobody
waits for are gathered for a while; ``durable()`` cuts the wait short."""

HEARTBEAT = 1.0
"""Seconds between two heartbeats of a live run (``runs.alive_at``): at most one
extra ``UPDATE`` a second, and the most a killed run's recorded end can fall
short of its death."""

_CHECKPOINT_PAGES = 16384
"""WAL size (pages, 64 MiB at 4 KiB) at which a run's writer checkpoints."""


def command_hash(command: str) -> str:
    """The hash stored for a rendered (redacted) command."""
    return hashlib.sha256(command.encode()).hexdigest()[:32]


class _Barrier:
    __slots__ = ("future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()


_STOP = object()


class _Flush:
    """Queued by ``flush_followers``: set once every item queued before it is handed over."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


# Per event class: its field names, and a getter returning their values as a tuple.
_FIELDS: dict[type, tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]]]] = {}


class JournalWriter:
    """Subscriber that journals one run's events from a background thread.

    Use ``start()`` before the run, pass the writer as a subscriber and
    ``writer.durable`` as ``run_graph(durable=...)``, and ``close()`` after.
    """

    def __init__(
        self,
        db_path: Path,
        run_id: str,
        redactor: Redactor | None = None,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self.db_path = db_path
        self.run_id = run_id
        # Called once, on the event loop, when a write failed; without it
        # durable() raises instead.
        self._on_failure = on_failure
        self._failure_told = False
        # Events arrive redacted; this second pass over the encoded JSON guards
        # what the engine does not redact (published outputs that happen to hold
        # a secret), in the escaped form a secret takes inside JSON text.
        self._redact = redactor.for_json().redact if redactor else _same
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._urgent = threading.Event()
        self._error: BaseException | None = None
        self._seq = 0
        # Invariant: _enqueued counts events handed to the queue (loop thread);
        # _committed counts those committed (writer thread). A durable() call
        # with nothing new since the last commit returns at once.
        self._enqueued = 0
        self._committed = 0
        # Writer thread only: when the next heartbeat is due (None: no more,
        # the run has ended or writing failed).
        self._beat_due: float | None = None
        # Consoles told each event once it is on record (``follow``).
        self._relay: RecordFirst | None = None

    def start(self) -> None:
        """Start the writer thread."""
        conn = connect(self.db_path, check_same_thread=False)
        row = conn.execute("SELECT max(seq) FROM events WHERE run_id=?", (self.run_id,)).fetchone()
        self._seq = int(row[0] or 0)
        # Rare checkpoints while the run goes: a checkpoint copies pages and
        # fsyncs the database file inside a commit, which durable() waits for.
        # The WAL is checkpointed when the writer stops, and when it passes
        # _CHECKPOINT_PAGES on a long run.
        conn.execute(f"PRAGMA wal_autocheckpoint={_CHECKPOINT_PAGES}")
        self._beat_due = time.monotonic() + HEARTBEAT
        self._thread = threading.Thread(
            target=self._main, args=(conn,), name="fleetrun-journal", daemon=True
        )
        self._thread.start()

    def follow(self, subscribers: Sequence[Subscriber], say: Callable[[str], None]) -> None:
        """Tell ``subscribers`` (a console) every event once it is committed, in
        order; ``say`` gets the lines naming what could not be (see ``_relay``).
        Call on the event loop, before the run; ``flush_followers`` after it."""
        self._relay = RecordFirst(subscribers, asyncio.get_running_loop(), say)

    def flush_followers(self) -> None:
        """Wait until everything queued so far is committed (or has failed) and
        tell the followers all of it. Call on the event loop once the run is over
        (this blocks it for at most one commit)."""
        relay = self._relay
        if relay is None:
            return
        thread = self._thread
        if thread is not None and thread.is_alive():
            flush = _Flush()
            self._queue.put(flush)
            self._urgent.set()
            while not flush.done.wait(0.1) and thread.is_alive():
                pass
        relay.flush()

    def __call__(self, event: Event) -> None:
        """Enqueue ``event``; never blocks."""
        if isinstance(event, AttemptOutput):
            if self._relay is not None:
                self._queue.put(event)  # to its place among the followers' events
            return  # the attempt's log file holds its output
        self._enqueued += 1
        self._queue.put(event)

    async def durable(self) -> None:
        """Return once every event enqueued so far is committed (see the invariant)."""
        if self._error is None and self._committed < self._enqueued:
            barrier = _Barrier(asyncio.get_running_loop())
            self._queue.put(barrier)
            self._urgent.set()
            await barrier.future
        if self._error is None:
            return
        if self._on_failure is None:
            self._raise_if_failed()
        if not self._failure_told:
            self._failure_told = True
            assert self._on_failure is not None
            self._on_failure()
            # Let the stop the callback scheduled take effect before the caller
            # (the scheduler) decides what to start next.
            await asyncio.sleep(0)
            await asyncio.sleep(0)

    def close(self) -> None:
        """Write what is queued, stop the thread, and raise if writing failed."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._urgent.set()
            self._thread.join()
            self._thread = None
        self._raise_if_failed()

    @property
    def failed(self) -> BaseException | None:
        """What made writing fail, or None."""
        return self._error

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            if isinstance(self._error, StateError):
                raise self._error
            raise journal_error("writing", self.db_path, self._error) from self._error

    # -- writer thread -------------------------------------------------------

    def _main(self, conn: sqlite3.Connection) -> None:
        stop = False
        try:
            while not stop:
                batch = self._collect()
                shown = [e for e in batch if isinstance(e, Event)]
                events = [e for e in shown if not isinstance(e, AttemptOutput)]
                stop = any(e is _STOP for e in batch)
                beat = self._beat()
                if events and self._error is None:
                    try:
                        self._write(conn, events, beat)
                    except BaseException as e:  # reported by durable()/close()
                        log.warning(
                            "run %s: writing %d event(s) to the journal failed: %s: %s",
                            self.run_id,
                            len(events),
                            type(e).__name__,
                            e,
                        )
                        self._error = e
                        self._beat_due = None
                elif beat is not None and not stop:
                    _heartbeat(conn, self.run_id, beat)
                self._committed += len(events)
                if self._relay is not None and shown:
                    # Before the barriers: a durable() returns after the
                    # followers were told (the loop runs callbacks in order).
                    self._relay.add(shown, self._error is None)
                for item in batch:
                    if isinstance(item, _Barrier):
                        _resolve(item)
                    elif isinstance(item, _Flush):
                        item.done.set()
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            conn.close()

    def _collect(self) -> list[Any]:
        """The next batch: wait for one item, then take what is queued.

        Unless a ``durable()`` (or ``close()``) is waiting, the batch lingers up
        to ``_LINGER`` seconds first: a commit costs about as much as the rows it
        writes, so fewer, larger transactions are cheaper. The linger waits on
        ``_urgent`` rather than on the queue, so events arriving meanwhile do not
        wake the thread; ``durable()`` sets ``_urgent`` and ends the wait at once.
        """
        due = self._beat_due
        wait = None if due is None else max(0.0, due - time.monotonic())
        try:
            first = self._queue.get(timeout=wait)
        except queue.Empty:
            return []  # a heartbeat is due
        if not isinstance(first, _Barrier | _Flush) and first is not _STOP:
            self._urgent.wait(_LINGER)
        # Clear before draining: a barrier queued after this point is either
        # drained below or sets _urgent again for the next batch.
        self._urgent.clear()
        batch = [first]
        while len(batch) < _MAX_BATCH:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _beat(self) -> float | None:
        """The time to write as a heartbeat now, or None when none is due."""
        due = self._beat_due
        if due is None or self._error is not None or time.monotonic() < due:
            return None
        self._beat_due = time.monotonic() + HEARTBEAT
        return time.time()

    def _write(self, conn: sqlite3.Connection, events: list[Event], beat: float | None) -> None:
        """Write one batch in one transaction, one ``executemany`` per statement.

        Statements run in lifecycle order (attempt rows are inserted before
        they are updated; an instance is marked running before it settles),
        and each keeps the events' order, so the result is the same as
        applying the events one by one. Within a batch, an attempt that starts
        and ends is inserted finished, and an instance that starts and settles
        is written once. ``beat``: a heartbeat to write with them (None: none).
        """
        run = self.run_id
        redact = self._redact
        ev_rows = []
        started: dict[tuple[str, int], list[Any]] = {}
        running: dict[str, list[Any]] = {}
        ended, settled, reused, run_end = [], [], [], []
        exact: list[tuple[str, str, str]] = []
        for ev in events:
            self._seq += 1
            cls = type(ev)
            fields = _FIELDS.get(cls)
            if fields is None:
                names = tuple(f.name for f in dataclasses.fields(ev))
                fields = _FIELDS[cls] = (names, _getter(names))
            payload = redact(_ENCODE(dict(zip(fields[0], fields[1](ev), strict=True))))
            ev_rows.append((run, self._seq, ev.at, cls.__name__, payload))
            if cls is AttemptStarted:
                a = cast(AttemptStarted, ev)
                # proc_start (index 7) is filled after the loop, for attempts
                # still running at the end of the batch.
                started[(a.key, a.attempt)] = [
                    run, a.key, a.attempt, a.at, a.log_path, a.pid, a.pgid, None,
                    None, None, None, 0, None, None, 0, a.executor, a.host, a.job,
                    a.ready_at, a.queued_reason,
                ]  # fmt: skip
                prev = running.get(a.key)
                first_at = prev[2] if prev else a.at
                running[a.key] = [a.attempt, command_hash(a.command), first_at, run, a.key]
            elif cls is AttemptEnded:
                e = cast(AttemptEnded, ev)
                end = (e.at, e.exit_code, e.signal, int(e.timed_out), e.outcome, e.retry_reason,
                       int(e.throttled))  # fmt: skip
                row = started.get((e.key, e.attempt))
                if row is not None:
                    row[8:15] = end
                else:
                    ended.append((*end, run, e.key, e.attempt))
            elif cls is InstanceSettled:
                i = cast(InstanceSettled, ev)
                raw = _outputs_json(i.outputs)
                outputs = redact(raw)
                if i.outputs:
                    exact.append((run, i.key, raw))
                ran = running.pop(i.key, None)
                attempts = max(i.attempts, ran[0]) if ran else i.attempts
                settled.append(
                    (i.state, i.reason, attempts, outputs, i.at, ran[1] if ran else None,
                     ran[2] if ran else None, run, i.key)
                )  # fmt: skip
            elif cls is InstanceReused:
                r = cast(InstanceReused, ev)
                raw = _outputs_json(r.outputs)
                reused.append((redact(raw), r.at, run, r.key))
                if r.outputs:
                    exact.append((run, r.key, raw))
            elif cls is RunEnded:
                x = cast(RunEnded, ev)
                run_end.append((x.status, x.at, _ENCODE(dict(x.counts)), run))
                self._beat_due = None  # the run has ended: no more heartbeats
        for row in started.values():
            # The start time tells a live group leader from a later process
            # that reuses its pid; only an attempt that was running when a run
            # died is ever checked (it is then marked interrupted). An attempt
            # that ended in this batch has been reaped: its pid may already
            # belong to another process, so nothing is read for it.
            if row[8] is None and row[15] == "local" and row[5] is not None:
                row[7] = process_start_time(row[5])
        # IMMEDIATE: take the write lock first, so another run's writer makes
        # this one wait (busy timeout) instead of failing on a stale snapshot.
        conn.execute("BEGIN IMMEDIATE")
        try:
            _insert(conn, _SQL_STARTED, 20, list(started.values()))
            if running:
                conn.executemany(_SQL_RUNNING, list(running.values()))
            if ended:
                conn.executemany(_SQL_ENDED, ended)
            _insert(conn, _SQL_SETTLED, 9, settled, _SQL_SETTLED_TAIL)
            if reused:
                conn.executemany(_SQL_REUSED, reused)
            if exact:
                conn.executemany(_SQL_EXACT, exact)
            if beat is not None and not run_end:
                conn.execute(_SQL_HEARTBEAT, (beat, run))
            if run_end:
                conn.executemany(_SQL_RUN_ENDED, run_end)
            _insert(conn, _SQL_EVENT, 5, ev_rows)
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            raise


_SQL_STARTED = (
    "INSERT OR REPLACE INTO attempts (run_id, key, n, started_at, log_path, pid, pgid,"
    " proc_start, ended_at, exit_code, signal, timed_out, outcome, retry_reason, throttled,"
    " executor, host, job, ready_at, queued_reason) VALUES "
)
_SQL_RUNNING = (
    "UPDATE instances SET status='running', attempts=?, command_hash=?,"
    " started_at=coalesce(started_at, ?) WHERE run_id=? AND key=?"
)
_SQL_ENDED = (
    "UPDATE attempts SET ended_at=?, exit_code=?, signal=?, timed_out=?, outcome=?,"
    " retry_reason=?, throttled=? WHERE run_id=? AND key=? AND n=?"
)
# The instance's exit code is its last attempt's, taken when it settles; the
# command hash and start come from a start written in the same batch, if any.
# Many instances per statement: UPDATE ... FROM (VALUES ...) AS v, where v's
# columns are column1..column9 (state, reason, attempts, outputs, ended_at,
# command_hash, started_at, run_id, key). An instance settles once per run, so
# v holds each key at most once.
_SQL_SETTLED = (
    "UPDATE instances SET status=v.column1, reason=v.column2,"
    " attempts=max(instances.attempts, v.column3), outputs=v.column4, ended_at=v.column5,"
    " command_hash=coalesce(v.column6, instances.command_hash),"
    " started_at=coalesce(instances.started_at, v.column7),"
    " exit_code=(SELECT a.exit_code FROM attempts a"
    " WHERE a.run_id=instances.run_id AND a.key=instances.key ORDER BY a.n DESC LIMIT 1)"
    " FROM (VALUES "
)
_SQL_SETTLED_TAIL = ") AS v WHERE instances.run_id=v.column8 AND instances.key=v.column9"
_SQL_REUSED = "UPDATE instances SET status='reused', outputs=?, ended_at=? WHERE run_id=? AND key=?"
_SQL_EXACT = "INSERT OR REPLACE INTO exact_outputs (run_id, key, outputs) VALUES (?,?,?)"
_SQL_RUN_ENDED = "UPDATE runs SET status=?, ended_at=?, counts=? WHERE id=?"
_SQL_EVENT = "INSERT INTO events VALUES "
_SQL_HEARTBEAT = "UPDATE runs SET alive_at=? WHERE id=? AND ended_at IS NULL"

_ROWS_PER_INSERT = 64
"""Most rows in one multi-row ``INSERT`` (a power of two; see ``_insert``)."""

_SQL_CACHE: dict[tuple[str, int, int], str] = {}


def _insert(
    conn: sqlite3.Connection, head: str, width: int, rows: list[Any], tail: str = ""
) -> None:
    """Run ``head`` + multi-row ``VALUES`` + ``tail`` over ``rows`` (``width`` values each).

    One statement step per chunk instead of one per row: each step releases and
    retakes the GIL, which on a busy event loop costs more than the row. Chunks
    are powers of two, so at most 7 distinct statements per table reach
    sqlite3's statement cache. Rows keep their order.
    """
    i, n = 0, len(rows)
    size = _ROWS_PER_INSERT
    while i < n:
        while size > n - i:
            size //= 2
        sql = _SQL_CACHE.get((head, width, size))
        if sql is None:
            one = "(" + ",".join("?" * width) + ")"
            sql = _SQL_CACHE[(head, width, size)] = head + ",".join([one] * size) + tail
        conn.executemany(sql, _chunks(rows, i, n, size))
        i += size * ((n - i) // size)


def _chunks(rows: list[Any], start: int, stop: int, size: int) -> list[list[Any]]:
    """Parameter lists for every whole chunk of ``size`` rows from ``start``."""
    out = []
    for j in range(start, stop - size + 1, size):
        flat: list[Any] = []
        for r in rows[j : j + size]:
            flat.extend(r)
        out.append(flat)
    return out


def _heartbeat(conn: sqlite3.Connection, run_id: str, at: float) -> None:
    """Write one heartbeat in a transaction of its own.

    A heartbeat that cannot be written (a full disk, the lock held past the
    busy timeout) is skipped: it only refines a killed run's end, and the
    events that matter report their own failure.
    """
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(_SQL_HEARTBEAT, (at, run_id))
        conn.execute("COMMIT")
    except sqlite3.Error as e:
        log.info("run %s: a heartbeat could not be written (skipped): %s", run_id, e)
        rollback(conn)


def _resolve(barrier: _Barrier) -> None:
    def done() -> None:
        if not barrier.future.done():
            barrier.future.set_result(None)

    # RuntimeError: the loop is closed, so nobody waits any more.
    with contextlib.suppress(RuntimeError):
        barrier.loop.call_soon_threadsafe(done)


def _getter(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """A function returning the values of ``names`` of an object, as a tuple."""
    if len(names) == 1:  # attrgetter of a single name returns the bare value
        name = names[0]
        return lambda obj: (getattr(obj, name),)
    return operator.attrgetter(*names)


def _same(text: str) -> str:
    return text


def _outputs_json(outputs: Mapping[str, str]) -> str:
    return _ENCODE(dict(outputs)) if outputs else "{}"


def _js(value: Any) -> Any:
    if isinstance(value, (frozenset, set, tuple)):
        return list(value)
    if hasattr(value, "items"):
        return dict(value)
    return str(value)


def _encoder() -> Callable[[Any], str]:
    """A compact JSON encoder; the same text as ``json.dumps(separators=(",", ":"))``.

    ``JSONEncoder.encode`` builds a new C encoder on every call, which costs
    more than encoding a small event; the C encoder is built once here instead
    (when the C accelerator is missing, the plain encoder is used).
    """
    base = json.JSONEncoder(default=_js, separators=(",", ":"))
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return base.encode
    c_encode = make(
        None, _js, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True
    )

    def encode(obj: Any) -> str:
        return "".join(c_encode(obj, 0))

    return encode


_ENCODE = _encoder()
