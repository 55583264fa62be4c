"""Typed engine events: the one way the engine tells the world what happened.

The scheduler emits these, in order, on the event loop; the journal, the
console and the ``--events`` file are subscribers (``Callable[[Event], None]``)
that must return quickly (hand heavy work to a thread). Every text field that
could hold a secret (commands, output tails, reasons) is already redacted when
the event is built. ``at`` is wall-clock time (``time.time()``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import field
from typing import Literal

from fleetrun.messages import message

InstanceState = Literal[
    "pending",  # waiting for dependencies or a slot
    "running",
    "succeeded",
    "failed",
    "skipped",  # a requirement can no longer be met
    "cancelled",  # was running and was ended (Ctrl-C, --fail-fast=kill)
    "not_started",  # never started because the run stopped early
    "reused",  # succeeded in an earlier run; its outputs are reused (retry/resume)
    "interrupted",  # journal only: was running when fleetrun died
]

FINAL_STATES: frozenset[str] = frozenset(
    {"succeeded", "failed", "skipped", "cancelled", "not_started", "reused", "interrupted"}
)

RunStatus = Literal["running", "succeeded", "failed", "interrupted"]


@message
class Event:
    """Base of all events."""

    at: float


@message
class RunStarted(Event):
    """A run begins. ``parallelism`` is None when unbounded by count."""

    run_id: str
    plan_name: str
    mode: str
    parallelism: int | None
    nodes: int


@message
class InstanceReused(Event):
    """A node that succeeded in an earlier run is not run again (retry, resume, or
    a selection's needs); ``from_run``: the run whose record it reuses ("" when
    not known)."""

    node: int
    key: str
    outputs: Mapping[str, str] = field(default_factory=dict)
    from_run: str = ""


@message
class AttemptStarted(Event):
    """An attempt was started: its handle, as data.

    ``executor`` is the executor kind (``local``, ``ssh``, ``cluster``);
    ``host`` where it runs; ``pid``/``pgid`` its leader and process group on
    that host (None where the kind has none); ``job`` a cluster job's key.
    """

    node: int
    key: str
    attempt: int
    command: str
    pid: int | None
    pgid: int | None
    log_path: str
    executor: str = "local"
    host: str = ""
    job: str | None = None
    # When the instance became ready for this attempt (requirements met, or its
    # retry backoff over); from then until ``at`` it was queued: for its rollout
    # wave (``WaveChanged``), a pool slot, a rate token or a pause (``PoolChanged``).
    ready_at: float | None = None
    # Why it was queued, when something held it: "wave closed", "phase",
    # "pool NAME full", "pool NAME rate", "pool NAME paused for Retry-After",
    # "parallelism limit (-j N)"; None when nothing did (it started at once, or
    # waited only for the journal or the event loop). Of a wave or phase hold and
    # the wait in the ready queue, the longer names the reason; in the queue, the
    # last obstacle seen.
    queued_reason: str | None = None


@message
class AttemptOutput(Event):
    """Complete lines an attempt printed (only emitted with streamed output)."""

    node: int
    key: str
    attempt: int
    text: str


AttemptOutcome = Literal["succeeded", "failed", "retrying", "cancelled"]


@message
class AttemptEnded(Event):
    """An attempt finished. ``outcome`` says what the engine made of it.

    ``retrying``: another attempt follows after ``retry_delay`` seconds, for
    ``retry_reason`` (e.g. "exit 75", "output matched '429'", "timeout").
    ``tail`` holds the last lines of the attempt's log (redacted).
    ``throttled``: the engine took this ending as a throttle signal (the
    provider asked to slow down); reports count it from here. ``error_kind``:
    the executor's classification of a failure the command did not report
    itself (``connect``, ``lost``, ``internal``), else None. ``reason``: the
    failure in words when the command did not report its own ending (the
    executor's reason: a connection refused, an output refused, a worker
    lost), else None; ``engine.ending_text`` writes every ending from these
    fields. ``left_running``:
    processes the command left running that were ended after it
    (``left_running_text`` says so); ``remote``: the attempt ran on another
    host (``runs_on: ssh``), where ``keep_running`` does not apply.
    """

    node: int
    key: str
    attempt: int
    started_at: float
    exit_code: int | None
    signal: int | None
    timed_out: bool
    outcome: AttemptOutcome
    retry_reason: str | None = None
    retry_delay: float | None = None
    tail: tuple[str, ...] = ()
    throttled: bool = False
    error_kind: str | None = None
    left_running: int = 0
    reason: str | None = None
    remote: bool = False


def left_running_text(count: int, remote: bool = False) -> str:
    """Words for ``count`` processes an attempt left running that were ended, with
    what keeps them: the console's line of the attempt and the record's reason
    of its instance both say it. ``remote``: an SSH attempt, whose leftovers
    are ended with its remote process group (``keep_running`` is local-only):
    a process that should stay leaves the group."""
    if remote:
        keep = "a process that should stay must leave its group: `setsid`"
    else:
        keep = "`keep_running: true` keeps them"
    return f"ended {count} process(es) it left running ({keep})"


@message
class InstanceSettled(Event):
    """A node reached a final state (never emitted twice for one node).

    ``reason`` explains skipped/not_started/cancelled ("needs infra@uksouth,
    which failed"); ``outputs`` are the published ``key=value`` pairs of a
    succeeded instance.
    """

    node: int
    key: str
    state: InstanceState
    reason: str = ""
    attempts: int = 0
    outputs: Mapping[str, str] = field(default_factory=dict)


BACKOFF_WHY = "(back-off: the provider gave no Retry-After)"
"""How ``PoolChanged`` says a pause of the pool's own (no Retry-After), after
``paused 2s``."""
BACKOFF_PAUSED = "paused (back-off)"
"""The queued reason of a start held by such a pause, after ``pool NAME``."""


@message
class PoolChanged(Event):
    """A pool's effective limits changed, or it paused or resumed.

    ``rate`` is the effective start rate per second (0 for a pool without a
    rate), ``concurrency`` the effective concurrency (None: uncapped).
    ``paused`` > 0: no attempt of the pool starts for that many seconds (a
    Retry-After, or a back-off of the pool's own: ``BACKOFF_WHY``); a later
    event with reason "resumed: ..." marks its end. ``reason`` says why
    ("throttled (52 succeeded in 1.3s)", "probing up: ...", "restored: ...",
    "paused 2s for Retry-After").
    """

    pool: str
    rate: float
    reason: str
    concurrency: int | None = None
    paused: float = 0.0


WaveState = Literal["open", "waiting", "halted"]


@message
class WaveChanged(Event):
    """A rollout wave (1-based ``wave`` of ``waves``) opened, waits for a promote,
    or the rollout halted before it (``reason`` says which wave failed too much).

    ``targets`` are the wave's targets; their instances start only once it is open.
    ``phase`` names the phase rolled out with ``--mode phased`` (each phase has
    its own waves, from 1); "" otherwise.
    """

    wave: int
    waves: int
    state: WaveState
    targets: tuple[str, ...]
    reason: str = ""
    phase: str = ""


@message
class RunEnded(Event):
    """The run is over; ``counts`` maps final state -> number of nodes."""

    run_id: str
    status: RunStatus
    counts: Mapping[str, int]


Subscriber = Callable[[Event], None]
