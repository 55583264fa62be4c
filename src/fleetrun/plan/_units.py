"""Durations (``30s``, ``5m``, ``1h30m``, ``250ms``) and rates (``10/s``, ``600/m``)."""

from __future__ import annotations

import math
import re

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$")
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_RATE = re.compile(r"^(\d+(?:\.\d+)?)\s*/\s*(s|m|h|sec|second|min|minute|hour)$")
_RATE_SECONDS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
}

DURATION_HELP = "write a duration such as 30s, 5m, 1h30m or 250ms (a plain number is seconds)"
RATE_HELP = "write a rate such as 10/s, 600/m or 100/h"


def parse_duration(value: object) -> float | None:
    """Seconds for a duration value, or None when it is not one (negative included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) and value >= 0 else None
    if not isinstance(value, str):
        return None
    text = value.strip().replace(" ", "")
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return number if math.isfinite(number) and number >= 0 else None
    if not _DURATION.match(text):
        return None
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(text))


def parse_rate(value: object) -> float | None:
    """Events per second for a rate value (``10/s``; a plain number is per second)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        rate = float(value)
    elif isinstance(value, str):
        m = _RATE.match(value.strip())
        if m is None:
            return None
        rate = float(m.group(1)) / _RATE_SECONDS[m.group(2)]
    else:
        return None
    return rate if math.isfinite(rate) and rate > 0 else None
