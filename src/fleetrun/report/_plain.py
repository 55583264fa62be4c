"""``PlainConsole``: one timestamped line per state change, and a final summary.

Never prints a child's raw output: a failure shows the last lines of its log
(already redacted in the event). Suited to CI logs and pipes.

Names and values fleetrun composes into its own lines (targets, tasks,
reasons, pools, log tails) go through ``printable``: a control character shows
as its escape (``\\r``, ``\\x1b``), so no name can rewrite a line or clear the
screen. Task output shown on a terminal goes through ``terminal_safe``:
colours (SGR sequences) are kept, every other control character is escaped.

``use_live`` says which of the two consoles a stream gets; it lives here, apart
from rich, so that choosing plain lines never imports the live view.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import TextIO

from fleetrun.engine import (
    AttemptEnded,
    AttemptStarted,
    Event,
    InstanceReused,
    InstanceSettled,
    PoolChanged,
    RunEnded,
    RunResult,
    RunStarted,
    WaveChanged,
    accepted_text,
    distinct_tail,
    ending_text,
    left_running_text,
)
from fleetrun.plan import Graph
from fleetrun.report._text import STATE_ORDER as STATE_ORDER
from fleetrun.report._text import format_duration as format_duration
from fleetrun.report._text import format_speedup, speedup

_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r", "\x1b": "\\x1b"}
_ESCAPES = {c: _NAMED.get(chr(c), f"\\x{c:02x}") for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
# Invisible characters that reorder or hide text (bidi overrides and isolates,
# zero-width marks, the BOM): "Trojan source" names show as what they are.
_INVISIBLE = (
    0x061C,
    *range(0x200B, 0x2010),
    *range(0x202A, 0x202F),
    *range(0x2060, 0x2065),
    *range(0x2066, 0x206A),
    0xFEFF,
)
_ESCAPES.update({c: f"\\u{c:04x}" for c in _INVISIBLE})
_KEEP_TAB = {k: v for k, v in _ESCAPES.items() if k != 0x09}
_SGR = re.compile(r"(\x1b\[[0-9;:]*m)")


def printable(text: str) -> str:
    """``text`` with every control character (C0, DEL, C1) and every invisible
    bidi or zero-width character shown as its escape."""
    return text if text.isprintable() else text.translate(_ESCAPES)


def terminal_safe(text: str) -> str:
    """Task output for a terminal: colours (SGR) kept, tabs and newlines kept, every
    other control character escaped (no cursor movement, no rewritten line)."""
    if text.isprintable():
        return text
    parts = _SGR.split(text)
    # Odd items are SGR sequences: kept as they are.
    for i in range(0, len(parts), 2):
        parts[i] = "\n".join(ln.translate(_KEEP_TAB) for ln in parts[i].split("\n"))
    return "".join(parts)


TAIL_INDENT = "           | "
"""Prefix of the log-tail lines under a failure."""


def stamp(at: float) -> str:
    """``HH:MM:SS`` in local time: the prefix of every event line."""
    return time.strftime("%H:%M:%S", time.localtime(at))


def reused_text(reused: Sequence[InstanceReused]) -> str:
    """The one line that stands for every instance a run reuses, naming the runs
    whose records they come from."""
    keys = [ev.key for ev in reused]
    shown = ", ".join(map(printable, keys[:3])) + (
        f" and {len(keys) - 3} more" if len(keys) > 3 else ""
    )
    runs: dict[str, int] = {}
    for ev in reused:
        runs[ev.from_run] = runs.get(ev.from_run, 0) + 1
    named = [r for r in runs if r]
    if not named:
        where = ""
    elif len(runs) == 1:
        where = f", from run {named[0]}"
    else:
        where = ", from runs " + ", ".join(f"{r or 'not named'} ({n})" for r, n in runs.items())
    return f"reused     {len(keys)} instance(s) that succeeded before{where}: {shown}"


def skipped_text(skipped: Sequence[InstanceSettled], halted: WaveChanged | None = None) -> str:
    """The one line that stands for instances skipped one after the other for
    the same reason: a halted rollout skips every instance of its later waves.

    ``halted`` is the rollout's last ``halted`` event; when the reason is its
    reason, the line names the waves instead of the instances.
    """
    first = skipped[0]
    if len(skipped) == 1:
        return f"skipped    {first.key}: {first.reason}"
    n = len(skipped)
    if halted is not None and first.reason == halted.reason:
        w, last = halted.wave, halted.waves
        waves = f"wave {w}" if w >= last else f"waves {w}-{last}"
        if halted.phase:
            waves = f"phase {halted.phase}, {waves}"
        return f"skipped    {n} instance(s) of {waves}: {first.reason}"
    keys = [ev.key for ev in skipped]
    shown = ", ".join(keys[:3]) + (f" and {n - 3} more" if n > 3 else "")
    return f"skipped    {n} instance(s) ({shown}): {first.reason}"


class SkipBatch:
    """Collects consecutive skips with one reason, so that a console says them
    as one line (``skipped_text``) instead of one line per instance."""

    def __init__(self) -> None:
        self.skipped: list[InstanceSettled] = []
        self.halted: WaveChanged | None = None

    def before(self, ev: Event) -> tuple[float, list[str]] | None:
        """Called with every event before the console handles it. Returns the
        collected line to print first (its time and lines), if ``ev`` ends a batch."""
        if isinstance(ev, WaveChanged) and ev.state == "halted":
            self.halted = ev
        if not self.skipped:
            return None
        if (
            self.holds(ev)
            and isinstance(ev, InstanceSettled)
            and (ev.reason == self.skipped[0].reason)
        ):
            return None
        return self.flush()

    @staticmethod
    def holds(ev: Event) -> bool:
        """Whether ``ev`` is a skip (collected, not said on its own)."""
        return isinstance(ev, InstanceSettled) and ev.state == "skipped"

    def add(self, ev: InstanceSettled) -> None:
        """Collect one skip (call ``before`` first)."""
        self.skipped.append(ev)

    def flush(self) -> tuple[float, list[str]] | None:
        """The line for what is collected (None: nothing is), and forget it."""
        if not self.skipped:
            return None
        skipped, self.skipped = self.skipped, []
        return skipped[-1].at, [printable(skipped_text(skipped, self.halted))]


def event_text(ev: Event, *, took: float = 0.0, tail_lines: int = 5) -> list[str]:
    """The plain console's words for ``ev``: a line, then any log-tail lines.

    The first line has no time stamp (``stamp(ev.at)`` goes before it); ``took``
    is the attempt's duration for ``AttemptEnded``. Returns ``[]`` for events
    that are not state changes (``AttemptOutput``) and for ``InstanceReused``,
    which is collapsed with ``reused_text``. ``PlainConsole`` writes exactly these
    lines, and ``LiveConsole`` prints the ones that matter above its live area.
    Control characters in them are escaped (``printable``).
    """
    lines = _event_text(ev, took, tail_lines)
    if lines and isinstance(ev, AttemptEnded) and ev.left_running:
        # What was ended after the command, on the attempt's own line.
        lines[0] += f"; {left_running_text(ev.left_running, ev.remote)}"
    return [printable(ln) for ln in lines] if lines else lines


def _event_text(ev: Event, took: float, tail_lines: int) -> list[str]:
    if isinstance(ev, AttemptStarted):
        again = f" (attempt {ev.attempt})" if ev.attempt > 1 else ""
        return [f"started    {ev.key}{again}"]
    if isinstance(ev, AttemptEnded):
        if ev.outcome == "succeeded":
            accepted = f" ({accepted_text(ev.exit_code)})" if ev.exit_code else ""
            return [f"succeeded  {ev.key} in {format_duration(took)}{accepted}"]
        if ev.outcome == "retrying":
            return [f"retrying   {ev.key} in {ev.retry_delay or 0:.1f}s ({ev.retry_reason})"]
        if ev.outcome == "failed":
            how = ending_text(ev.exit_code, ev.signal, ev.timed_out, ev.reason)
            head = f"failed     {ev.key} ({how}) after {format_duration(took)}"
            # The log's last lines, less those that only repeat the cause.
            tail = distinct_tail(ev.tail, how)[-tail_lines:] if tail_lines > 0 else ()
            return [head, *(TAIL_INDENT + t for t in tail)]
        return []
    if isinstance(ev, InstanceSettled):
        if ev.state == "skipped":
            return [f"skipped    {ev.key}: {ev.reason}"]
        if ev.state == "cancelled":
            return [f"cancelled  {ev.key}"]
        if ev.state == "failed" and ev.attempts == 0:
            return [f"failed     {ev.key}: {ev.reason}"]
        return []
    if isinstance(ev, PoolChanged):
        return [
            f"pool       {ev.pool}: {pool_limits(ev.rate, ev.concurrency)} ({printable(ev.reason)})"
        ]
    if isinstance(ev, WaveChanged):
        where = f"wave {ev.wave}/{ev.waves} ({len(ev.targets)} target(s))"
        if ev.phase:
            where = f"phase {ev.phase}, {where}"
        if ev.state == "waiting":
            return [f"waiting    {where}: run `fleetrun promote` to open it"]
        if ev.state == "halted":
            return [f"halted     rollout before {where}: {printable(ev.reason)}"]
        return [f"opened     {where}"]
    if isinstance(ev, RunStarted):
        j = "unbounded" if ev.parallelism is None else str(ev.parallelism)
        return [f"run {ev.run_id}: {ev.nodes} instance(s), mode {ev.mode}, -j {j}"]
    if isinstance(ev, RunEnded):
        return [f"run {ev.run_id} {ev.status}"]
    return []


def pool_limits(rate: float, concurrency: int | None) -> str:
    """A pool's limits in effect as the console says them: "rate 38/s,
    concurrency 4" (``rate`` 0 is a pool without a rate; None an uncapped one)."""
    parts = []
    if rate:
        parts.append(f"rate {rate:.3g}/s")
    if concurrency is not None:
        parts.append(f"concurrency {concurrency}")
    return ", ".join(parts) or "unlimited"


