"""What a caller gives the scheduler and what it gets back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fleetrun.redact import Redactor

Mode = Literal["dag", "phased", "sequential"]
OutputMode = Literal["none", "grouped", "ordered", "stream"]
FailFast = Literal["stop", "kill"]
Priority = Literal["critical_path", "fifo"]

DEFAULT_GRACE = 10.0
"""Seconds between SIGTERM and SIGKILL when ending an attempt's process group."""


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How to run a graph.

    - ``run_dir``: attempt logs go to ``run_dir/logs/<task>/<target>.<attempt>.log``
      (``<task>/<task>.<attempt>.log`` for an unfanned task).
    - ``only``: the node ids this run may start (None: all). Nodes outside it
      and outside ``reused`` are not part of the run and produce no events.
    - ``reused``: nodes that already succeeded in an earlier run, with their
      outputs; they count as succeeded and are never started. ``reused_from``:
      the run whose record each of them comes from (said in ``InstanceReused``).
    - ``output``: whether attempt output is also delivered as ``AttemptOutput``
      events (``stream``) - the console groups/orders it as it likes.
    - ``priority``: order in which ready nodes start: ``critical_path`` (highest
      ``graph.rank`` first, then plan order) or ``fifo`` (the order they became
      ready; for comparisons). ``sequential`` mode always uses plan order.
    - ``seed``: seeds the retry-backoff jitter (None: unpredictable).
    - ``waves_opened``: how many of the plan's rollout waves had already opened
      in the run this one continues (``retry``, ``--resume``): their targets
      form the first wave together; the later waves keep their order and gates
      (``plan.wave_targets``). 0 rolls out from the first wave.
    - ``pools_dir``: the directory of the shared pools' coordination file
      (``layout.shared_pools_dir``: one per user on the machine), through
      which the plan's shared pools (``pools.X.shared``) are shared with other
      runs; None: a shared pool limits this run alone.
    """

    run_id: str
    run_dir: Path
    mode: Mode = "dag"
    parallelism: int | None = None
    fail_fast: FailFast | None = None
    grace: float = DEFAULT_GRACE
    only: frozenset[int] | None = None
    reused: Mapping[int, Mapping[str, str]] = field(default_factory=dict)
    reused_from: Mapping[int, str] = field(default_factory=dict)
    output: OutputMode = "none"
    redactor: Redactor = field(default_factory=Redactor)
    priority: Priority = "critical_path"
    seed: int | None = None
    waves_opened: int = 0
    pools_dir: Path | None = None


@dataclass(frozen=True, slots=True)
class RunResult:
    """The outcome of a run: final state per node id, and wall-clock bounds."""

    run_id: str
    status: Literal["succeeded", "failed", "interrupted"]
    states: Mapping[int, str]
    outputs: Mapping[int, Mapping[str, str]]
    started_at: float
    ended_at: float

    @property
    def counts(self) -> dict[str, int]:
        """Number of nodes per final state."""
        out: dict[str, int] = {}
        for s in self.states.values():
            out[s] = out.get(s, 0) + 1
        return out


def new_run_id(now: float | None = None) -> str:
    """A sortable, unique run id: UTC timestamp plus 6 random hex digits (two runs
    started in the same second meet once in 16 million)."""
    import os
    import time

    t = time.gmtime(time.time() if now is None else now)
    return time.strftime("%Y%m%dT%H%M%S", t) + "-" + os.urandom(3).hex()
