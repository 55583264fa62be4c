"""The validated, resolved plan: immutable data that expansion and the engine read.

The loader (``_loader.py``) turns a YAML file into these objects after checking
everything; nothing here does I/O. Durations are float seconds, rates are
float events per second.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from fleetrun.errors import Location
from fleetrun.plan._template import Template
from fleetrun.runs_on import DEFAULT_KIND, KINDS, ExecutorOptions
from fleetrun.runs_on import RUNS_ON as RUNS_ON  # named here too, for the plan's modules
from fleetrun.runs_on import Script as Script

Scalar = str | int | float | bool | None

ALL_TARGETS = "all"
"""The group name that means every target (``for_each: all``)."""


@dataclass(frozen=True, slots=True)
class Target:
    """One member of the fleet: a name and free-form scalar attributes.

    ``ssh`` is how the target is reached over SSH: its ``ssh`` attribute
    (``user@host:port`` read into ``host``/``user``/``port``, or a mapping of
    ``runs_on.SSH_KEYS``) over the plan's ``ssh:`` defaults, paths made absolute;
    None when neither is given (then an SSH task reaches the target at its name,
    through ``~/.ssh/config``). It is not among ``attrs``.
    """

    name: str
    attrs: Mapping[str, Scalar] = field(default_factory=dict)
    ssh: Mapping[str, Scalar] | None = None

    def attributes(self) -> dict[str, Any]:
        """What an executor gets as ``Attempt.attributes``: ``attrs`` plus ``ssh``."""
        if self.ssh is None:
            return dict(self.attrs)
        return {**self.attrs, "ssh": dict(self.ssh)}


MAX_ATTEMPTS = 10_000
"""The most attempts ``retry.attempts`` and a throttle rule's ``attempts`` may
ask for: each attempt keeps its own log file and journal row."""

MAX_ATTEMPTS_WHY = "each attempt keeps its own log file and journal row"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how often a failed attempt is tried again.

    ``attempts`` counts all attempts (1 = no retry). With ``any_failure`` set
    (no ``on:`` given) every failure is retried; otherwise only failures whose
    exit code is in ``on_exit``, whose output contains one of ``on_output`` or,
    with ``on_timeout``, that timed out. Delay before attempt n+1 is drawn
    uniformly from ``[0, min(max_backoff, backoff * 2**(n-1))]`` (full jitter).
    """

    attempts: int = 1
    backoff: float = 1.0
    max_backoff: float = 60.0
    any_failure: bool = True
    on_exit: frozenset[int] = frozenset()
    on_output: tuple[str, ...] = ()
    on_timeout: bool = False
    on_connect: bool = False
    """Retry attempts that failed to reach their target or lost it (``on: {connect: true}``):
    the executor's ``error_kind`` is ``connect`` or ``lost``."""


SUCCESS_EXIT = frozenset({0})
"""The exit codes that count as success when a task does not say (``success.exit``)."""


@dataclass(frozen=True, slots=True)
class SuccessPolicy:
    """What counts as success for an attempt (``success``; ``defaults.success``).

    An attempt that ended in time with an exit code in ``exit`` succeeded,
    unless its output contains one of ``fail_on_output`` (plain substrings,
    searched in its log, as ``retry.on.output``). ``exit`` lists every code
    that counts: ``[3]`` makes exit 0 a failure. The engine judges (one
    verdict for every executor); an accepted non-zero code is recorded as it
    is (``exit 3 accepted``). Outputs are published by an exit 0 only.
    """

    exit: frozenset[int] = SUCCESS_EXIT
    fail_on_output: tuple[str, ...] = ()

    @property
    def is_default(self) -> bool:
        """Exit 0 and nothing else, with no output rule: the verdict needs no log."""
        return self.exit == SUCCESS_EXIT and not self.fail_on_output


