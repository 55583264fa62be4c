"""One run from request to result, in two steps: prepare (load, lock, recover, plan
the run) and execute (orphans, the engine, the record, in one event loop). Dry runs,
retry planning, executors by kind, and which runs a command means (one rule for
retry and every command that reads the record). Used by every command that runs
something; never prints."""

from fleetrun.session._control import cancel_run, live_run, promote_run
from fleetrun.session._executors import (
    ExecutorContext,
    ExecutorFactory,
    ExecutorRegistry,
    default_registry,
)
from fleetrun.session._prepare import OrphanSearch, PlannedRun, PreparedRun
from fleetrun.session._request import (
    STATE_DIR_NAME,
    Console,
    ConsoleFactory,
    Notice,
    Report,
    RunOutcome,
    RunRequest,
    RunSetup,
    find_state_dir,
)
from fleetrun.session._select import (
    describe_run,
    plan_key,
    select_run,
    select_runs,
    vars_text,
)
from fleetrun.session._session import Session
from fleetrun.session._views import dry_run_lines, reason_lines, start_order
from fleetrun.state import EXEC_SUFFIX

__all__ = [
    "EXEC_SUFFIX",
    "STATE_DIR_NAME",
    "Console",
    "ConsoleFactory",
    "ExecutorContext",
    "ExecutorFactory",
    "ExecutorRegistry",
    "Notice",
    "OrphanSearch",
    "PlannedRun",
    "PreparedRun",
    "Report",
    "RunOutcome",
    "RunRequest",
    "RunSetup",
    "Session",
    "cancel_run",
    "default_registry",
    "describe_run",
    "dry_run_lines",
    "find_state_dir",
    "live_run",
    "plan_key",
    "promote_run",
    "reason_lines",
    "select_run",
    "select_runs",
    "start_order",
    "vars_text",
]
