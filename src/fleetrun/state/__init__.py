"""The journal: every run on record in SQLite, the run lock, crash recovery, retry planning.

``JournalReader`` reads the record without ever writing to it (typed records:
``RunRecord``, ``InstanceRecord``, ``AttemptRecord``); ``Journal`` also begins,
ends and recovers runs; ``JournalWriter`` journals a run's events as it goes.
"""

from fleetrun.executors import Orphan, kill_groups, process_alive, process_start_time
from fleetrun.state._db import DB_NAME, SCHEMA_VERSION, connect
from fleetrun.state._journal import Journal, NewInstance
from fleetrun.state._lock import RunLock, read_lock
from fleetrun.state._reader import JournalReader
from fleetrun.state._records import AttemptRecord, InstanceRecord, RunRecord
from fleetrun.state._retry import DONE_STATES, RetryPlan, plan_retry, render_command
from fleetrun.state._writer import JournalWriter, command_hash

__all__ = [
    "DB_NAME",
    "DONE_STATES",
    "SCHEMA_VERSION",
    "AttemptRecord",
    "InstanceRecord",
    "Journal",
    "JournalReader",
    "JournalWriter",
    "NewInstance",
    "Orphan",
    "RetryPlan",
    "RunLock",
    "RunRecord",
    "command_hash",
    "connect",
    "kill_groups",
    "plan_retry",
    "process_alive",
    "process_start_time",
    "read_lock",
    "render_command",
]
