"""What a report says about one run: plain data, measured from the journal.

``build_report`` (in ``_build``) fills these from the journal; the renderers
(table, markdown, JSON, JUnit, HTML) only format them. Every number here comes
from recorded timestamps, never from estimates in the plan, except
``ModeEstimate`` for the modes that did not run (list scheduling of the
*measured* durations on the plan's graph).

Times are wall-clock seconds since the epoch (``time.time()``); durations are
seconds. Definitions, used by every renderer:

- ``task_time``: sum of attempt durations (what running them one after another
  would take).
- ``wall``: first start to last end (for the whole run: the run's own start
  and end as journaled).
- ``speedup``: ``task_time / wall``; ``None`` (shown "too short to measure") when
  either is under a second (``_text.speedup``).
- ``critical_path``: the longest chain of measured instance durations along
  the graph's dependencies.
- ``lower_bound``: ``max(critical_path, task_time / parallelism, rate bound)``
  (no ``task_time / parallelism`` term when parallelism is unbounded; a
  ``sequential`` run counts as parallelism 1); the rate
  bound is, for each pool with a start ``rate``, ``(starts - burst) / rate``:
  the least time its attempts need to start.
- ``efficiency``: ``lower_bound / wall``; 1.0 means no schedule could have
  been faster with these durations.
- ``queued``: seconds instances were ready but not started, summed over their
  attempts (``started_at - ready_at``); ``queued_reasons`` splits it by the
  engine's recorded reason ("pool api rate", "wave closed", ...), most first,
  with ``OTHER`` for waits no limit caused; a wait recorded for a pool's rate
  or Retry-After pause is divided at the pool's journaled pauses (see
  ``_queued.split``). For a task, a pool (the instances using it) or a span:
  the sum over its instances.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

REPORT_FORMAT_VERSION = 1
"""Version of the JSON report layout; bumped on any incompatible change."""


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One attempt of one instance, as journaled (a bar on the timeline)."""

    key: str
    task: str
    target: str | None
    n: int
    started_at: float
    ended_at: float | None
    outcome: str | None  # succeeded | failed | retrying | cancelled | interrupted
    exit_code: int | None
    signal: int | None
    timed_out: bool
    retry_reason: str | None
    log_path: str
    throttled: bool = False  # the engine took this ending as a throttle signal
    ready_at: float | None = None  # when its instance became ready (None: not recorded)
    queued: float = 0.0  # seconds from ready_at to started_at
    queued_reason: str | None = None  # what held it (None: nothing recorded)
    # ``queued`` by reason, the wait divided at its pool's pauses (``_queued.split``).
    queued_reasons: Mapping[str, float] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        """Seconds the attempt ran (0 when it has no recorded end)."""
        return 0.0 if self.ended_at is None else max(0.0, self.ended_at - self.started_at)


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """One task instance of the run and how it ended."""

    key: str
    task: str
    target: str | None
    phase: str | None
    state: str  # a final InstanceState
    reason: str
    attempts: int
    started_at: float | None
    ended_at: float | None
    task_time: float  # sum of its attempts' durations
    exit_code: int | None
    critical: bool  # on the run's measured critical path
    queued: float = 0.0  # seconds ready but not started, over its attempts
    queued_reasons: Mapping[str, float] = field(default_factory=dict)  # reason -> seconds


@dataclass(frozen=True, slots=True)
class Span:
    """Measured figures for a set of instances: one phase, or the whole run."""

    name: str
    instances: int
    counts: Mapping[str, int]
    started_at: float | None
    ended_at: float | None
    wall: float
    task_time: float
    speedup: float | None  # None: too short to measure (``_text.speedup``)
    critical_path: float
    lower_bound: float
    efficiency: float
    queued: float = 0.0
    queued_reasons: Mapping[str, float] = field(default_factory=dict)
    # What held the span back, when its wall is over twice what its critical path
    # and -j allow and instances queued for pools, rate, waves or phases:
    # "41s queued: pool azure-api rate"; "" otherwise (see ``_queued.held_back``).
    held_back: str = ""


@dataclass(frozen=True, slots=True)
class ModeEstimate:
    """The makespan of one mode: measured for the mode that ran, estimated otherwise."""

    mode: str  # sequential | phased | dag
    makespan: float
    measured: bool


