"""The executor contract: run exactly one attempt of one node and report how it ended.

The scheduler renders the command, picks the log path and decides what an
ending means (retry, fail, succeed); an executor only runs the attempt. It must
not stall the event loop, must put the attempt's output in ``spec.log_path``,
and on cancellation must end everything the attempt started (for local
processes: SIGTERM to the process group, ``spec.grace``, SIGKILL, reap) before
re-raising ``CancelledError``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from fleetrun.plan._graph import Graph, Node
from fleetrun.redact import Redactor


@dataclass(frozen=True, slots=True)
class AttemptSpec:
    """Everything one attempt needs.

    - ``command``: the rendered command (may hold secrets: never shown as is);
      ``display`` is its redacted form.
    - ``dep_outputs``: outputs of single-instance requirements, by task name.
    - ``on_started(pid, pgid)``: called once the process exists.
    - ``on_output(text)``: when not None, complete (redacted) lines of output
      are delivered to it as they arrive.
    """

    graph: Graph
    node: Node
    attempt: int
    command: str
    display: str
    run_id: str
    log_path: str
    output_path: str
    timeout: float | None
    grace: float
    redactor: Redactor
    dep_outputs: Mapping[str, Mapping[str, str]]
    on_started: Callable[[int, int], None]
    on_output: Callable[[str], None] | None = None


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """How an attempt ended.

    ``exit_code`` is None when the process died of a signal (then ``signal``
    is set). ``outputs`` holds the ``key=value`` pairs published by a
    successful attempt.
    """

    exit_code: int | None
    signal: int | None = None
    timed_out: bool = False
    outputs: Mapping[str, str] | None = None

    @property
    def ok(self) -> bool:
        """True when the attempt exited 0 in time."""
        return self.exit_code == 0 and not self.timed_out


class Executor(Protocol):
    """Runs one attempt; see the module docstring for the obligations."""

    async def run(self, spec: AttemptSpec) -> AttemptResult:
        """Run the attempt to its end and return how it ended."""
        ...

    def kill_now(self) -> None:
        """Skip what is left of every grace period: SIGKILL what is being ended now."""
        ...
