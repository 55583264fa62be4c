"""Engine events read back from the journal as the typed events the engine emitted.

The writer stores each event as its class name and the JSON of its fields
(``JournalWriter``); ``decode_event`` turns such a row back into that class,
so whatever consumes live events (the consoles) can be fed from the record:
``fleetrun watch`` follows a run started by another process this way.

JSON has no tuples: fields declared as tuples (``AttemptEnded.tail``,
``WaveChanged.targets``) come back as lists and are turned into tuples again.
A row of a type this fleetrun does not know, or whose fields do not fit its
class (a journal written by a newer fleetrun), decodes to None: consumers
ignore events they do not know.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from typing import Any

from fleetrun.engine import Event

_Decoder = tuple[type[Event], frozenset[str], tuple[str, ...]]
"""An event class, its field names, and those of its fields that are tuples."""

_DECODERS: dict[str, _Decoder] = {}

# The C scanner behind ``json.loads``, called directly: a long run is read back
# as hundreds of thousands of small objects, and ``loads`` adds two regular
# expression matches and three calls to each.
_SCAN: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _decoders() -> dict[str, _Decoder]:
    """Every event class by name (its subclasses included), built once."""
    if not _DECODERS:
        stack: list[type[Event]] = [Event]
        while stack:
            cls = stack.pop()
            stack.extend(cls.__subclasses__())
            if getattr(sys.modules.get(cls.__module__), cls.__qualname__, None) is not cls:
                # Not the class its module names: ``dataclass(slots=True)``
                # makes a new class and the first stays a subclass until the
                # garbage collector takes it, so when this runs depends on
                # what was imported before. Events are made of the module's.
                continue
            fields = dataclasses.fields(cls)
            # Annotations are strings here (``from __future__ import annotations``).
            tuples = tuple(f.name for f in fields if str(f.type).startswith("tuple"))
            _DECODERS[cls.__name__] = (cls, frozenset(f.name for f in fields), tuples)
    return _DECODERS


def decode_event(type_name: str, data: str) -> Event | None:
    """The event of class ``type_name`` whose fields' JSON is ``data``; None for a
    type this fleetrun does not know, or fields that do not fit it."""
    decoder = _decoders().get(type_name)
    if decoder is None or type_name == "Event":
        return None
    cls, names, tuples = decoder
    try:
        raw, _ = _SCAN(data, 0)
    except (StopIteration, ValueError):
        return None
    if not isinstance(raw, dict):
        return None
    fields: dict[str, Any] = (
        raw if raw.keys() <= names else {k: v for k, v in raw.items() if k in names}
    )
    for name in tuples:
        value = fields.get(name)
        if isinstance(value, list):
            fields[name] = tuple(value)
    try:
        return cls(**fields)
    except TypeError:  # a field it needs is missing
        return None
