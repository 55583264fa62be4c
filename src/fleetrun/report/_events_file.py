"""``EventsFile``: every engine event as one JSON line, as it happens (``--events``).

The format is public: other tools follow it (``tail -f run.jsonl | jq``).
One event per line, UTF-8 (in practice ASCII: non-ASCII is ``\\uXXXX``-escaped),
each a JSON object whose first key is ``type`` (the event's name) and whose
second is ``at`` (wall-clock seconds since the epoch, a float); the other keys
are the event's fields, in this order. The file is truncated when the run
starts; a run's first line is ``RunStarted`` and its last ``RunEnded``.

======================  ==================================================================
``type``                other keys (``null`` where a value is absent)
======================  ==================================================================
``RunStarted``          ``run_id``, ``plan_name``, ``mode`` (dag|phased|sequential),
                        ``parallelism`` (int or null: unbounded), ``nodes`` (instances run)
``InstanceReused``      ``node`` (int id), ``key`` (``task@target``), ``outputs`` (object),
                        ``from_run`` (the run whose record it reuses)
``AttemptStarted``      ``node``, ``key``, ``attempt`` (1-based), ``command`` (as run,
                        redacted), ``pid``, ``pgid``, ``log_path``, ``executor``
                        (kind), ``host``, ``job`` (the attempt's handle), ``ready_at``
                        (when the instance became ready; queued from then until ``at``),
                        ``queued_reason`` ("pool api rate", "wave closed", ...; null
                        when nothing held it)
``AttemptOutput``       ``node``, ``key``, ``attempt``, ``text`` (complete lines joined by
                        ``\\n``; only with ``--output stream``)
``AttemptEnded``        ``node``, ``key``, ``attempt``, ``started_at``, ``exit_code``,
                        ``signal``, ``timed_out`` (bool), ``outcome``
                        (succeeded|failed|retrying|cancelled), ``retry_reason``,
                        ``retry_delay`` (seconds), ``tail`` (last log lines, a list),
                        ``throttled`` (bool: taken as a throttle signal),
                        ``error_kind`` (connect|lost|internal, or null),
                        ``left_running`` (processes the command left running that
                        were ended after it; 0 with ``keep_running``),
                        ``reason``, ``remote`` (bool: an SSH attempt)
``InstanceSettled``     ``node``, ``key``, ``state`` (succeeded|failed|skipped|cancelled|
                        not_started), ``reason``, ``attempts``, ``outputs`` (object)
``PoolChanged``         ``pool``, ``rate`` (per second), ``reason``
``RunEnded``            ``run_id``, ``status`` (succeeded|failed|interrupted), ``counts``
                        (object: final state -> number of instances)
======================  ==================================================================

Consumers should ignore keys and types they do not know: new ones may be added.

Every secret value is replaced by ``***`` in every string (keys and values);
numbers and booleans are never altered, so every line stays valid JSON.

Writing: lines go to a buffered file, flushed once per turn of the event loop
(after all the events of that turn) and at ``RunEnded``, so a follower sees
events within one loop turn while a burst of events costs one ``write``.
Outside a running loop (tests, tools) every event is flushed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from fleetrun.engine import Event, RunEnded
from fleetrun.errors import FleetrunError, UsageError
from fleetrun.redact import Redactor

# The journal's event encoding, shared so the two never disagree: per event
# class its field names and a getter of their values; a compact JSON encoder.
from fleetrun.state import EVENT_FIELDS as _FIELDS
from fleetrun.state import encode_json as _ENCODE
from fleetrun.state import field_getter as _getter

_FEW = 16
"""Up to this many secret forms, plain substring checks beat a regex."""

EVENTS_FORMAT_VERSION = 1
"""Version of the line format above; bumped on any incompatible change."""


def _escaped(value: str) -> str:
    """``value`` as it appears inside a JSON string written by ``_ENCODE``."""
    return json.dumps(value, ensure_ascii=True)[1:-1]


def _redact_tree(obj: Any, redact: Callable[[str], str]) -> Any:
    """``obj`` (decoded JSON) with ``redact`` applied to every string, keys included."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {redact(k): _redact_tree(v, redact) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_redact_tree(v, redact) for v in obj]
    return obj


