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
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

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