@dataclass(frozen=True, slots=True)
class CriticalStep:
    """One instance on the measured critical path, in path order."""

    key: str
    started_at: float
    ended_at: float
    duration: float
    waited: float  # seconds between its last requirement's end and its own start


@dataclass(frozen=True, slots=True)
class TaskStats:
    """Per task: how much work it was, and how often it was retried or throttled."""

    task: str
    instances: int
    attempts: int
    retries: int
    throttled: int  # retries the engine took as a throttle signal (on.exit / on.output)
    failed: int
    task_time: float
    mean: float
    slowest_key: str | None
    slowest: float
    queued: float = 0.0
    queued_reasons: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PoolStats:
    """Per pool: its limits and what the run did against them."""

    pool: str
    concurrency: int | None
    rate: float | None
    instances: int
    attempts: int
    retries: int
    throttled: int
    peak_in_flight: int
    rate_changes: int  # changes of its effective rate or concurrency (not pauses)
    queued: float = 0.0  # of the instances using the pool, whatever held them
    queued_reasons: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PoolPoint:
    """One step of a pool's effective limits: the run's start, or a ``PoolChanged`` event.

    ``kind``: ``start`` (the configured limits, at the run's start), ``pause`` (a
    Retry-After pause of ``paused`` seconds began), ``resume`` (the pause is
    over) or ``change`` (anything else: a decrease, a probe, a restore).
    """

    t: float  # seconds since the run's start
    rate: float | None  # effective starts per second; None: the pool has no rate
    concurrency: int | None  # effective; None: uncapped
    kind: str  # start | pause | resume | change
    reason: str  # the engine's words, redacted
    paused: float = 0.0  # > 0 for a ``pause``: its length as announced


@dataclass(frozen=True, slots=True)
class PoolPause:
    """A Retry-After pause of a pool: no attempt of it could start in ``[start, end]``
    (seconds since the run's start; pauses that overlap are one). ``backoff``: a
    pause of the pool's own, the provider having given no Retry-After."""

    start: float
    end: float
    backoff: bool = False


@dataclass(frozen=True, slots=True)
class PoolThrottle:
    """A throttled attempt of a task that uses the pool, at its end (seconds since
    the run's start): the moment the engine took it as a throttle signal."""

    t: float
    key: str
    n: int


@dataclass(frozen=True, slots=True)
class PoolSeries:
    """A pool's effective rate and concurrency over the run, as a step function.

    ``points`` are in time order, the first the ``start``; each holds until the
    next, the last until ``end``. ``rate`` and ``concurrency`` are the configured
    values (the ceilings of an adaptive pool).
    """

    pool: str
    rate: float | None
    concurrency: int | None
    adaptive: bool
    points: tuple[PoolPoint, ...]
    throttles: tuple[PoolThrottle, ...]
    pauses: tuple[PoolPause, ...]
    end: float  # seconds since the run's start: its end, or its last trace

    @property
    def paused(self) -> float:
        """Seconds the pool spent paused, over all its pauses."""
        return sum(p.end - p.start for p in self.pauses)


@dataclass(frozen=True, slots=True)
class TargetStats:
    """Per target: its share of the work, for "slowest targets"."""

    target: str
    instances: int
    task_time: float
    wall: float
    failed: int


@dataclass(frozen=True, slots=True)
class RunReport:
    """Everything the report renderers show about one run."""

    run_id: str
    parent_id: str | None
    kind: str  # apply | retry | resume
    plan_name: str
    plan_path: str
    status: str
    mode: str
    parallelism: int | None
    started_at: float
    ended_at: float | None
    overall: Span
    phases: tuple[Span, ...]
    estimates: tuple[ModeEstimate, ...]
    critical_path: tuple[CriticalStep, ...]
    instances: tuple[InstanceRecord, ...]  # node order
    attempts: tuple[AttemptRecord, ...]  # start order
    tasks: tuple[TaskStats, ...]
    pools: tuple[PoolStats, ...]
    slowest_targets: tuple[TargetStats, ...]  # slowest first, at most 10
    notes: tuple[str, ...] = field(default=())  # e.g. "the plan changed since this run"
    # Each pool of the plan that changed its limits or paused, in plan order.
    pool_series: tuple[PoolSeries, ...] = field(default=())
