"""The executor contract: one resolved attempt in, one result out, a handle in between.

The engine resolves everything an attempt needs (command, environment,
directory, paths, limits) into an ``Attempt`` before it reaches an executor,
so an executor knows nothing of plans, graphs or nodes. What an executor owes,
whatever its kind (local process, SSH session, compute-cluster job):

- it does not stall the event loop;
- it calls ``attempt.on_started(handle)`` once the attempt exists, with a
  ``Handle`` the journal keeps, so the orphans of a dead run can be found;
- the attempt's output (stdout and stderr together, redacted) reaches
  ``attempt.log_path`` as it arrives, and ``attempt.on_output`` when set;
- nothing it started outlives the attempt: on timeout and on cancellation it
  ends everything (SIGTERM to the group, ``attempt.grace``, SIGKILL, reap)
  before returning or re-raising ``CancelledError``;
- a failure that is not the command's own carries a ``reason`` an operator
  can act on and an ``error_kind`` that retry rules can match;
- it reads its own typed options (``fleetrun.runs_on``: ``LocalOptions``,
  ``SSHOptions``, ``ClusterOptions``) from ``attempt.options``, through
  ``<Kind>Options.of(attempt.options)``;
- ``aclose()`` releases what it holds for the run (connections, a cluster it
  started, loop registrations) once every attempt has returned.

Invariant: ``Attempt.env`` is the same object for every attempt of one task in
one run, so an executor may cache what it derives from it (an encoded
environment block) keyed on that object.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from fleetrun.messages import positional_message
from fleetrun.redact import Redactor
from fleetrun.runs_on import ExecutorOptions

ErrorKind = Literal["connect", "lost", "internal"]
"""Why an attempt failed when its command could not report it itself:
``connect`` (the place it should run could not be reached: SSH connect,
authentication, host key, scheduler unreachable), ``lost`` (the connection or
the worker died while it ran), ``internal`` (fleetrun could not run it)."""


@dataclass(frozen=True, slots=True)
class Handle:
    """Where a started attempt runs, as the journal keeps it.

    - ``kind``: the executor kind (``local``, ``ssh``, ``cluster``);
    - ``host``: the machine (the local host name, the SSH target's host,
      the scheduler address);
    - ``pid``/``pgid``: the leader and its process group on that host;
    - ``start_time``: the leader's start time in clock ticks (since boot on
      Linux, since the epoch elsewhere: ``_posix_procs``; local: tells a
      reused pid apart), None when unknown;
    - ``job``: a cluster job's key.
    """

    kind: str
    host: str = ""
    pid: int | None = None
    pgid: int | None = None
    start_time: int | None = None
    job: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The handle as a JSON object (absent fields left out)."""
        out: dict[str, Any] = {"kind": self.kind, "host": self.host}
        for name in ("pid", "pgid", "start_time", "job"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Handle:
        """The handle ``to_json`` wrote (unknown keys ignored)."""
        return cls(
            kind=str(data.get("kind", "local")),
            host=str(data.get("host", "")),
            pid=data.get("pid"),
            pgid=data.get("pgid"),
            start_time=data.get("start_time"),
            job=data.get("job"),
        )


@positional_message
class Attempt:
    """One attempt of one instance, resolved: everything an executor needs.

    - ``key``: ``task@target`` (``task`` for an unfanned task); ``n`` counts
      attempts from 1;
    - ``attributes``: the target's attributes (connection details such as
      ``ssh`` live there), empty for an unfanned task;
    - ``command``: the rendered command, which may hold secrets; ``display``
      is its redacted form, the only one ever shown;
    - ``env``: the environment the plan gives the task (``env_file``, the
      plan's and the task's ``env``, ``FLEETRUN_TASK``, ``FLEETRUN_RUN_ID``),
      shared by the task's attempts; ``env_extra``: the names set per attempt
      (``FLEETRUN_TARGET``, ``FLEETRUN_ATTEMPT``, ``FLEETRUN_OUTPUT`` and the
      ``FLEETRUN_OUTPUT_<TASK>_<KEY>`` values of dependencies). A local
      executor puts both over its own process environment;
    - ``cwd``: the absolute working directory (None: the executor's own);
    - ``log_path``/``output_path``: local files for the output and for the
      ``key=value`` outputs the attempt publishes;
    - ``timeout``/``grace``: seconds (None: no limit);
    - ``options``: the task's options, an instance of its kind's options class
      (``fleetrun.runs_on``: a cluster job's ``resources``, a local task's
      ``keep_running``, a ``script:`` task's text); None: the kind's defaults;
    - ``on_started(handle)``: called once, when the attempt exists;
    - ``on_output(text)``: when not None, complete redacted lines as they arrive.
    """

    run_id: str
    key: str
    task: str
    target: str | None
    n: int
    command: str
    display: str
    env: Mapping[str, str]
    env_extra: Mapping[str, str]
    cwd: str | None
    log_path: str
    output_path: str
    timeout: float | None
    grace: float
    redactor: Redactor
    on_started: Callable[[Handle], None]
    on_output: Callable[[str], None] | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    options: ExecutorOptions | None = None


@positional_message
class AttemptResult:
    """How an attempt ended.

    ``exit_code`` is None when the command died of a signal (then ``signal``
    is set) or never reported one (then ``reason`` says why and
    ``error_kind`` classifies it). ``outputs`` holds the ``key=value`` pairs
    published by a successful attempt. ``left_running``: how many processes
    the command left running that the executor ended after it (always 0 with
    ``keep_running``).
    """

    exit_code: int | None
    signal: int | None = None
    timed_out: bool = False
    outputs: Mapping[str, str] | None = None
    reason: str | None = None
    error_kind: ErrorKind | None = None
    left_running: int = 0

    @property
    def ok(self) -> bool:
        """True when the attempt exited 0 in time."""
        return self.exit_code == 0 and not self.timed_out


@dataclass(frozen=True, slots=True)
class Orphan:
    """Processes (or a job) that a dead run's attempt left running.

    ``pids`` are the live members found (empty when the executor cannot list
    them, e.g. a cluster job, or when the group is gone); ``outside``: live
    processes of the attempt that left its process group (``setsid``, a double
    fork), found by its tag.
    """

    run_id: str
    key: str
    attempt: int
    handle: Handle
    pids: tuple[int, ...] = ()
    outside: tuple[int, ...] = ()

    @property
    def pgid(self) -> int | None:
        """The handle's process group (None for a job)."""
        return self.handle.pgid

    def describe(self) -> str:
        """``process group 123 on host, pids 123 124`` and the like."""
        h = self.handle
        where = f" on {h.host}" if h.kind != "local" and h.host else ""
        if h.job is not None:
            return f"{h.kind} job {h.job}{where}"
        pids = " ".join(map(str, self.pids))
        text = f"process group {h.pgid}{where}, " + (f"pids {pids}" if pids else "gone")
        if self.outside:
            text += f"; outside it: pids {' '.join(map(str, self.outside))}"
        return text


@dataclass(frozen=True, slots=True)
class RecordedAttempt:
    """An attempt of a dead run as the journal has it, for orphan searches."""

    run_id: str
    key: str
    attempt: int
    handle: Handle


class Executor(Protocol):
    """Runs one attempt at a time per call; see the module docstring."""

    kind: str
    queue_reason: str | None
    """Why an attempt may wait between ``run`` and ``on_started`` (a cluster job
    waiting for a free worker: ``"waiting for a worker"``); None when it starts at
    once. The engine counts that wait as queued time with this reason."""

    async def run(self, attempt: Attempt) -> AttemptResult:
        """Run the attempt to its end and return how it ended."""
        ...

    def kill_now(self) -> None:
        """Skip what is left of every grace period: kill what is being ended now."""
        ...

    async def aclose(self) -> None:
        """Release what the executor holds for the run (connections, a cluster it
        started, loop registrations); called once, after its last attempt returned."""
        ...


class OrphanFinder(Protocol):
    """Finds and ends what dead runs left behind, for one executor kind."""

    kind: str

    def find(
        self, attempts: Sequence[RecordedAttempt], dead_runs: Sequence[str]
    ) -> Awaitable[list[Orphan]]:
        """Orphans among ``attempts`` (and, where possible, any process tagged
        with one of ``dead_runs``)."""
        ...

    def end(self, orphans: Sequence[Orphan], grace: float) -> Awaitable[None]:
        """End ``orphans``: SIGTERM, ``grace`` seconds, SIGKILL."""
        ...
