"""Queued time: how long ready instances waited to start, and why.

The engine records, with each attempt, when its instance became ready and what
held it until the attempt started (``AttemptStarted.ready_at`` and
``queued_reason``, in the journal since schema version 5). An attempt's queued
time is ``started_at - ready_at``; an instance's is the sum over its attempts,
and a task's, a pool's or a span's the sum over its instances: instance-seconds,
like task time, so it can exceed the wall time when many instances wait at once.

Reasons are the engine's words: "wave closed", "phase", "pool NAME full",
"pool NAME rate", "pool NAME paused for Retry-After", "parallelism limit
(-j N)"; queued time without one counts as ``OTHER``.

The engine journals one reason per attempt, the obstacle that held its pools
longest, for the whole wait; a wait through Retry-After pauses and rate pacing
in turn is all one or the other. ``split`` divides such a wait at the pool's
pauses, as the journal's ``PoolChanged`` events place them, so the time each
obstacle held it counts under its own reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from fleetrun.engine import BACKOFF_PAUSED
from fleetrun.report._model import PoolPause
from fleetrun.report._text import format_duration

OTHER = "other"
"""The reason of queued time that no limit caused: an instance waited for the
journal to commit its requirements' ends, or for the event loop; or the journal
predates recorded reasons."""

LOW = 2.0
"""A span is held back when its wall time is over this many times what its
critical path and -j allow (``held_back``)."""

_NOTABLE = 0.1
"""... and the queued time its named reasons explain is at least this share of its wall."""


def add(into: dict[str, float], reason: str | None, seconds: float) -> None:
    """Count ``seconds`` of queued time for ``reason`` (``OTHER`` when None)."""
    if seconds > 0:
        key = reason or OTHER
        into[key] = into.get(key, 0.0) + seconds


_PACED = (" paused for Retry-After", f" {BACKOFF_PAUSED}", " rate")
"""How the reasons that ``split`` divides end, after ``pool NAME``."""


def _paced_pool(reason: str | None) -> str | None:
    """The pool a "pool NAME rate" or "pool NAME paused for Retry-After" reason names."""
    if reason is None or not reason.startswith("pool "):
        return None
    for tail in _PACED:
        if reason.endswith(tail) and len(reason) > len("pool ") + len(tail):
            return reason[len("pool ") : -len(tail)]
    return None


def split(
    reason: str | None,
    ready_at: float | None,
    started_at: float,
    pauses: Mapping[str, Sequence[PoolPause]],
) -> dict[str, float]:
    """An attempt's queued seconds by reason, most first ({} when its ready
    time is not recorded).

    A wait that ``reason`` puts on pool NAME's rate or Retry-After pause is
    divided at that pool's pauses (``pauses``: per pool, its pause intervals
    in wall-clock seconds, apart from each other, ``pause_spans``): the time
    inside a pause is "pool NAME paused for Retry-After", the rest "pool NAME
    rate". Any other reason, or a pool with no recorded pause, keeps the whole
    wait as journaled.
    """
    out: dict[str, float] = {}
    if ready_at is None:
        return out
    wait = started_at - ready_at
    pool = _paced_pool(reason)
    spans = pauses.get(pool, ()) if pool is not None else ()
    if not spans:
        add(out, reason, wait)
        return out
    inside = {False: 0.0, True: 0.0}  # by back-off
    for p in spans:
        inside[p.backoff] += max(0.0, min(p.end, started_at) - max(p.start, ready_at))
    provider = min(inside[False], max(wait, 0.0))
    own = min(inside[True], max(wait - provider, 0.0))
    add(out, f"pool {pool} paused for Retry-After", provider)
    add(out, f"pool {pool} {BACKOFF_PAUSED}", own)
    add(out, f"pool {pool} rate", wait - provider - own)
    return ordered(out)


def said(reasons: Mapping[str, float], reason: str | None) -> str:
    """An attempt's queued reason in words: its one reason, or, when ``split``
    divided its wait, each part with its seconds (``format_reasons``);
    ``reason`` (the journaled one) when it has no parts."""
    if not reasons:
        return reason or OTHER
    text = format_reasons(reasons) if len(reasons) > 1 else "-"
    return text if text != "-" else next(iter(reasons))


def ordered(reasons: Mapping[str, float]) -> dict[str, float]:
    """``reasons`` most seconds first (ties by name)."""
    return dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))


def merge(parts: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """The reasons of several instances (or tasks) summed, most seconds first."""
    out: dict[str, float] = {}
    for part in parts:
        for reason, seconds in part.items():
            out[reason] = out.get(reason, 0.0) + seconds
    return ordered(out)


SHOWN = 0.005
"""Reasons with less queued time than this (they would read ``0.00s``) are not listed."""


def format_reasons(reasons: Mapping[str, float], limit: int = 3) -> str:
    """``pool api rate 3.20s, wave closed 1.00s`` (the ``limit`` largest, then ``+N more``);
    ``-`` when nothing queued for at least ``SHOWN``."""
    items = [(r, s) for r, s in reasons.items() if s >= SHOWN]
    if not items:
        return "-"
    text = ", ".join(f"{r} {format_duration(s, fine=True)}" for r, s in items[:limit])
    if len(items) > limit:
        text += f", +{len(items) - limit} more"
    return text


def held_back(
    wall: float,
    critical_path: float,
    task_time: float,
    parallelism: int | None,
    reasons: Mapping[str, float],
) -> str:
    """Why a span's speedup is low, when queued time says so: ``41.0s queued: pool
    azure-api rate`` (and the second reason, if any); "" otherwise.

    Low: the wall time is over ``LOW`` times ``max(critical path, task time /
    -j)``, the least the graph and -j allow. Only the reasons that limits
    outside that bound give count (pools, rate, Retry-After pauses, waves,
    phases), not the -j limit itself nor ``OTHER``.
    """
    if wall <= 0:
        return ""
    allowed = max(critical_path, task_time / parallelism if parallelism else 0.0)
    if wall <= LOW * allowed:
        return ""
    named = [
        (r, s) for r, s in reasons.items() if r != OTHER and not r.startswith("parallelism limit")
    ]
    if not named or sum(s for _, s in named) < _NOTABLE * wall:
        return ""
    (first, secs), *rest = named
    text = f"{format_duration(secs)} queued: {first}"
    if rest:
        text += f", {format_duration(rest[0][1])} {rest[0][0]}"
    return text
