"""The journal: every run on record in SQLite, the run lock, crash recovery, retry planning.

``JournalReader`` reads the record without ever writing to it (typed records:
``RunRecord``, ``InstanceRecord``, ``AttemptRecord``); ``Journal`` also begins,
ends and recovers runs; ``JournalWriter`` journals a run's events as it goes.
"""

from fleetrun.executors import Orphan, kill_groups, process_alive, process_start_time
from fleetrun.state._db import DB_NAME, SCHEMA_VERSION, connect
from fleetrun.state._fs import (
    DEFAULT_MIN_FREE_MB,
    MIN_FREE_ENV,
    check_free_space,
    check_state_dir,
    open_user_file,
    prepare_state_dir,
    private_dirs,
    tighten_tree,
    write_atomic,
)
from fleetrun.state._journal import Journal, NewInstance
from fleetrun.state._lock import RunLock, lock_path, read_lock
from fleetrun.state._prune import PruneResult, journal_size, prune
from fleetrun.state._reader import JournalReader
from fleetrun.state._records import EXEC_SUFFIX, AttemptRecord, InstanceRecord, RunRecord
from fleetrun.state._replay import decode_event
from fleetrun.state._retry import DONE_STATES, RetryPlan, plan_retry, reuse_plan, waves_opened
from fleetrun.state._writer import _ENCODE as encode_json
from fleetrun.state._writer import _FIELDS as EVENT_FIELDS
from fleetrun.state._writer import JournalWriter, command_hash
from fleetrun.state._writer import _getter as field_getter

__all__ = [
    "DB_NAME",
    "DEFAULT_MIN_FREE_MB",
    "DONE_STATES",
    "EVENT_FIELDS",
    "EXEC_SUFFIX",
    "MIN_FREE_ENV",
    "SCHEMA_VERSION",
    "AttemptRecord",
    "InstanceRecord",
    "Journal",
    "JournalReader",
    "JournalWriter",
    "NewInstance",
    "Orphan",
    "PruneResult",
    "RetryPlan",
    "RunLock",
    "RunRecord",
    "check_free_space",
    "check_state_dir",
    "command_hash",
    "connect",
    "decode_event",
    "encode_json",
    "field_getter",
    "journal_size",
    "kill_groups",
    "lock_path",
    "open_user_file",
    "plan_retry",
    "prepare_state_dir",
    "private_dirs",
    "process_alive",
    "process_start_time",
    "prune",
    "read_lock",
    "reuse_plan",
    "tighten_tree",
    "waves_opened",
    "write_atomic",
]
