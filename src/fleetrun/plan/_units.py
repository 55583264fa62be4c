"""Units of plan values: rates (``10/s``, ``600/m``) here; durations (``30s``, ``5m``,
``1h30m``, ``250ms``) come from ``fleetrun.durations``, the one rule every package uses.

A pool's rate lies between ``MIN_RATE`` (one start a day) and ``MAX_RATE`` (a million
starts a second); a plan's durations are at most ``MAX_DURATION`` (a year). Outside
those bounds a value is a slip (a unit or a few digits wrong), and it would show as
makespans of millions of hours. ``rate_problem`` and ``duration_hint`` say what was
written, the forms accepted and, where the slip is plain, the value meant.
"""

from __future__ import annotations

import difflib
import math
import re

from fleetrun.durations import DURATION_HELP as DURATION_HELP
from fleetrun.durations import is_negative as is_negative
from fleetrun.durations import parse_duration as parse_duration
from fleetrun.plan._written import as_written


def in_digits(text: str) -> str | None:
    """``text`` in plain digits when Python reads it as a finite number that YAML
    left as text (``1e12``: no dot, no exponent sign); None when it is no number."""
    try:
        number = float(text)
    except ValueError:
        return None
    if not math.isfinite(number):
        return None
    return f"{number:f}".rstrip("0").rstrip(".") if number != int(number) else str(int(number))


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
_UNIT_WORDS = {
    "secs": "s",
    "seconds": "s",
    "mins": "m",
    "minutes": "m",
    "hr": "h",
    "hrs": "h",
    "hours": "h",
}
"""Unit words a rate or duration does not take, and the unit meant."""
_SLOWER = {"d": 24.0, "day": 24.0, "days": 24.0, "w": 168.0, "week": 168.0, "weeks": 168.0}
"""Rate units longer than an hour: hours in each (a rate per day is written per hour)."""

MIN_RATE = 1 / 86400
"""The slowest rate a pool takes, in starts per second: one a day (``0.0417/h``)."""
MAX_RATE = 1_000_000.0
"""The fastest rate a pool takes, in starts per second (``1000000/s``)."""
MAX_DURATION = 365 * 86400.0
"""The longest duration a plan takes (timeouts, estimates, backoffs), in seconds: ``365d``."""

RATE_HELP = "write a rate as N/s, N/m or N/h (such as 10/s, 600/m or 100/h), or a number per second"


def parse_rate(value: object) -> float | None:
    """Events per second for a rate value (``10/s``; a plain number is per second);
    None when it is not one, or lies outside ``MIN_RATE`` .. ``MAX_RATE``."""
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
    return rate if MIN_RATE <= rate <= MAX_RATE else None


def _number(x: float) -> str:
    """A number as a rate is written: digits, three significant ones below 1000."""
    return f"{x:.3g}" if x < 1000 else f"{x:.0f}"


def _rate_range(rate: float, shown: str) -> tuple[str, str] | None:
    """Why ``rate`` (starts per second) is outside the bounds, or None."""
    if not rate > 0:  # NaN too
        return (f"{shown}: a rate must be above zero", f"{RATE_HELP}; leave rate out for no limit")
    if rate < MIN_RATE:
        return (
            f"{shown} is under one start a day, the slowest rate a pool takes",
            "write at least 0.0417/h (one a day), or limit the pool by concurrency instead",
        )
    if rate > MAX_RATE or not math.isfinite(rate):
        return (
            f"{shown} is over {MAX_RATE:.0f}/s, the fastest rate a pool takes",
            f"write at most {MAX_RATE:.0f}/s, or leave rate out for no limit on starts",
        )
    return None


def rate_problem(value: object, written: str | None = None) -> tuple[str, str]:
    """Why ``value`` (written in the plan as ``written``) is not a rate: the message,
    quoting it, and the fix, with the rate meant where a unit word gives it away."""
    if isinstance(value, bool):
        return (f"{written or value} is read by YAML as a boolean, not a rate", RATE_HELP)
    if value is None:
        return (f"{written or 'null'} is not a rate", f"{RATE_HELP}, or leave the key out")
    if isinstance(value, list | dict):
        return (f"a {'list' if isinstance(value, list) else 'mapping'} is not a rate", RATE_HELP)
    if isinstance(value, int | float):
        shown = written or repr(value)
        return _rate_range(float(value), shown) or (f"{shown} is not a rate", RATE_HELP)
    text = str(value).strip()
    shown = repr(written if written is not None else value)
    number, slash, unit = (part.strip() for part in text.partition("/"))
    try:
        amount = float(number)
    except ValueError:
        return (f"{shown} is not a rate", RATE_HELP)
    unit = unit.lower()
    per = _RATE_SECONDS.get(unit)
    if math.isnan(amount):
        return (f"{shown} is not a rate", RATE_HELP)
    if not slash:
        out_of_range = _rate_range(amount, shown)
        if out_of_range is not None:
            return out_of_range
        return (f"{shown} has no unit (did you mean {_number(amount)}/s?)", RATE_HELP)
    if per is None and unit not in _UNIT_WORDS and unit not in _SLOWER:
        close = _close_unit(unit)
        hint = f" (did you mean {_number(amount)}/{close}?)" if close and amount > 0 else ""
        return (f"{shown}: {as_written(unit)} is not a unit of a rate{hint}", RATE_HELP)
    if per is None:
        if unit in _UNIT_WORDS:
            per = _RATE_SECONDS[_UNIT_WORDS[unit]]
            meant = f"{number}/{_UNIT_WORDS[unit]}"
        else:
            per = _SLOWER[unit] * 3600
            meant = f"{_number(amount / _SLOWER[unit])}/h"
        out_of_range = _rate_range(amount / per, shown)
        if out_of_range is not None:
            return out_of_range
        return (
            f"{shown}: {as_written(unit)} is not a unit of a rate (did you mean {meant}?)",
            RATE_HELP,
        )
    out_of_range = _rate_range(amount / per, shown)
    if out_of_range is not None:
        return out_of_range
    # A number Python reads but the plan does not: 1e3, +5, .5, 5.
    return (
        f"{shown}: write the number in digits (did you mean {_number(amount)}/{unit}?)",
        RATE_HELP,
    )


def _close_unit(unit: str) -> str | None:
    """The accepted unit ``unit`` is a slip of, if one is plain (``sek`` -> ``s``)."""
    close = difflib.get_close_matches(unit, [*_RATE_SECONDS, *_UNIT_WORDS], n=1, cutoff=0.6)
    return _UNIT_WORDS.get(close[0], close[0]) if close else None


def duration_hint(text: str) -> str:
    """`` (did you mean '5m'?)`` for a duration written with unit words (``5 minutes``),
    or an empty string."""
    words = {**_UNIT_WORDS, "sec": "s", "second": "s", "min": "m", "minute": "m", "hour": "h"}
    words |= {"day": "d", "days": "d", "week": "w", "weeks": "w"}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([A-Za-z]+)", text)
    if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([A-Za-z]+)|[\s,]|and", "", text):
        return ""
    meant = "".join(n + words.get(u.lower(), u.lower()) for n, u in parts)
    return f" (did you mean {meant!r}?)" if parse_duration(meant) is not None else ""
