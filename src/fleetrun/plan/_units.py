"""Units of plan values: rates (``10/s``, ``600/m``) here; durations (``30s``, ``5m``,
``1h30m``, ``250ms``) come from ``fleetrun.durations``, the one rule every package uses."""

from __future__ import annotations

import math
import re

from fleetrun.durations import DURATION_HELP as DURATION_HELP
from fleetrun.durations import is_negative as is_negative
from fleetrun.durations import parse_duration as parse_duration

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

RATE_HELP = "write a rate such as 10/s, 600/m or 100/h"


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
