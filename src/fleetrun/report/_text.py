"""Text building blocks every text view shares: durations (``fleetrun.durations``), times,
state counts, tables."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from fleetrun.durations import format_duration as format_duration
from fleetrun.textwidth import display_width, ljust

STATE_ORDER = (
    "succeeded",
    "reused",
    "failed",
    "skipped",
    "cancelled",
    "interrupted",
    "not_started",
)
"""Final instance states in the order every view lists them; any other state
(``running``, ``pending``) comes after these."""

SHORTEST_MEASURED = 1.0
"""Seconds of wall and of task time under which a speedup is not measured: start-up and
bookkeeping dominate so short a run, and its ratio (``0.2x``) says nothing about the work."""

TOO_SHORT = "too short to measure"
"""What every view shows in place of a speedup that ``speedup`` does not measure."""


def speedup(task_time: float, wall: float) -> float | None:
    """``task_time / wall``: how many times faster than running the attempts one after
    another. ``None`` when either is under ``SHORTEST_MEASURED`` (too short to measure).
    The one rule for every report format, the console and the live view."""
    if wall < SHORTEST_MEASURED or task_time < SHORTEST_MEASURED:
        return None
    return task_time / wall


def format_speedup(ratio: float | None, places: int = 2, times: str = "x") -> str:
    """``2.50x`` (``places`` decimals, the ``times`` sign), or ``TOO_SHORT`` for ``None``."""
    return TOO_SHORT if ratio is None else f"{ratio:.{places}f}{times}"


def format_span(start: float | None, end: float | None) -> str:
    """``format_duration(end - start, fine=True)``; ``-`` when either is unknown."""
    return format_duration(None if start is None or end is None else end - start, fine=True)


def format_time(at: float | None) -> str:
    """Local wall-clock time, to the second; ``-`` when unknown."""
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def format_counts(counts: Mapping[str, int]) -> str:
    """``12 succeeded, 2 failed`` in ``STATE_ORDER`` (other states after, by name)."""
    order = [s for s in STATE_ORDER if s in counts] + sorted(set(counts) - set(STATE_ORDER))
    return ", ".join(f"{counts[s]} {s}" for s in order if counts[s])


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A left-aligned text table; the last column is not padded. Control characters
    in cells (a target name holding a carriage return) are shown escaped."""
    rows = [[c if c.isprintable() else _escape(c) for c in r] for r in rows]
    widths = [
        max([display_width(h), *(display_width(r[i]) for r in rows)]) for i, h in enumerate(headers)
    ]
    lines = []
    for row in [list(headers), *rows]:
        # Padded by display width: a Chinese or Japanese name keeps the columns.
        cells = [ljust(c, widths[i]) for i, c in enumerate(row[:-1])] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_ESCAPES.update({0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"})


def _escape(text: str) -> str:
    """``text`` with every control character (C0, DEL, C1) shown as its escape."""
    return text.translate(_ESCAPES)
