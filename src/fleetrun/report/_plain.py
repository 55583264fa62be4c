"""``PlainConsole``: one timestamped line per state change, and a final summary.

Never prints a child's raw output: a failure shows the last lines of its log
(already redacted in the event). Suited to CI logs and pipes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TextIO

from fleetrun.engine._events import (
    AttemptEnded,
    AttemptStarted,
    Event,
    InstanceReused,
    InstanceSettled,
    PoolChanged,
    RunEnded,
    RunStarted,
)
from fleetrun.engine._options import RunResult
from fleetrun.plan._graph import Graph

_STATE_ORDER = (
    "succeeded",
    "reused",
    "failed",
    "skipped",
    "cancelled",
    "not_started",
    "interrupted",
)


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


def format_duration(seconds: float) -> str:
    """``0.4s``, ``12.3s``, ``4m05s``, ``1h02m``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        m, s = divmod(round(seconds), 60)
        return f"{m}m{s:02d}s"
    h, rest = divmod(round(seconds), 3600)
    return f"{h}h{rest // 60:02d}m"


class PlainConsole:
    """A subscriber that writes one line per state change to ``stream``.

    It also totals the time spent in attempts, for ``summary``.
    """

    def __init__(self, stream: TextIO, *, tail_lines: int = 5) -> None:
        self.stream = stream
        self.tail_lines = tail_lines
        self.task_time = 0.0
        self._starts: dict[tuple[int, int], float] = {}
        self._reused: list[str] = []
        self._reused_at = 0.0

    def _line(self, at: float, text: str) -> None:
        self.stream.write(f"{_clock(at)} {text}\n")
        self.stream.flush()

    def write_text(self, text: str) -> None:
        """Write complete lines of text (task output) between status lines."""
        self.stream.write(text)
        self.stream.flush()

    def _flush_reused(self) -> None:
        # A retry reuses most of a fleet: one line, not one per instance.
        keys, self._reused = self._reused, []
        shown = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
        self._line(
            self._reused_at, f"reused     {len(keys)} instance(s) that succeeded before: {shown}"
        )

    def __call__(self, ev: Event) -> None:
        """Render one event (ignores events that are not state changes)."""
        if isinstance(ev, InstanceReused):
            self._reused.append(ev.key)
            self._reused_at = ev.at
            return
        if self._reused:
            self._flush_reused()
        if isinstance(ev, AttemptStarted):
            self._starts[(ev.node, ev.attempt)] = ev.at
            again = f" (attempt {ev.attempt})" if ev.attempt > 1 else ""
            self._line(ev.at, f"started    {ev.key}{again}")
        elif isinstance(ev, AttemptEnded):
            start = self._starts.pop((ev.node, ev.attempt), ev.started_at)
            took = max(0.0, ev.at - start)
            self.task_time += took
            if ev.outcome == "succeeded":
                self._line(ev.at, f"succeeded  {ev.key} in {format_duration(took)}")
            elif ev.outcome == "retrying":
                self._line(
                    ev.at,
                    f"retrying   {ev.key} in {ev.retry_delay or 0:.1f}s ({ev.retry_reason})",
                )
            elif ev.outcome == "failed":
                if ev.timed_out:
                    how = "timed out"
                elif ev.exit_code is None:
                    how = f"killed by signal {ev.signal}"
                else:
                    how = f"exit code {ev.exit_code}"
                self._line(ev.at, f"failed     {ev.key} ({how}) after {format_duration(took)}")
                for text in ev.tail[-self.tail_lines :]:
                    self.stream.write(f"           | {text}\n")
                self.stream.flush()
        elif isinstance(ev, InstanceSettled):
            if ev.state == "skipped":
                self._line(ev.at, f"skipped    {ev.key}: {ev.reason}")
            elif ev.state == "cancelled":
                self._line(ev.at, f"cancelled  {ev.key}")
            elif ev.state == "failed" and ev.attempts == 0:
                self._line(ev.at, f"failed     {ev.key}: {ev.reason}")
        elif isinstance(ev, PoolChanged):
            self._line(ev.at, f"pool       {ev.pool}: rate {ev.rate:.3g}/s ({ev.reason})")
        elif isinstance(ev, RunStarted):
            j = "unbounded" if ev.parallelism is None else str(ev.parallelism)
            self._line(ev.at, f"run {ev.run_id}: {ev.nodes} instance(s), mode {ev.mode}, -j {j}")
        elif isinstance(ev, RunEnded):
            self._line(ev.at, f"run {ev.run_id} {ev.status}")

    def summary(self, result: RunResult, graph: Graph) -> str:
        """Counts per state, wall time, summed task time and the speedup they imply."""
        return summary_text(
            result.counts, result.ended_at - result.started_at, self.task_time, len(graph.nodes)
        )


def summary_text(counts: Mapping[str, int], wall: float, task_time: float, nodes: int) -> str:
    """The summary block (also used by other renderers)."""
    parts = [f"{counts[s]} {s.replace('_', ' ')}" for s in _STATE_ORDER if counts.get(s)]
    parts += [f"{n} {s}" for s, n in counts.items() if s not in _STATE_ORDER and n]
    speedup = task_time / wall if wall > 0 else 0.0
    return (
        f"{', '.join(parts) or 'nothing to do'} (of {nodes})\n"
        f"wall time {format_duration(wall)}, task time {format_duration(task_time)}, "
        f"speedup {speedup:.1f}x"
    )
