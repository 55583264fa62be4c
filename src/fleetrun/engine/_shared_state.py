"""An ``AdaptiveLimit`` as text and back, so that runs can share one.

The adaptive algorithm (``_adaptive.py``) keeps its state in the slots of one
object. A shared pool keeps a snapshot of that object in its coordination
file, with the calls made on it since (``_shared_store``), so the algorithm
needs to know nothing about sharing. The codec reads and
writes the slots generically (numbers, None, text, tuples, lists, deques,
and objects of classes defined in ``_adaptive.py``), so a change of the
algorithm that adds or renames slots needs no change here; state written by
another version (other slots) does not load, and the pool starts a fresh
limit from its settings.

Deques keep their ``maxlen``; deques of floats (start or success times: the
part of the state that grows with the run) are stored as packed doubles,
which ``array`` packs by the thousand in microseconds where JSON takes
milliseconds.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
from array import array
from collections import deque
from typing import Any

from fleetrun.engine import _adaptive
from fleetrun.engine._adaptive import AdaptiveLimit
from fleetrun.plan import AdaptiveSettings

__all__ = ["describe", "load_adaptive", "settings_from", "settings_json", "store_adaptive"]


def _slots(cls: type) -> tuple[str, ...]:
    names: list[str] = []
    for c in reversed(cls.__mro__):
        s = c.__dict__.get("__slots__", ())
        names.extend([s] if isinstance(s, str) else s)
    return tuple(names)


def _enc(v: Any) -> Any:
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, float):
        # JSON has no infinities: keep them as text.
        return v if math.isfinite(v) else {"f": repr(v)}
    if isinstance(v, deque):
        if v and all(type(x) is float for x in v):
            return {"df": base64.b64encode(array("d", v).tobytes()).decode(), "m": v.maxlen}
        return {"d": [_enc(x) for x in v], "m": v.maxlen}
    if isinstance(v, tuple):
        return {"t": [_enc(x) for x in v]}
    if isinstance(v, list):
        return [_enc(x) for x in v]
    cls = type(v)
    if getattr(_adaptive, cls.__name__, None) is cls:
        if dataclasses.is_dataclass(v):
            fields = {f.name: _enc(getattr(v, f.name)) for f in dataclasses.fields(v)}
            return {"dc": cls.__name__, "v": fields}
        return {"o": cls.__name__, "v": {s: _enc(getattr(v, s)) for s in _slots(cls)}}
    raise TypeError(f"cannot store a {cls.__name__} of the adaptive state")


def _dec(v: Any) -> Any:
    if isinstance(v, list):
        return [_dec(x) for x in v]
    if not isinstance(v, dict):
        return v
    if "f" in v:
        return float(v["f"])
    if "df" in v:
        a = array("d")
        a.frombytes(base64.b64decode(v["df"]))
        return deque(a, v["m"])
    if "d" in v:
        return deque((_dec(x) for x in v["d"]), v["m"])
    if "t" in v:
        return tuple(_dec(x) for x in v["t"])
    cls = getattr(_adaptive, v.get("dc") or v.get("o") or "", None)
    if not isinstance(cls, type):
        raise ValueError("unknown class in the adaptive state")
    values = {k: _dec(x) for k, x in v["v"].items()}
    if "dc" in v:
        return cls(**values)
    return _restore(cls, values)


def _restore(cls: type[Any], values: dict[str, Any]) -> Any:
    names = _slots(cls)
    if set(names) != set(values):
        raise ValueError("the adaptive state was written by another version")
    obj = object.__new__(cls)
    for name in names:
        setattr(obj, name, values[name])
    return obj


def store_adaptive(limit: AdaptiveLimit) -> str:
    """The state of ``limit`` as text, its settings left out (the pool keeps them)."""
    return json.dumps(
        {s: _enc(getattr(limit, s)) for s in _slots(AdaptiveLimit) if s != "settings"},
        separators=(",", ":"),
    )


def load_adaptive(text: str, settings: AdaptiveSettings) -> AdaptiveLimit | None:
    """The limit stored by ``store_adaptive``, with ``settings``; None when the
    text does not hold the slots of this version's ``AdaptiveLimit``."""
    try:
        values = {k: _dec(v) for k, v in json.loads(text).items()}
        values["settings"] = settings
        limit = _restore(AdaptiveLimit, values)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    assert isinstance(limit, AdaptiveLimit)
    return limit


def settings_json(
    concurrency: int | None, rate: float | None, burst: int, adaptive: AdaptiveSettings | None
) -> str:
    """A pool's configured values as canonical text (compared between plans)."""
    return json.dumps(
        {
            "concurrency": concurrency,
            "rate": rate,
            "burst": burst,
            "adaptive": None if adaptive is None else dataclasses.asdict(adaptive),
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def settings_from(text: str) -> tuple[int | None, float | None, int, AdaptiveSettings | None]:
    """``(concurrency, rate, burst, adaptive)`` from ``settings_json``'s text;
    adaptive numbers this version does not know are left out."""
    d = json.loads(text)
    a = d.get("adaptive")
    adaptive: AdaptiveSettings | None = None
    if isinstance(a, dict):
        known = {f.name for f in dataclasses.fields(AdaptiveSettings)}
        adaptive = AdaptiveSettings(**{k: v for k, v in a.items() if k in known})
    return d.get("concurrency"), d.get("rate"), int(d.get("burst") or 1), adaptive


def describe(settings: str) -> str:
    """A shared pool's configured values in words: ``concurrency 8, rate 10/s, adaptive``
    (adaptive numbers named only where they differ from the defaults)."""
    concurrency, rate, burst, adaptive = settings_from(settings)
    words = []
    if concurrency is not None:
        words.append(f"concurrency {concurrency}")
    if rate is not None:
        words.append(f"rate {rate:g}/s" + (f", burst {burst}" if burst > 1 else ""))
    if adaptive is not None:
        default = AdaptiveSettings()
        changed = [
            f"{f.name} {_num(getattr(adaptive, f.name))}"
            for f in dataclasses.fields(adaptive)
            if getattr(adaptive, f.name) != getattr(default, f.name)
        ]
        words.append("adaptive" + (f" ({', '.join(changed)})" if changed else ""))
    return ", ".join(words) or "no limit"


def _num(v: object) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)
