"""An attempt and its log, for the attempt page: read in pieces, searched, redacted.

A log is found by its attempt only: run id, instance key and attempt number
name rows of the journal, and the log's place follows from them by the one
layout rule (``layout.RunLayout``: the run's folder, the task's safe name, the
target's, the number); nothing in a URL, nor a path stored in the record, is
ever opened as given. The file is opened with ``O_NOFOLLOW``, so a link
planted in the run's folder is not followed either. A log that was deleted or pruned reads
as ``gone`` with a sentence saying so.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fleetrun.errors import RunNotFoundError
from fleetrun.layout import RunLayout
from fleetrun.redact import Redactor
from fleetrun.state import AttemptRecord, RunRecord
from fleetrun.ui._plans import Plans
from fleetrun.ui._store import Store

PIECE = 64 * 1024
"""Bytes of log one request returns at most."""

SEARCH_MATCHES = 200
"""Most matching lines one search returns."""

SEARCH_BYTES = 256 * 1024 * 1024
"""Bytes of log one search reads at most."""

GONE = "the log file is gone (deleted or pruned) — the journal still records the attempt"


class LogGone(Exception):
    """The attempt's log file does not exist (any more)."""


def find_attempt(store: Store, run: RunRecord, key: str | None, n: int | None) -> AttemptRecord:
    """The attempt the page opens: ``key``'s attempt ``n`` (its last when None;
    in the run a reused instance ran in); without ``key``, the run's first
    failed attempt, else its last attempt. ``RunNotFoundError`` when none."""
    reader = store.reader()
    if key is None:
        attempts = reader.attempts(run.id)
        if not attempts:
            raise RunNotFoundError(f"run {run.id} has no attempt on record")
        failed = [a for a in attempts if a.outcome == "failed"]
        return failed[0] if failed else attempts[-1]
    return reader.attempt(reader.ran_in(run.id, key), key, n)


def _log_path(store: Store, a: AttemptRecord) -> Path:
    """The attempt's log file where the layout puts it in this state directory
    (the journal's ``log_path`` is not used: the state directory may have moved,
    and no path the record holds is trusted to stay inside it)."""
    row = (
        store.reader()
        .conn.execute(
            "SELECT task, target FROM instances WHERE run_id=? AND key=?", (a.run_id, a.key)
        )
        .fetchone()
    )
    if row is None:
        raise LogGone(f"{a.key} is not an instance of run {a.run_id}")
    return RunLayout.of(store.state_dir, a.run_id).log(row[0], row[1], a.n)


def _still_recorded(store: Store, a: AttemptRecord, gone: LogGone) -> str:
    """Why the log cannot be read, once it is known that the run is still on
    record: a prune removes the journal's rows before the logs, so a log gone
    with its run means the run was pruned (``RunNotFoundError``), not that the
    journal still records the attempt."""
    if store.find(a.run_id) is None:
        raise RunNotFoundError(
            f"run {a.run_id} is not on record (pruned, or never recorded here)"
        ) from None
    return str(gone)


@contextlib.contextmanager
def _open(path: Path) -> Iterator[int]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise LogGone(GONE) from None
    except OSError as e:
        raise LogGone(f"the log cannot be read: {e.strerror or e}") from None
    try:
        yield fd
    finally:
        os.close(fd)


def attempt_data(store: Store, run: RunRecord, a: AttemptRecord, plans: Plans) -> dict[str, Any]:
    """The attempt page's header: the attempt, its command (redacted), its handle,
    its siblings (the instance's other attempts) and its log's size."""
    reader = store.reader()
    redact = plans.of(run).redactor.redact
    command = ""
    for ev in reader.conn.execute(
        "SELECT data FROM events WHERE run_id=? AND type='AttemptStarted'"
        " AND json_extract(data, '$.key')=? AND json_extract(data, '$.attempt')=?",
        (a.run_id, a.key, a.n),
    ):
        command = str(json.loads(ev[0]).get("command", ""))
    try:
        with _open(_log_path(store, a)) as fd:
            size: int | None = os.fstat(fd).st_size
        gone = ""
    except LogGone as e:
        size, gone = None, _still_recorded(store, a, e)
    siblings = [{"n": s.n, "outcome": s.outcome} for s in reader.attempts(a.run_id, a.key)]
    return {
        "run_id": run.id,
        "ran_in": a.run_id,
        "key": a.key,
        "n": a.n,
        "attempts": siblings,
        "outcome": a.outcome,
        "exit_code": a.exit_code,
        "signal": a.signal,
        "timed_out": a.timed_out,
        "throttled": a.throttled,
        "retry_reason": redact(a.retry_reason or ""),
        "started_at": a.started_at,
        "ended_at": a.ended_at,
        "ready_at": a.ready_at,
        "queued_reason": redact(a.queued_reason or ""),
        "command": redact(command),
        "executor": a.executor,
        "host": a.host,
        "pid": a.pid,
        "pgid": a.pgid,
        "job": a.job,
        "size": size,
        "gone": gone,
    }


