"""A pool's limits over the run (``PoolSeries``), and the one line that tells it.

The engine says every change of a pool's effective rate and concurrency, and
every Retry-After pause and its end, as a ``PoolChanged`` event with its
reason; the journal keeps them in order. ``pool_series`` turns a pool's
events into a step function from the run's start, beside the throttled
attempts of the tasks that use the pool (``AttemptRecord.throttled``, the
engine's decision) and the pauses as intervals. Nothing is re-derived: the
reasons are the engine's words, and a pause lasts what its Retry-After
announced (``_pauses``).

``summary_line`` is the compact text every text report shows per pool, e.g.
``pool api: rate 200/s -> 100 -> 38.8 (granted about 40/s); 16 throttles,
3 pauses (3.0s)``; the HTML report draws the same series (``_html_pools``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from typing import Any

from fleetrun.engine import BACKOFF_WHY
from fleetrun.plan import Pool
from fleetrun.report._model import (
    AttemptRecord,
    PoolPause,
    PoolPoint,
    PoolSeries,
    PoolThrottle,
    RunReport,
)
from fleetrun.report._plain import printable
from fleetrun.report._text import format_duration

RESUMED = "resumed:"
"""How the reason of the event that ends a Retry-After pause begins (the engine's words)."""

MAX_STEPS = 8
"""Values of one limit that ``summary_line`` names in full; past that, the first
four, the number left out and the last three."""

_GRANTED = re.compile(r"granted about [0-9.]+(?:e[+-]?[0-9]+)?/s")


def pool_series(
    pools: Iterable[Pool],
    tasks_of: Mapping[str, Set[str]],
    events: Iterable[Mapping[str, Any]],
    attempts: Sequence[AttemptRecord],
    started_at: float,
    end_at: float,
    redact: Callable[[str], str] = lambda s: s,
) -> tuple[PoolSeries, ...]:
    """The series of each pool in ``pools`` (plan order) that has a ``PoolChanged``.

    ``tasks_of`` maps a pool to the tasks that use it; ``events`` are the run's
    ``PoolChanged`` fields in journal order (``at``, ``pool``, ``rate``,
    ``concurrency``, ``paused``, ``reason``; a malformed one is left out);
    ``started_at`` and ``end_at`` are the run's start and end (or last trace),
    wall-clock seconds. Reasons pass through ``redact``.
    """
    by_pool: dict[str, list[PoolPoint]] = {}
    for ev in events:
        point = _point(ev, started_at, redact)
        if point is not None:
            by_pool.setdefault(str(ev["pool"]), []).append(point)
    end = max(0.0, end_at - started_at)
    out = []
    for pool in pools:
        changes = by_pool.get(pool.name)
        if not changes:
            continue
        # The engine enforces the configured values until it announces a change.
        start = PoolPoint(t=0.0, rate=pool.rate or None, concurrency=pool.concurrency,
                          kind="start", reason="the configured limits")  # fmt: skip
        # Journal order is time order; a stable sort keeps ties as journaled.
        points = (start, *sorted(changes, key=lambda p: p.t))
        users = tasks_of.get(pool.name, set())
        throttles = tuple(
            PoolThrottle(
                t=max(0.0, (a.ended_at if a.ended_at is not None else a.started_at) - started_at),
                key=a.key,
                n=a.n,
            )
            for a in attempts
            if a.throttled and a.task in users
        )
        out.append(
            PoolSeries(
                pool=pool.name,
                rate=pool.rate,
                concurrency=pool.concurrency,
                adaptive=bool(pool.adaptive),
                points=points,
                throttles=tuple(sorted(throttles, key=lambda x: x.t)),
                pauses=_pauses(points, max(end, points[-1].t)),
                end=max(end, points[-1].t),
            )
        )
    return tuple(out)


def pause_spans(
    events: Iterable[Mapping[str, Any]], end_at: float
) -> dict[str, tuple[PoolPause, ...]]:
    """Each pool's Retry-After pauses in wall-clock seconds, as the series have
    them (``_pauses``), from the run's ``PoolChanged`` fields in journal order;
    a pause still on when the record stops ends at ``end_at``. Pools that never
    paused are left out. It needs no plan: it names pools as the events do."""
    by_pool: dict[str, list[PoolPoint]] = {}
    for ev in events:
        point = _point(ev, 0.0, lambda s: s)
        if point is not None:
            by_pool.setdefault(str(ev["pool"]), []).append(point)
    out: dict[str, tuple[PoolPause, ...]] = {}
    for pool, points in by_pool.items():
        points.sort(key=lambda p: p.t)  # stable: ties stay as journaled
        pauses = _pauses(points, max(end_at, points[-1].t))
        if pauses:
            out[pool] = pauses
    return out


def _number(value: object) -> float | None:
    """A finite number from the journal's JSON (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _point(
    ev: Mapping[str, Any], started_at: float, redact: Callable[[str], str]
) -> PoolPoint | None:
    at, rate, paused = _number(ev.get("at")), _number(ev.get("rate")), _number(ev.get("paused", 0))
    conc = ev.get("concurrency")
    if not isinstance(ev.get("pool"), str) or at is None or rate is None or paused is None:
        return None
    if conc is not None and (isinstance(conc, bool) or not isinstance(conc, int)):
        return None
    reason = redact(str(ev.get("reason", "")))
    kind = "pause" if paused > 0 else "resume" if reason.startswith(RESUMED) else "change"
    return PoolPoint(
        t=max(0.0, at - started_at),
        rate=rate if rate > 0 else None,  # 0: the pool has no rate
        concurrency=conc,
        kind=kind,
        reason=reason,
        paused=max(0.0, paused),
    )


def _pauses(points: Sequence[PoolPoint], end: float) -> tuple[PoolPause, ...]:
    """Pause intervals. A pause lasts its announced length; a pause announced
    while one is on extends it, one announced after it ran out begins another.
    The engine says ``resumed`` when it next looks at the pool, which may be
    later: a resume only cuts a pause short, it never makes it longer. A pause
    still on when the record stops ends at ``end``."""
    out: list[PoolPause] = []
    began: float | None = None
    until = 0.0
    own = True  # every pause of the interval was a back-off of the pool's own
    for p in points:
        if p.kind == "pause":
            if began is not None and p.t > until:
                out.append(PoolPause(began, until, own))
                began = None
            if began is None:
                began, until, own = p.t, p.t + p.paused, True
            else:
                until = max(until, p.t + p.paused)
            own = own and BACKOFF_WHY in p.reason
        elif p.kind == "resume" and began is not None:
            out.append(PoolPause(began, max(began, min(until, p.t)), own))
            began = None
    if began is not None:
        out.append(PoolPause(began, max(began, min(until, end)), own))
    return tuple(out)


def _rate(r: float) -> str:
    return f"{r:.3g}"


def _steps(points: Sequence[PoolPoint], value: Callable[[PoolPoint], Any]) -> list[PoolPoint]:
    """The points at which ``value`` changed (the first point always)."""
    out: list[PoolPoint] = []
    for p in points:
        if not out or value(p) != value(out[-1]):
            out.append(p)
    return out


def _chain(words: list[str]) -> str:
    """``a -> b -> c``, the middle left out past ``MAX_STEPS`` values."""
    if len(words) > MAX_STEPS:
        left = len(words) - 7
        words = [*words[:4], f"... ({left} more)", *words[-3:]]
    return " -> ".join(words)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def summary_line(s: PoolSeries) -> str:
    """One line for a pool: its rate and concurrency as they moved, then its
    throttles and pauses. Plain text: the caller escapes it for its medium.

    ``pool api: rate 200/s -> 100 -> 38.8 (granted about 40/s) -> 39.5,
    concurrency 8 -> 16; 16 throttles, 3 pauses (3.0s)``
    """
    parts = []
    rates = _steps(s.points, lambda p: p.rate)
    if any(p.rate is not None for p in rates):
        words = []
        for k, p in enumerate(rates):
            word = "none" if p.rate is None else _rate(p.rate) + ("/s" if k == 0 else "")
            granted = _GRANTED.search(p.reason) if k else None
            words.append(f"{word} ({granted.group(0)})" if granted else word)
        parts.append("rate " + _chain(words))
    concs = _steps(s.points, lambda p: p.concurrency)
    if any(p.concurrency is not None for p in concs):
        words = ["uncapped" if p.concurrency is None else str(p.concurrency) for p in concs]
        parts.append("concurrency " + _chain(words))
    limits = ", ".join(parts) or "unlimited"
    pauses = _plural(len(s.pauses), "pause")
    if s.pauses:
        pauses += f" ({format_duration(s.paused)})"
    return f"pool {s.pool}: {limits}; {_plural(len(s.throttles), 'throttle')}, {pauses}"


def pool_lines(report: RunReport) -> list[str]:
    """``summary_line`` of each pool of ``report`` that changed its limits or paused,
    control characters escaped (``printable``), for the text and markdown reports."""
    return [printable(summary_line(s)) for s in report.pool_series]