def use_live(stream: TextIO, *, plain: bool, environ: Mapping[str, str]) -> bool:
    """Whether to draw the live view on ``stream`` rather than plain lines.

    Live only when every rule allows it:

    - ``plain`` is False (``--plain`` asks for plain lines);
    - ``CI`` is unset or empty (CI systems keep logs, not screens);
    - ``NO_COLOR`` is unset (set, even empty, it asks for plain text);
    - ``TERM`` is not ``dumb`` (such a terminal cannot move the cursor);
    - ``stream.isatty()`` is True (a pipe or a file gets plain lines; a stream
      without ``isatty`` or a closed one counts as not a terminal).
    """
    if plain or environ.get("CI") or "NO_COLOR" in environ or environ.get("TERM") == "dumb":
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class PlainConsole:
    """A subscriber that writes one line per state change to ``stream``.

    It also totals the time spent in attempts, for ``summary``. ``quiet``:
    only failures (with their log tail) are written, at the end of the run
    (``--quiet``).
    """

    def __init__(self, stream: TextIO, *, tail_lines: int = 5, quiet: bool = False) -> None:
        self.stream = stream
        self.tail_lines = tail_lines
        self.quiet = quiet
        self._failures: list[str] = []
        self.task_time = 0.0
        self._starts: dict[tuple[int, int], float] = {}
        self._reused: list[InstanceReused] = []
        self._reused_at = 0.0
        self._skipped = SkipBatch()
        # Per pool, when its Retry-After pause ends as said so far: a throttle
        # of each request in flight extends it, and each extension is an event.
        self._paused_until: dict[str, float] = {}

    def write_text(self, text: str) -> None:
        """Write complete lines of text (task output) between status lines."""
        self.stream.write(text)
        self.stream.flush()

    def __call__(self, ev: Event) -> None:
        """Render one event (ignores events that are not state changes)."""
        if self.quiet:
            self._quiet(ev)
            return
        said = self._skipped.before(ev)
        if said is not None:
            self.stream.write(f"{stamp(said[0])} {said[1][0]}\n")
        if isinstance(ev, InstanceSettled) and SkipBatch.holds(ev):
            # A halted rollout skips whole waves: one line, not one per instance.
            self._skipped.add(ev)
            return
        if isinstance(ev, InstanceReused):
            # A retry reuses most of a fleet: one line, not one per instance.
            self._reused.append(ev)
            self._reused_at = ev.at
            return
        if self._reused:
            reused, self._reused = self._reused, []
            self.stream.write(f"{stamp(self._reused_at)} {reused_text(reused)}\n")
        if isinstance(ev, PoolChanged) and ev.paused > 0:
            # One line per pause, not one per request that extended it.
            already = self._paused_until.get(ev.pool, -1.0) > ev.at
            self._paused_until[ev.pool] = max(
                self._paused_until.get(ev.pool, -1.0), ev.at + ev.paused
            )
            if already:
                return
        elif isinstance(ev, PoolChanged) and ev.reason.startswith("resumed"):
            self._paused_until.pop(ev.pool, None)
        took = 0.0
        if isinstance(ev, AttemptStarted):
            self._starts[(ev.node, ev.attempt)] = ev.at
        elif isinstance(ev, AttemptEnded):
            start = self._starts.pop((ev.node, ev.attempt), ev.started_at)
            took = max(0.0, ev.at - start)
            self.task_time += took
        lines = event_text(ev, took=took, tail_lines=self.tail_lines)
        if lines:
            lines[0] = f"{stamp(ev.at)} {lines[0]}"
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()

    def _quiet(self, ev: Event) -> None:
        if isinstance(ev, AttemptStarted):
            self._starts[(ev.node, ev.attempt)] = ev.at
        elif isinstance(ev, AttemptEnded):
            start = self._starts.pop((ev.node, ev.attempt), ev.started_at)
            took = max(0.0, ev.at - start)
            self.task_time += took
            if ev.outcome == "failed":
                # Held to the end: the output rows above them stay one table.
                lines = event_text(ev, took=took, tail_lines=self.tail_lines)
                lines[0] = f"{stamp(ev.at)} {lines[0]}"
                self._failures.append("\n".join(lines) + "\n")
            elif ev.left_running:
                # Said too: the run ended processes of the user's.
                lines = event_text(ev, took=took)
                self._failures.append(f"{stamp(ev.at)} {lines[0]}\n")
        elif isinstance(ev, RunEnded) and self._failures:
            self.stream.write("".join(self._failures))
            self.stream.flush()
            self._failures = []

    def summary(self, result: RunResult, graph: Graph) -> str:
        """Counts per state, wall time, summed task time and the speedup they imply."""
        return summary_text(
            result.counts, result.ended_at - result.started_at, self.task_time, len(graph.nodes)
        )


def summary_text(counts: Mapping[str, int], wall: float, task_time: float, nodes: int) -> str:
    """The summary block (also used by other renderers)."""
    parts = [f"{counts[s]} {s.replace('_', ' ')}" for s in STATE_ORDER if counts.get(s)]
    parts += [f"{n} {s}" for s, n in counts.items() if s not in STATE_ORDER and n]
    return (
        f"{', '.join(parts) or 'nothing to do'} (of {nodes})\n"
        f"wall time {format_duration(wall)}, task time {format_duration(task_time)}, "
        f"speedup {format_speedup(speedup(task_time, wall), places=1)}"
    )