def read_piece(
    store: Store,
    a: AttemptRecord,
    redactor: Redactor,
    offset: int | None,
    limit: int = PIECE,
    before: int | None = None,
) -> dict[str, Any]:
    """A piece of the log: up to ``limit`` bytes from byte ``offset``; with
    ``before``, the bytes up to that offset instead; with neither, the last
    ``limit`` bytes. Pieces start and end at line ends (but a line longer than
    ``limit``), so pieces read one after another join without a gap or a split
    line; ``start``/``end`` are the piece's byte offsets, ``size`` the file's
    size now, ``done`` whether the attempt ended (a running attempt's last
    line waits until it is whole)."""
    limit = max(1024, min(limit, 4 * PIECE))
    done = a.outcome is not None
    try:
        with _open(_log_path(store, a)) as fd:
            size = os.fstat(fd).st_size
            if before is not None:
                stop = min(max(0, before), size)
                start = max(0, stop - limit)
            elif offset is None:
                stop, start = size, max(0, size - limit)
            else:
                start = min(max(0, offset), size)
                stop = min(size, start + limit)
            os.lseek(fd, start, os.SEEK_SET)
            data = os.read(fd, stop - start) if stop > start else b""
    except LogGone as e:
        why = _still_recorded(store, a, e)
        return {"gone": why, "start": 0, "end": 0, "size": None, "text": "", "done": done}
    if offset is None and start > 0:
        # Read backwards: begin after the first line end (the line before is partial).
        cut = data.find(b"\n")
        if 0 <= cut < len(data) - 1:
            start, data = start + cut + 1, data[cut + 1 :]
    end = start + len(data)
    if before is None and (end < size or not done):
        # Stop at the last whole line: the rest comes with the next piece.
        cut = data.rfind(b"\n")
        if cut >= 0:
            data = data[: cut + 1]
            end = start + len(data)
        elif end - start < limit:
            data, end = b"", start  # a partial line of a running attempt: wait for its end
    text = redactor.redact(data.decode("utf-8", errors="replace"))
    return {"gone": "", "start": start, "end": end, "size": size, "text": text, "done": done}


def search_log(store: Store, a: AttemptRecord, redactor: Redactor, query: str) -> dict[str, Any]:
    """The log's lines that contain ``query`` (case-insensitive; matched on the
    redacted text), with their line numbers and byte offsets: at most
    ``SEARCH_MATCHES``, over at most ``SEARCH_BYTES``."""
    needle = query.casefold()
    matches: list[dict[str, Any]] = []
    truncated = False
    if not needle:
        return {"query": query, "matches": [], "truncated": False, "gone": ""}
    try:
        with _open(_log_path(store, a)) as fd, os.fdopen(os.dup(fd), "rb") as f:
            offset = 0
            for number, raw in enumerate(f, 1):
                line = redactor.redact(raw.decode("utf-8", errors="replace").rstrip("\r\n"))
                if needle in line.casefold():
                    if len(matches) >= SEARCH_MATCHES:
                        truncated = True
                        break
                    matches.append({"line": number, "offset": offset, "text": line[:2000]})
                offset += len(raw)
                if offset > SEARCH_BYTES:
                    truncated = True
                    break
    except LogGone as e:
        return {
            "query": query,
            "matches": [],
            "truncated": False,
            "gone": _still_recorded(store, a, e),
        }
    return {"query": query, "matches": matches, "truncated": truncated, "gone": ""}
