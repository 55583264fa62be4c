"""Live updates: one poller watches every journal, a hub fans changes out to pages.

The poller asks each journal SQLite's ``PRAGMA data_version``, which changes
only when another connection commits: a quiet record costs one pragma per
tick. When it changed (or every ``LIVENESS_EVERY`` seconds, to notice a run
whose process died without a word), it reads the number of runs and, for each
run not ended, the number of its last event and whether its process lives.
What differs from the last look becomes a message: ``runs`` (the list
changed) and ``run`` (``{"id", "seq"}``: that run's record moved on).

The hub gives every connected page (a server-sent events stream) its own
bounded queue. A page that stops reading loses old messages, never the
server's memory: when its queue is full it gets one ``resync`` instead. A
page that disconnects leaves the hub in the ``finally`` of its stream, so
``clients`` counts only open streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from fleetrun.errors import StateError
from fleetrun.state import process_alive
from fleetrun.ui._store import LiveReader, Stores

TICK = 0.2
"""Seconds between two looks at the journals."""

LIVENESS_EVERY = 1.0
"""Seconds between two checks that the live runs' processes still exist."""

PING_EVERY = 15.0
"""Seconds between keep-alive comments on an idle stream."""

QUEUE_SIZE = 64
"""Messages a page may fall behind by before it is told to resync."""


@dataclass
class _Seen:
    version: int = -1
    runs: int = -1
    live: dict[str, tuple[Any, bool]] = field(default_factory=dict)  # run id -> (seq, alive)
    checked: float = 0.0


class Changes:
    """What changed in the journals since the last ``poll`` (blocking; one thread at a time)."""

    def __init__(self, stores: Stores) -> None:
        self.stores = stores
        self._readers: dict[int, LiveReader] = {}
        self._seen: dict[int, _Seen] = {}

    def poll(self) -> list[tuple[str, dict[str, Any]]]:
        """Messages for what changed: ``("runs", {})`` and ``("run", {"id", "seq"})``."""
        out: list[tuple[str, dict[str, Any]]] = []
        now = time.monotonic()
        for store in self.stores.all:
            reader = self._readers.get(store.index)
            if reader is None:
                if not store.has_journal:
                    continue
                try:
                    # Polls run on whichever worker thread is free, one at a time.
                    reader = LiveReader(store.state_dir, any_thread=True)
                    self._readers[store.index] = reader
                except StateError:
                    continue
                out.append(("runs", {}))
            seen = self._seen.setdefault(store.index, _Seen())
            version = reader.data_version()
            due = bool(seen.live) and now - seen.checked >= LIVENESS_EVERY
            if version == seen.version and not due:
                continue
            seen.version, seen.checked = version, now
            out += self._look(reader, seen)
        return out

    def _look(self, reader: LiveReader, seen: _Seen) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = []
        c = reader.conn
        runs = int(c.execute("SELECT count(*) FROM runs").fetchone()[0])
        host = socket.gethostname()
        live: dict[str, tuple[Any, bool]] = {}
        for run_id, run_host, pid, pid_start in c.execute(
            "SELECT id, host, pid, pid_start FROM runs WHERE ended_at IS NULL"
        ).fetchall():
            seq = c.execute("SELECT max(seq) FROM events WHERE run_id=?", (run_id,)).fetchone()[0]
            alive = run_host != host or process_alive(pid, pid_start)
            live[run_id] = (seq, alive)
        changed = runs != seen.runs
        for run_id, state in live.items():
            if seen.live.get(run_id) != state:
                out.append(("run", {"id": run_id, "seq": state[0]}))
                changed = changed or seen.live.get(run_id, (None, True))[1] != state[1]
        for run_id in seen.live.keys() - live.keys():
            # Ended (or pruned) since the last look: its last events.
            seq = c.execute("SELECT max(seq) FROM events WHERE run_id=?", (run_id,)).fetchone()[0]
            out.append(("run", {"id": run_id, "seq": seq}))
            changed = True
        if changed:
            out.insert(0, ("runs", {}))
        seen.runs, seen.live = runs, live
        return out

    def close(self) -> None:
        """Close the poller's connections."""
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()


class Hub:
    """Fans messages out to the connected pages."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[str]] = set()
        self.closing = asyncio.Event()
        self.sent = 0
        self.polls = 0
        """Polls of the journals done and published (``poll_forever`` counts them)."""
        self.changed = asyncio.Event()
        """Set at each poll done and each page gone (whoever waits clears it)."""

    @property
    def clients(self) -> int:
        """Open streams."""
        return len(self._queues)

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        """Queue one message for every page (``resync`` for a page that fell behind)."""
        text = f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
        for q in self._queues:
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    while True:
                        q.get_nowait()
                q.put_nowait("event: resync\ndata: {}\n\n")
            else:
                q.put_nowait(text)
        self.sent += 1

    @contextlib.contextmanager
    def _subscribed(self) -> Iterator[asyncio.Queue[str]]:
        q: asyncio.Queue[str] = asyncio.Queue(QUEUE_SIZE)
        self._queues.add(q)
        try:
            yield q
        finally:
            self._queues.discard(q)
            self.changed.set()

    async def stream(self) -> AsyncIterator[str]:
        """One page's server-sent events, until the page goes or the server stops."""
        with self._subscribed() as q:
            yield "retry: 2000\nevent: hello\ndata: {}\n\n"
            closing = asyncio.ensure_future(self.closing.wait())
            getter: asyncio.Future[str] | None = None
            try:
                while not self.closing.is_set():
                    getter = asyncio.ensure_future(q.get())
                    done, _ = await asyncio.wait(
                        {getter, closing}, timeout=PING_EVERY, return_when=asyncio.FIRST_COMPLETED
                    )
                    if getter in done:
                        yield getter.result()
                    elif closing not in done:
                        yield ": ping\n\n"
                    getter.cancel()
            finally:
                closing.cancel()
                if getter is not None:
                    getter.cancel()
            # Stopping: what was queued still goes out (the server's ``bye`` last).
            with contextlib.suppress(asyncio.QueueEmpty):
                while True:
                    yield q.get_nowait()


async def poll_forever(changes: Changes, hub: Hub, stop: asyncio.Event) -> None:
    """Poll ``changes`` every ``TICK`` on a worker thread and publish what it finds."""
    import anyio.to_thread

    try:
        while not stop.is_set():
            try:
                found = await anyio.to_thread.run_sync(changes.poll)
            except (StateError, sqlite3.Error):
                found = []
            for kind, data in found:
                hub.publish(kind, data)
            hub.polls += 1
            hub.changed.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TICK)
    finally:
        await anyio.to_thread.run_sync(changes.close)