@dataclass(frozen=True, slots=True)
class ThrottleRule:
    """What "slow down" looks like for a pool (``pools.X.throttle``).

    An ended attempt is *throttled* when it failed with an exit code in
    ``exit`` or its output matches one of the ``output`` regexes (Python
    ``re``, searched line by line). Only throttled attempts change an adaptive
    pool's limits. ``retry_after`` is a regex whose first group is a delay in
    seconds; when a throttled attempt's output matches it, no attempt of the
    pool starts before that delay has passed. A throttled attempt is retried
    whatever the task's ``retry.on`` says, with at least ``attempts`` attempts
    in all (the task's ``retry.attempts`` when larger).
    """

    exit: frozenset[int] = frozenset()
    output: tuple[str, ...] = ()
    retry_after: str | None = None
    attempts: int = 5


@dataclass(frozen=True, slots=True)
class AdaptiveSettings:
    """The numbers of the adaptive algorithm (``pools.X.adaptive``); see
    ``fleetrun.engine._adaptive`` for how they are used.

    ``decrease``: a throttle that comes late (near the limit) multiplies the
    rate by this; one soon after a fresh start halves it; with a fitted
    granted rate the rate becomes ``(1 - margin)`` x that. ``max_drop``: one
    decrease keeps at least this fraction. ``increase``: the step of probing
    past the plateau (1, 3, 5 ... times it). ``probe``: seconds between two
    increases. ``floor``: the limits never go below this fraction of the
    configured values. ``verify``: attempts observed after a decrease to
    check it helped; when it did not (throttles that do not depend on the
    rate), the decrease is undone. ``hold``: seconds at the plateau before
    probing past it (doubles after each failed probe, up to 16x).
    ``margin``: how far under a limit found the plateau sits. ``initial``:
    the concurrency slow start begins at (bounded by the configured value).
    """

    decrease: float = 0.9
    max_drop: float = 0.2
    increase: float = 0.02
    probe: float = 1.0
    floor: float = 0.01
    verify: int = 10
    hold: float = 5.0
    margin: float = 0.01
    initial: int = 8


@dataclass(frozen=True, slots=True)
class Pool:
    """A shared limit a task may draw on: concurrent slots and/or a start rate.

    ``rate`` is starts per second (token bucket of size ``burst``). With
    ``adaptive`` set, ``concurrency`` and ``rate`` are ceilings: the effective
    limits follow what the provider grants, judged only from throttle signals
    (``throttle``). ``shared`` names a pool that every run of the user on the machine
    that names it shares, whatever its state directory (one concurrency, rate,
    Retry-After pause and adaptive state between them; see
    ``fleetrun.engine._shared``); None: this run's own.
    """

    name: str
    concurrency: int | None = None
    rate: float | None = None
    burst: int = 1
    adaptive: AdaptiveSettings | None = None
    throttle: ThrottleRule | None = None
    shared: str | None = None


@dataclass(frozen=True, slots=True)
class Rollout:
    """The plan's rolling waves (``rollout``).

    ``waves`` holds one size per wave: a group name (``str``), a count
    (``int``) or a fraction of all targets (an exact ``Fraction`` in (0, 1],
    as the plan wrote it: "29%" is 29/100); the last size repeats.
    ``max_failed`` per wave: a count (``int``), or a fraction of the wave's
    targets (``Fraction``) when ``max_failed_fraction``; strictly more failed
    targets halt the rollout. ``pause``: wait for ``RunControl.promote()``
    before each next wave (one promote opens one wave).

    Percentages are exact so that the arithmetic on them is integer
    arithmetic (``plan._rollout``): a ``float`` given in code is read as the
    decimal it prints as (``0.29`` is 29/100).
    """

    waves: tuple[str | int | Fraction, ...]
    max_failed: int | Fraction = 0
    max_failed_fraction: bool = False
    pause: bool = False
    location: Location | None = None

    def __post_init__(self) -> None:
        waves = tuple(_exact(w) if isinstance(w, float) else w for w in self.waves)
        object.__setattr__(self, "waves", waves)
        m = self.max_failed
        if isinstance(m, float):
            exact = _exact(m)
            m = int(exact) if exact.denominator == 1 and not self.max_failed_fraction else exact
        elif isinstance(m, int) and self.max_failed_fraction:
            m = Fraction(m)
        object.__setattr__(self, "max_failed", m)


