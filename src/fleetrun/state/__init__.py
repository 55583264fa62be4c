"""The journal: every run on record in SQLite, the run lock, crash recovery, retry planning."""

from fleetrun.executors import Orphan, kill_groups, process_alive, process_start_time
from fleetrun.state._db import DB_NAME, SCHEMA_VERSION, connect
from fleetrun.state._journal import Journal, NewInstance
from fleetrun.state._lock import RunLock, read_lock
from fleetrun.state._retry import DONE_STATES, RetryPlan, plan_retry, render_command
from fleetrun.state._view import (
    history_text,
    outputs_data,
    outputs_env,
    outputs_text,
    run_summary,
    show_text,
    write_atomic,
)
from fleetrun.state._writer import JournalWriter, command_hash

__all__ = [
    "DB_NAME",
    "DONE_STATES",
    "SCHEMA_VERSION",
    "Journal",
    "JournalWriter",
    "NewInstance",
    "Orphan",
    "RetryPlan",
    "RunLock",
    "command_hash",
    "connect",
    "history_text",
    "kill_groups",
    "outputs_data",
    "outputs_env",
    "outputs_text",
    "plan_retry",
    "process_alive",
    "process_start_time",
    "read_lock",
    "render_command",
    "run_summary",
    "show_text",
    "write_atomic",
]
