"""What a caller asks a session for, and what it gets back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from fleetrun.engine import DEFAULT_GRACE, FailFast, Mode, OutputMode
from fleetrun.layout import STATE_DIR_NAME as STATE_DIR_NAME

if TYPE_CHECKING:
    from fleetrun.engine import RunResult, Subscriber
    from fleetrun.plan import ExecRequest, Graph
    from fleetrun.redact import Redactor

Kind = Literal["apply", "retry", "resume"]


def find_state_dir(state_dir: str | None, plan: str | None) -> Path:
    """``--state-dir``, else ``.fleetrun`` beside ``--plan``, else ``./.fleetrun``."""
    if state_dir:
        return Path(state_dir).resolve()
    if plan:
        return Path(plan).resolve().parent / STATE_DIR_NAME
    return Path.cwd() / STATE_DIR_NAME


@dataclass(frozen=True, slots=True)
class RunRequest:
    """Everything ``apply``/``retry`` were asked (field names are the CLI's option names).

    ``plain``, ``quiet``, ``output`` and ``events`` concern the console; the
    session passes them through to the console factory untouched (``output``
    also decides whether the engine delivers output lines as events). ``mode``,
    ``fail_fast`` and ``output`` take the engine's own values (``Mode``,
    ``FailFast``, ``OutputMode``). ``vars``
    (``NAME=VALUE``) and ``var_files`` override the plan's variables; a retry
    or resume reuses those of the run it continues unless given again.
    ``exec_request``: an ad-hoc command (``fleetrun exec``) instead of the
    plan's tasks; journaled, so a retry of that run rebuilds it.
    """

    kind: Kind
    plan: str | None
    state_dir: str | None = None
    run_ref: str | None = None
    mode: Mode = "dag"
    parallelism: int | None = None
    fail_fast: FailFast | None = None
    targets: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    only: bool = False
    vars: tuple[str, ...] = ()
    var_files: tuple[str, ...] = ()
    exec_request: ExecRequest | None = None
    cluster: str | None = None
    grace: float = DEFAULT_GRACE
    dry_run: bool = False
    rollout: bool = False
    kill_orphans: bool = False
    plain: bool = False
    quiet: bool = False
    output: OutputMode = "none"
    events: str | None = None


NoticeKind = Literal["note", "orphan", "rerun", "start", "signal", "nothing", "dry_run"]


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the user should be told, as it happens (the session never prints).

    ``kind`` lets a console style it; ``error`` marks lines meant for stderr
    (signal acknowledgements).
    """

    kind: NoticeKind
    text: str
    error: bool = False


@dataclass(frozen=True, slots=True)
class RunSetup:
    """What a console needs to show a run, handed over just before it starts.

    ``only``: the instances the run starts (None: all); ``parent_id``: the run
    a retry or resume continues.
    """

    request: RunRequest
    graph: Graph
    run_id: str
    run_dir: Path
    only: frozenset[int] | None
    redactor: Redactor
    parent_id: str | None = None


@dataclass(frozen=True, slots=True)
class Report:
    """What a console has to say once its run ended, for the caller to print.

    ``text``: for stdout, after the run (the summary, the failures, what to run
    next; empty: nothing). ``failed``: whether what the console reports failed
    (``fleetrun exec``: a target whose command did not exit 0); None: the
    run's status says.
    """

    text: str = ""
    failed: bool | None = None


class Console(Protocol):
    """The console side of a run: subscribers, a start and stop around the run, and
    its report once the run ended."""

    subscribers: tuple[Subscriber, ...]

    def start(self) -> None:
        """Called right before the engine starts."""
        ...

    def stop(self) -> None:
        """Called after the engine returned, whatever happened."""
        ...

    def report(self, result: RunResult) -> Report:
        """What to print about ``result``; called after ``stop()`` when the run
        ended and is on record."""
        ...


ConsoleFactory = Callable[[RunSetup], Console]

OutcomeStatus = Literal["succeeded", "failed", "interrupted", "nothing", "dry_run"]


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """How a request ended.

    ``status``: the run's status, or ``nothing`` (nothing to run; not an
    error) or ``dry_run``. ``result`` and ``graph`` are set when a run took
    place, and ``report`` too when it had a console: what to print about it;
    ``lines`` holds a dry run's ``key: command`` lines; ``parent_id`` the run a
    retry or resume continued.
    """

    status: OutcomeStatus
    result: RunResult | None = None
    graph: Graph | None = None
    lines: tuple[str, ...] = field(default=())
    parent_id: str | None = None
    report: Report | None = None

    @property
    def failed(self) -> bool:
        """Whether the run failed: the console's word on it where it has one, else
        the run's status (``interrupted``, ``nothing`` and ``dry_run`` are not
        failures)."""
        if self.report is not None and self.report.failed is not None:
            return self.report.failed
        return self.status == "failed"
