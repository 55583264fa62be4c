"""What the journal's read side returns: one frozen record per row.

Field names are the journal's column names, in column order, so
``dataclasses.asdict(record)`` is the row as JSON-ready data (what
``show --format json`` prints). JSON columns arrive decoded (``options``,
``counts``, ``outputs``) and SQLite's 0/1 flags as ``bool``.

A run still marked ``running`` whose process is gone is read as
``interrupted`` (see ``JournalReader``): the record then says what crash
recovery will write, and ``computed`` is true, while the file still holds
``running`` until a command that writes recovers it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from fleetrun.redact import MASK, is_secret_name

EXEC_SUFFIX = "#exec"
"""Appended to the plan path under which ``fleetrun exec`` runs are recorded (an
exec of a plan is a plan of its own: its own lock, its own retries)."""


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run: what was run, how, by whom, and how it ended."""

    id: str
    parent_id: str | None  # the run a retry or resume continues
    plan_path: str
    plan_name: str
    plan_hash: str
    plan_snapshot: str  # the plan's text as it ran (redacted)
    mode: str  # sequential | phased | dag
    kind: str  # apply | retry | resume
    options: Mapping[str, Any]
    started_at: float
    ended_at: float | None  # None while it runs
    status: str  # running | succeeded | failed | interrupted
    counts: Mapping[str, int]  # instance state -> number of instances
    user: str
    host: str
    pid: int
    pid_start: int | None  # process start time, to tell pid from a reused one
    # Invariant: computed is true only when status == "interrupted" and the
    # journal still says "running" (its process died and nobody recovered it).
    computed: bool = False

    @property
    def is_exec(self) -> bool:
        """Whether this is a ``fleetrun exec`` run (or a retry of one)."""
        return self.plan_path.endswith(EXEC_SUFFIX)

    @property
    def plan_file(self) -> str:
        """The plan (or fleet) file the run ran."""
        return self.plan_path.removesuffix(EXEC_SUFFIX)

    @property
    def label(self) -> str:
        """What the run was, as the record's views name it: ``exec`` for a
        ``fleetrun exec`` run and its retries (a parent tells a retry), else
        ``kind`` (``apply``, ``retry``, ``resume``)."""
        return "exec" if self.is_exec else self.kind

    @property
    def variables(self) -> dict[str, str]:
        """The variables the run was given (``--var``, ``--var-file``, or those of
        the run it continued), as recorded, where secret values are masked; a
        variable named like a secret (``*PASSWORD*``, ``*TOKEN*``, ...) is
        masked whatever its value."""
        recorded = self.options.get("vars")
        if not isinstance(recorded, Mapping):
            return {}
        return {str(k): MASK if is_secret_name(str(k)) else str(v) for k, v in recorded.items()}


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """One instance (``task@target``, or ``task`` when unfanned) of one run."""

    run_id: str
    key: str
    node: int  # node id in the run's graph
    task: str
    target: str | None
    status: str  # pending | running | a final state
    command_hash: str | None
    exit_code: int | None  # its last attempt's
    outputs: Mapping[str, str]
    reason: str
    attempts: int
    started_at: float | None
    ended_at: float | None


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One attempt of one instance: its process, its end, its log."""

    run_id: str
    key: str
    n: int  # 1-based attempt number
    started_at: float
    ended_at: float | None
    exit_code: int | None
    signal: int | None
    timed_out: bool
    outcome: str | None  # succeeded | failed | retrying | cancelled | interrupted; None: running
    log_path: str
    retry_reason: str | None
    pid: int | None
    pgid: int | None
    proc_start: int | None
    throttled: bool  # the engine took this ending as a throttle signal
    executor: str  # the handle: executor kind (local, ssh, cluster) ...
    host: str | None  # ... where the attempt ran ...
    job: str | None  # ... and a cluster job's key
    # When the instance became ready for this attempt; from then until
    # ``started_at`` it was queued, for ``queued_reason`` ("pool api rate", "wave
    # closed", ...; None: nothing recorded held it). Both None in journals from
    # before schema version 5 (``ready_at`` is kept where its event held it).
    ready_at: float | None = None
    queued_reason: str | None = None

    @property
    def duration(self) -> float:
        """Seconds the attempt ran (0 when it has no recorded end)."""
        return 0.0 if self.ended_at is None else max(0.0, self.ended_at - self.started_at)

    @property
    def queued(self) -> float:
        """Seconds from ready to started (0 when the ready time is not recorded)."""
        return 0.0 if self.ready_at is None else max(0.0, self.started_at - self.ready_at)


def columns(record: type[Any]) -> tuple[str, ...]:
    """The journal columns a record type is read from, in field order."""
    return tuple(f.name for f in fields(record) if f.name != "computed")
