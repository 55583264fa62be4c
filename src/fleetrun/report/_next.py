"""After a run: which instances failed, each with its first error line, and what to run next."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fleetrun.engine import AttemptEnded, Event, InstanceSettled, repeats
from fleetrun.report._plain import printable
from fleetrun.textwidth import display_width, ljust

# Throttles read as errors too: a "429 Too Many Requests" says more than the line after it.
_ERRORISH = re.compile(
    r"error|fatal|failed|denied|refused|not found|exception"
    r"|\b429\b|too many requests|throttl|rate.?limit",
    re.IGNORECASE,
)

SHOWN = 20
"""Failed instances listed by name before the rest are counted (about a screenful)."""


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed instance: its key, why it failed, and the line of its log that says most
    (empty when that line only repeats why)."""

    key: str
    reason: str
    line: str


def first_error_line(tail: Sequence[str]) -> str:
    """The first line of ``tail`` that reads like an error, else its last non-blank line."""
    lines = [t.strip() for t in tail if t.strip()]
    for line in lines:
        if _ERRORISH.search(line):
            return line
    return lines[-1] if lines else ""


class FailureNotes:
    """A subscriber that remembers each failed instance and its last attempt's error line."""

    def __init__(self) -> None:
        self._line: dict[str, str] = {}
        self.failures: list[Failure] = []

    def __call__(self, ev: Event) -> None:
        if isinstance(ev, AttemptEnded) and ev.outcome == "failed":
            self._line[ev.key] = first_error_line(ev.tail)
        elif isinstance(ev, InstanceSettled) and ev.state == "failed":
            line = self._line.pop(ev.key, "")
            line = "" if repeats(line, ev.reason) else line
            self.failures.append(Failure(ev.key, ev.reason, line))


def next_steps(
    failures: Sequence[Failure],
    counts: Mapping[str, int],
    *,
    where: Sequence[str] = (),
    retry_of: str | None = None,
    shown: int = SHOWN,
) -> list[str]:
    """Lines for the end of a run: the failures (up to ``shown``, then a count) and the
    commands to run next. ``where`` are the arguments that find this plan's record
    (``--plan PLAN`` or ``--state-dir DIR``); ``retry_of`` names the run a retry re-ran."""
    lines: list[str] = []
    reused = counts.get("reused", 0)
    if retry_of is not None:
        rerun = sum(n for s, n in counts.items() if s != "reused")
        lines.append(f"{rerun} re-run, {reused} reused (from run {retry_of})")
    not_ok = sum(n for s, n in counts.items() if s not in ("succeeded", "reused"))
    if not not_ok:
        return lines
    if failures:
        lines.append(f"failed ({len(failures)}):")
        width = min(40, max(display_width(f.key) for f in failures[:shown]))
        for f in failures[:shown]:
            detail = f.reason + (f" — {f.line}" if f.line else "")
            lines.append(printable(f"  {ljust(f.key, width)}  {detail}"))
        if len(failures) > shown:
            lines.append(f"  and {len(failures) - shown} more (fleetrun show --state failed)")
    args = " ".join(shlex.quote(a) for a in where)
    suffix = f" {args}" if args else ""
    lines.append(
        printable(f"next: fleetrun retry{suffix}    # re-runs the {not_ok} that did not succeed")
    )
    if failures:
        lines.append(printable(f"      fleetrun logs {shlex.quote(failures[0].key)}{suffix}"))
    return lines