def _detector(forms: list[str]) -> Callable[[str], bool] | None:
    """A test for "holds one of ``forms``": substring checks for a few (much faster
    than a regex alternation on short lines), one regex for many."""
    if not forms:
        return None
    if len(forms) <= _FEW:
        few = tuple(forms)
        return lambda line: any(f in line for f in few)
    pattern = re.compile("|".join(map(re.escape, forms)))
    return lambda line: pattern.search(line) is not None


def event_fields(ev: Event) -> dict[str, Any]:
    """``{"type": ..., "at": ..., <fields>}`` for one event (not yet encoded)."""
    cls = type(ev)
    fields = _FIELDS.get(cls)
    if fields is None:
        names = tuple(f.name for f in dataclasses.fields(ev))
        fields = _FIELDS[cls] = (names, _getter(names))
    out: dict[str, Any] = {"type": cls.__name__}
    out.update(zip(fields[0], fields[1](ev), strict=True))
    return out


class EventsFile:
    """A subscriber writing every event to ``path`` as one JSON line (format above).

    Raises ``UsageError`` when ``path`` cannot be opened for writing. Call
    ``close()`` after the run; it raises ``FleetrunError`` if a write failed
    during the run (later events are then dropped, the run itself goes on).
    """

    def __init__(self, path: Path, redactor: Redactor) -> None:
        self.path = Path(path)
        self._redact = redactor.redact
        # Secrets as they would appear in encoded JSON text: a line holding none
        # of these (the common case) is written as encoded, untouched.
        forms = sorted({f for v in redactor.values for f in (v, _escaped(v))})
        self._detect = _detector(forms)
        self._file: TextIO | None = _open(self.path)
        self._pending = False
        self._error: OSError | None = None
        self.count = 0

    def __call__(self, ev: Event) -> None:
        """Encode ``ev`` and write it (flushed at the end of this loop turn)."""
        f = self._file
        if f is None:
            return
        obj = event_fields(ev)
        line = _ENCODE(obj)
        if self._detect is not None and self._detect(line):
            # Rare: a secret in an unredacted field (a published output). Redact
            # the decoded strings, so the line stays valid JSON.
            line = _ENCODE(_redact_tree(json.loads(line), self._redact))
        try:
            f.write(line + "\n")
        except OSError as e:
            self._fail(e)
            return
        self.count += 1
        if type(ev) is RunEnded:
            self._flush()
        elif not self._pending:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._flush()
            else:
                self._pending = True
                loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._pending = False
        if self._file is None:
            return
        try:
            self._file.flush()
        except OSError as e:
            self._fail(e)

    def _fail(self, e: OSError) -> None:
        self._error = e
        f, self._file = self._file, None
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()

    def close(self) -> None:
        """Flush and close the file; raise if writing it failed at any point."""
        if self._file is not None:
            self._flush()
            if self._file is not None:
                try:
                    self._file.close()
                except OSError as e:
                    self._error = self._error or e
                self._file = None
        err, self._error = self._error, None
        if err is not None:
            raise FleetrunError(
                f"writing the events file {self.path} failed: {err.strerror or err}; "
                "events after that point are missing from it (the journal has them all)"
            ) from err


def _open(path: Path) -> TextIO:
    try:
        # Never through a symbolic link (a planted link must not truncate another file).
        fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666
        )
        return os.fdopen(fd, "w", encoding="utf-8", newline="\n")
    except OSError as e:
        if isinstance(e, IsADirectoryError):
            fix = "give the path of a file, not of a directory"
        elif isinstance(e, FileNotFoundError):
            fix = f"create the directory {path.parent} first, or give another path"
        elif isinstance(e, PermissionError):
            fix = "give a path you may write to"
        elif e.errno == errno.ELOOP:
            fix = "it is a symbolic link; give the path of a regular file"
        else:
            fix = "give another path"
        raise UsageError(
            f"cannot write the events file {path}: {e.strerror or e}; fix: {fix}"
        ) from e
