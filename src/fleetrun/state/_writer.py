"""The journal writer: one thread that turns engine events into SQLite rows.

The scheduler calls the writer (a Subscriber) on the event loop; ``__call__``
only appends to a queue, so the loop never waits for SQLite. The thread takes
everything queued, writes it in one transaction, commits, and only then
answers the ``durable()`` calls that were waiting on it.

Invariant: when an awaited ``durable()`` returns, every event enqueued before
the call is committed (in the WAL: it survives a crash of this process).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import queue
import sqlite3
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fleetrun.engine._events import (
    AttemptEnded,
    AttemptOutput,
    AttemptStarted,
    Event,
    InstanceReused,
    InstanceSettled,
    RunEnded,
)
from fleetrun.errors import StateError
from fleetrun.redact import Redactor
from fleetrun.state._db import connect
from fleetrun.state._proc import process_start_time

_MAX_BATCH = 5000
"""Most events written in one transaction (bounds the time a reader waits)."""


def command_hash(command: str) -> str:
    """The hash stored for a rendered (redacted) command."""
    return hashlib.sha256(command.encode()).hexdigest()[:32]


class _Barrier:
    __slots__ = ("future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()


_STOP = object()
_FIELDS: dict[type, tuple[str, ...]] = {}


class JournalWriter:
    """Subscriber that journals one run's events from a background thread.

    Use ``start()`` before the run, pass the writer as a subscriber and
    ``writer.durable`` as ``run_graph(durable=...)``, and ``close()`` after.
    """

    def __init__(self, db_path: Path, run_id: str, redactor: Redactor | None = None) -> None:
        self.db_path = db_path
        self.run_id = run_id
        # Events arrive redacted; this second pass guards what the engine does
        # not redact (published outputs that happen to hold a secret).
        self._redact = redactor.redact if redactor else _same
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._seq = 0
        # Invariant: _enqueued counts events handed to the queue (loop thread);
        # _committed counts those committed (writer thread). A durable() call
        # with nothing new since the last commit returns at once.
        self._enqueued = 0
        self._committed = 0

    def start(self) -> None:
        """Start the writer thread."""
        conn = connect(self.db_path, check_same_thread=False)
        row = conn.execute("SELECT max(seq) FROM events WHERE run_id=?", (self.run_id,)).fetchone()
        self._seq = int(row[0] or 0)
        self._thread = threading.Thread(
            target=self._main, args=(conn,), name="fleetrun-journal", daemon=True
        )
        self._thread.start()

    def __call__(self, event: Event) -> None:
        """Enqueue ``event``; never blocks."""
        if isinstance(event, AttemptOutput):
            return  # the attempt's log file holds its output
        self._enqueued += 1
        self._queue.put(event)

    async def durable(self) -> None:
        """Return once every event enqueued so far is committed."""
        self._raise_if_failed()
        if self._committed >= self._enqueued:
            return
        barrier = _Barrier(asyncio.get_running_loop())
        self._queue.put(barrier)
        await barrier.future
        self._raise_if_failed()

    def close(self) -> None:
        """Write what is queued, stop the thread, and raise if writing failed."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise StateError(f"writing the journal failed: {self._error}") from self._error

    # -- writer thread -------------------------------------------------------

    def _main(self, conn: sqlite3.Connection) -> None:
        stop = False
        try:
            while not stop:
                batch = [self._queue.get()]
                while len(batch) < _MAX_BATCH:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                events = [e for e in batch if isinstance(e, Event)]
                stop = any(e is _STOP for e in batch)
                if events and self._error is None:
                    try:
                        self._write(conn, events)
                    except BaseException as e:  # reported by durable()/close()
                        self._error = e
                self._committed += len(events)
                for item in batch:
                    if isinstance(item, _Barrier):
                        _resolve(item)
        finally:
            conn.close()

    def _write(self, conn: sqlite3.Connection, events: list[Event]) -> None:
        rows = []
        conn.execute("BEGIN")
        try:
            for ev in events:
                self._seq += 1
                cls = type(ev)
                names = _FIELDS.get(cls)
                if names is None:
                    names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(ev))
                data = {n: getattr(ev, n) for n in names}
                rows.append(
                    (
                        self.run_id,
                        self._seq,
                        ev.at,
                        type(ev).__name__,
                        self._redact(_ENCODE(data)),
                    )
                )
                self._apply(conn, ev)
            conn.executemany("INSERT INTO events VALUES (?,?,?,?,?)", rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _apply(self, conn: sqlite3.Connection, ev: Event) -> None:
        run = self.run_id
        if isinstance(ev, AttemptStarted):
            conn.execute(
                "INSERT OR REPLACE INTO attempts (run_id, key, n, started_at, log_path, pid, pgid,"
                " proc_start) VALUES (?,?,?,?,?,?,?,?)",
                (
                    run,
                    ev.key,
                    ev.attempt,
                    ev.at,
                    ev.log_path,
                    ev.pid,
                    ev.pgid,
                    process_start_time(ev.pid),
                ),
            )
            conn.execute(
                "UPDATE instances SET status='running', attempts=?, command_hash=?,"
                " started_at=coalesce(started_at, ?) WHERE run_id=? AND key=?",
                (ev.attempt, command_hash(ev.command), ev.at, run, ev.key),
            )
        elif isinstance(ev, AttemptEnded):
            conn.execute(
                "UPDATE attempts SET ended_at=?, exit_code=?, signal=?, timed_out=?, outcome=?,"
                " retry_reason=? WHERE run_id=? AND key=? AND n=?",
                (
                    ev.at,
                    ev.exit_code,
                    ev.signal,
                    int(ev.timed_out),
                    ev.outcome,
                    ev.retry_reason,
                    run,
                    ev.key,
                    ev.attempt,
                ),
            )
            conn.execute(
                "UPDATE instances SET exit_code=? WHERE run_id=? AND key=?",
                (ev.exit_code, run, ev.key),
            )
        elif isinstance(ev, InstanceSettled):
            conn.execute(
                "UPDATE instances SET status=?, reason=?, attempts=max(attempts, ?), outputs=?,"
                " ended_at=? WHERE run_id=? AND key=?",
                (
                    ev.state,
                    ev.reason,
                    ev.attempts,
                    self._redact(_outputs_json(ev.outputs)),
                    ev.at,
                    run,
                    ev.key,
                ),
            )
        elif isinstance(ev, InstanceReused):
            conn.execute(
                "UPDATE instances SET status='reused', outputs=?, ended_at=?"
                " WHERE run_id=? AND key=?",
                (self._redact(_outputs_json(ev.outputs)), ev.at, run, ev.key),
            )
        elif isinstance(ev, RunEnded):
            conn.execute(
                "UPDATE runs SET status=?, ended_at=?, counts=? WHERE id=?",
                (ev.status, ev.at, json.dumps(dict(ev.counts)), run),
            )


def _resolve(barrier: _Barrier) -> None:
    def done() -> None:
        if not barrier.future.done():
            barrier.future.set_result(None)

    # RuntimeError: the loop is closed, so nobody waits any more.
    with contextlib.suppress(RuntimeError):
        barrier.loop.call_soon_threadsafe(done)


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


_ENCODE = json.JSONEncoder(default=_js, separators=(",", ":")).encode
