"""One run from request to result: lock, journal, recovery, orphans, retry planning,
dry runs, executors by kind. Used by every command that runs something; never prints."""

from fleetrun.session._executors import ExecutorFactory, ExecutorRegistry, default_registry
from fleetrun.session._request import (
    STATE_DIR_NAME,
    Console,
    ConsoleFactory,
    Notice,
    RunOutcome,
    RunRequest,
    RunSetup,
    find_state_dir,
)
from fleetrun.session._session import Session
from fleetrun.session._views import dry_run_lines, reason_lines, start_order

__all__ = [
    "STATE_DIR_NAME",
    "Console",
    "ConsoleFactory",
    "ExecutorFactory",
    "ExecutorRegistry",
    "Notice",
    "RunOutcome",
    "RunRequest",
    "RunSetup",
    "Session",
    "default_registry",
    "dry_run_lines",
    "find_state_dir",
    "reason_lines",
    "start_order",
]
