"""What ``fleetrun exec`` prints: each target's output as one block, then a table.

Blocks come in fleet order (never interleaved, whatever order the targets
finished in), each headed by the target, how it ended and how long it took;
then one table row per target: target, exit, duration, last line of output
(or the failure's reason). ``render_json`` is the same for scripts: a list of
objects in fleet order. Everything given here is already redacted.
"""

from __future__ import annotations

import json
import signal as _signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fleetrun.report._text import format_duration
from fleetrun.textwidth import clip, display_width, ljust, rjust

_LAST_LINE_WIDTH = 72


@dataclass(frozen=True, slots=True)
class TargetOutcome:
    """How the exec command ended on one target (as the journal has it).

    ``exit_code`` None with ``signal``: killed; with ``reason``: never reported
    one (``error_kind`` ``connect``/``lost``/``internal``); ``duration`` None:
    it never ran (skipped or cancelled before it started).
    """

    target: str
    exit_code: int | None
    signal: int | None = None
    timed_out: bool = False
    reason: str | None = None
    error_kind: str | None = None
    duration: float | None = None
    output: str = ""

    @property
    def ok(self) -> bool:
        """True when the command exited 0 in time."""
        return self.exit_code == 0 and not self.timed_out

    @property
    def status(self) -> str:
        """``0``, ``1``, ``timeout``, ``SIGTERM``, ``connect``, ``lost`` or ``-`` (did not run)."""
        if self.timed_out:
            return "timeout"
        if self.exit_code is not None:
            return str(self.exit_code)
        if self.signal is not None:
            try:
                return _signal.Signals(self.signal).name
            except ValueError:
                return f"signal {self.signal}"
        if self.error_kind is not None:
            return self.error_kind
        return "-"

    @property
    def last_line(self) -> str:
        """The last non-blank line of the output, else the reason (one line)."""
        for line in reversed(self.output.splitlines()):
            if line.strip():
                return line.strip()
        return (self.reason or "").splitlines()[0] if self.reason else ""


def render_exec_text(outcomes: Sequence[TargetOutcome]) -> str:
    """The blocks, then the table (plain text, ending with a newline)."""
    out: list[str] = []
    for o in outcomes:
        head = f"── {o.target} ── exit {o.status}, {format_duration(o.duration, fine=True)} "
        out.append(head + "─" * max(3, 60 - display_width(head)))
        body = o.output
        if body:
            out.append(body if body.endswith("\n") else body + "\n")
        if o.reason and not o.ok:
            out.append(f"! {o.reason}\n")
        out.append("\n")
    rows = [("TARGET", "EXIT", "DURATION", "LAST LINE")]
    rows += [
        (
            o.target,
            o.status,
            format_duration(o.duration, fine=True),
            clip(o.last_line, _LAST_LINE_WIDTH),
        )
        for o in outcomes
    ]
    widths = [max(display_width(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        cells = (ljust(r[0], widths[0]), rjust(r[1], widths[1]), rjust(r[2], widths[2]), r[3])
        out.append("  ".join(cells).rstrip() + "\n")
    failed = sum(not o.ok for o in outcomes)
    out.append(f"{len(outcomes) - failed} succeeded, {failed} failed\n")
    return "".join(s if s.endswith("\n") else s + "\n" for s in out)


def as_json(outcomes: Sequence[TargetOutcome]) -> list[dict[str, Any]]:
    """The outcomes as JSON-ready objects, in fleet order."""
    return [
        {
            "target": o.target,
            "ok": o.ok,
            "exit_code": o.exit_code,
            "signal": o.signal,
            "timed_out": o.timed_out,
            "error_kind": o.error_kind,
            "reason": o.reason,
            "duration_s": o.duration,
            "output": o.output,
            "last_line": o.last_line,
        }
        for o in outcomes
    ]


def render_exec_json(outcomes: Sequence[TargetOutcome]) -> str:
    """``--format json``: a JSON array of ``as_json`` objects (and a newline)."""
    return json.dumps(as_json(outcomes), indent=2, ensure_ascii=False) + "\n"


def exec_exit_code(outcomes: Sequence[TargetOutcome]) -> int:
    """0 when every target succeeded, else 1 (the CLI's codes for a run)."""
    return 0 if all(o.ok for o in outcomes) else 1
