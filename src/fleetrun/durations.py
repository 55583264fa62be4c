"""Durations: the one parser and the one formatter every package uses.

Reading (``parse_duration``): ``250ms``, ``30s``, ``5m``, ``1h30m``, ``2d``, ``1w``,
parts in any order and summed; a plain number is seconds wherever one is
accepted (a plan's ``timeout: 30``, ``exec --timeout 30``). A command whose
unit was once something else (``prune --older-than``, once days) refuses a
plain number instead (``unitless=False``), naming the units to use, so that an
old habit can never select runs by seconds where days were meant.

Writing (``format_duration``), in two shapes:

- clock-like, for what was measured (logs, tables, reports): ``0.4s``,
  ``12.3s``, ``4m05s``, ``1h02m``; ``fine`` shows hundredths below ten seconds
  (``2.50s``) for views that compare short steps;
- ``compact``, for estimates (``fleetrun plan``): ``0.5s``, ``45s``,
  ``12m 30s``, ``5m``, ``2h 5m``: zero parts are left out.

``None`` (not known) is written ``-`` in either shape.
"""

from __future__ import annotations

import math
import re

__all__ = [
    "DURATION_HELP",
    "DURATION_PATTERN",
    "UNITS",
    "format_duration",
    "is_negative",
    "is_plain_number",
    "parse_duration",
    "unit_needed",
]

_UNIT_SECONDS = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 7 * 86400.0,
}
UNITS = ", ".join(_UNIT_SECONDS)
"""The units a duration may use, for messages: ``ms, s, m, h, d, w``."""

_NUMBER = r"[0-9]+(\.[0-9]+)?"
_UNIT = "|".join(_UNIT_SECONDS)  # ``ms`` before ``m``: the longest unit wins
_WITH_UNITS = rf"^\s*({_NUMBER}\s*({_UNIT})\s*)+$"
_PLAIN_TEXT = rf"^\s*{_NUMBER}\s*$"
_WITH_UNITS_RE = re.compile(_WITH_UNITS)
_PLAIN_RE = re.compile(_PLAIN_TEXT)
_PART = re.compile(rf"([0-9]+(?:\.[0-9]+)?)\s*({_UNIT})")

DURATION_PATTERN = f"{_PLAIN_TEXT}|{_WITH_UNITS}"
"""A regular expression (JSON Schema dialect) matching exactly the text
``parse_duration`` takes: a plain number, or numbers each with a unit."""

DURATION_HELP = "write a duration such as 30s, 5m, 1h30m or 250ms (a plain number is seconds)"


def is_plain_number(value: object) -> bool:
    """Whether ``value`` is a number without a unit (``7``, ``"7"``, ``"2.5"``)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    return isinstance(value, str) and _PLAIN_RE.match(value) is not None


def is_negative(value: object) -> bool:
    """Whether ``value`` is a duration with a minus sign (``-5``, ``"-5"``, ``"-1s"``),
    which ``parse_duration`` refuses: a duration is never below zero."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return value < 0
    if not isinstance(value, str):
        return False
    text = value.strip()
    return text.startswith("-") and parse_duration(text[1:]) is not None


def parse_duration(value: object, *, unitless: bool = True) -> float | None:
    """Seconds for a duration value, or None when it is not one (negative included).

    ``unitless``: a plain number is seconds; when False it is not a duration
    (``unit_needed`` says what to write instead).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and _WITH_UNITS_RE.match(value):
        return sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(value))
    if not unitless or not is_plain_number(value):
        return None
    number = float(value)  # type: ignore[arg-type]  # a number, or its digits
    return number if math.isfinite(number) and number >= 0 else None


def unit_needed(option: str, value: str, example_unit: str) -> str:
    """The one-line refusal of a plain number where a unit is required:
    ``--older-than 7: give a unit, e.g. 7d (units: ms, s, m, h, d, w)``."""
    shown = value.strip()
    return f"{option} {shown}: give a unit, e.g. {shown}{example_unit} (units: {UNITS})"


def format_duration(seconds: float | None, *, fine: bool = False, compact: bool = False) -> str:
    """``seconds`` written for a person (see the module docstring for the shapes).

    Clock-like by default: ``0.4s``, ``12.3s``, ``4m05s``, ``1h02m``; ``fine``:
    hundredths below ten seconds (``2.50s``). ``compact``: three significant
    digits below ten seconds, then whole seconds with zero parts left out
    (``12m 30s``, ``5m``, ``2h 5m``). ``-`` for None.
    """
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if compact:
        return _compact(seconds)
    if fine and seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        m, s = divmod(round(seconds), 60)
        return f"{m}m{s:02d}s"
    h, rest = divmod(round(seconds), 3600)
    return f"{h}h{rest // 60:02d}m"


def _compact(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.3g}s"
    h, rest = divmod(round(seconds), 3600)
    m, sec = divmod(rest, 60)
    if h:
        return f"{h}h {m}m" if m else f"{h}h"
    if m:
        return f"{m}m {sec}s" if sec else f"{m}m"
    return f"{sec}s"