def _exact(value: float) -> Fraction:
    """``value`` as the decimal it prints as (``0.29`` -> 29/100, not 0.28999...)."""
    return Fraction(repr(value))


NeedMode = Literal["auto", "all", "quorum"]


@dataclass(frozen=True, slots=True)
class Need:
    """One entry of a task's ``needs``.

    ``auto`` (``needs: [X]``): same target when both tasks fan out over targets,
    otherwise every instance of X. ``all`` (``X[*]``): every instance of X.
    ``quorum`` (``{task: X, at_least: N | "P%"}``): proceed once ``at_least``
    (or ``percent`` of X's instances, rounded up) have succeeded.
    """

    task: str
    mode: NeedMode = "auto"
    at_least: int | None = None
    percent: float | None = None
    location: Location | None = None


@dataclass(frozen=True, slots=True)
class Task:
    """One task of the plan, before expansion over targets.

    ``targets`` is None for an unfanned task (one instance), else the resolved
    names of the ``for_each`` group in fleet order. ``runs_on`` names the
    executor kind that runs its attempts (one of ``RUNS_ON``). A fanned task
    whose group matches no target has ``targets == ()``; ``apply`` refuses it
    unless ``allow_empty`` (see ``plan.empty_tasks``).
    """

    name: str
    run: Template
    phase: str | None = None
    for_each: str | None = None
    targets: tuple[str, ...] | None = None
    needs: tuple[Need, ...] = ()
    pools: tuple[str, ...] = ()
    timeout: float | None = None
    retry: RetryPolicy = RetryPolicy()
    success: SuccessPolicy = SuccessPolicy()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    estimate: float | None = None
    location: Location | None = None
    runs_on: str = DEFAULT_KIND
    allow_empty: bool = False
    script: Script | None = None
    """Set for a ``script:`` task; ``run`` is then ``sh PATH ARGS``."""
    options: ExecutorOptions | None = None
    """The keys the task's kind owns, typed by its options class (``keep_running``:
    ``LocalOptions``, ``resources``: ``ClusterOptions``); None: the kind's defaults.
    Read it through ``executor_options``."""

    @property
    def executor_options(self) -> ExecutorOptions:
        """What its executor gets as ``Attempt.options``: the options of the task's kind
        (its defaults when none were given) with the task's ``script``."""
        kind = KINDS.get(self.runs_on)
        opts = (kind.options if kind else ExecutorOptions).of(self.options)
        if opts.script is not self.script:
            opts = dataclasses.replace(opts, script=self.script)
        return opts


@dataclass(frozen=True, slots=True)
class ClusterSection:
    """The plan's ``cluster:`` section: where ``runs_on: cluster`` jobs go.

    ``address`` names a running Dask scheduler (``tcp://host:port``); None
    starts an embedded local cluster of ``workers`` worker processes for the
    run. ``--cluster`` and ``FLEETRUN_CLUSTER`` override ``address``.
    """

    address: str | None = None
    workers: int = 2


@dataclass(frozen=True, slots=True)
class Plan:
    """A whole validated plan.

    ``env`` holds what every task's environment gets from ``env_file`` and the
    plan's ``env``; ``secret_values`` are the literal values that must be
    redacted wherever they would appear. ``targets``, ``groups``, ``pools`` and
    ``tasks`` keep the plan file's order.
    """

    name: str
    path: Path | None
    base_dir: Path
    source_hash: str
    env: Mapping[str, str]
    secrets: frozenset[str]
    secret_values: frozenset[str]
    vars: Mapping[str, Scalar]
    targets: Mapping[str, Target]
    groups: Mapping[str, tuple[str, ...]]
    pools: Mapping[str, Pool]
    phases: tuple[str, ...]
    tasks: Mapping[str, Task]
    ssh: Mapping[str, Scalar] = field(default_factory=dict)
    """The plan's ``ssh:`` defaults (already merged into every ``Target.ssh``)."""
    cluster: ClusterSection = ClusterSection()
    rollout: Rollout | None = None
