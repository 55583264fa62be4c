"""Every exception fleetrun raises on purpose.

The tree::

    FleetrunError                 anything fleetrun reports as a clean message
    ├── PlanError                 bad plan file (exit 2); carries Diagnostics
    ├── UsageError                bad command-line usage (exit 2)
    ├── StateError                the journal / state directory (exit 1)
    │   ├── StateDirError         the state directory cannot be made, is unsafe
    │   │                         (a link, others can write it), too full, or its
    │   │                         journal cannot be read (corrupt, newer) (exit 2)
    │   ├── RunLockedError        a live run of the same plan holds its lock (exit 3)
    │   └── RunNotFoundError      a run id or task@target that is not on record (exit 2)
    └── ExecutorError             an attempt could not even be started

The CLI maps these to exit codes in one place (``fleetrun.cli``); the library
never prints or exits.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Location:
    """A place in a source file: 1-based line and column."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem found in a plan: where, which key, what is wrong, how to fix it."""

    location: Location | None
    message: str
    key: str = ""
    fix: str = ""

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        key = f"{self.key}: " if self.key else ""
        fix = f"\n    fix: {self.fix}" if self.fix else ""
        return f"{where}{key}{self.message}{fix}"


class FleetrunError(Exception):
    """Root of all errors fleetrun reports as a message rather than a traceback."""

    exit_code: int = 1


class PlanError(FleetrunError):
    """The plan file is invalid. ``diagnostics`` lists every problem found in one pass."""

    exit_code = 2

    def __init__(self, diagnostics: list[Diagnostic] | tuple[Diagnostic, ...]) -> None:
        self.diagnostics: tuple[Diagnostic, ...] = tuple(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))


class UsageError(FleetrunError):
    """The command line asks for something impossible (unknown target, bad flag value)."""

    exit_code = 2


class StateError(FleetrunError):
    """The state directory or journal cannot be used as asked."""

    exit_code = 1


class StateDirError(StateError):
    """The state directory cannot be used: it cannot be created, it is not safe
    (a symbolic link where a file belongs, owned or writable by someone else), or
    its filesystem has too little free space to record a run, or its journal
    cannot be read (not a database, corrupt, or of a newer fleetrun)."""

    exit_code = 2


class RunLockedError(StateError):
    """A live run of the same plan holds the plan's lock in the state directory."""

    exit_code = 3


class RunNotFoundError(StateError):
    """A run, instance or attempt named on the command line is not on record."""

    exit_code = 2


class ExecutorError(FleetrunError):
    """An attempt could not be started at all (missing cwd, unspawnable command)."""
