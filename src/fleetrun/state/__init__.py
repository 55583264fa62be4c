"""The journal: every run on record in SQLite, the run lock, crash recovery, retry planning."""

from fleetrun.state._db import DB_NAME, SCHEMA_VERSION, connect
from fleetrun.state._journal import Journal, NewInstance
from fleetrun.state._lock import RunLock, read_lock
from fleetrun.state._proc import Orphan, kill_groups, process_alive, process_start_time
from fleetrun.state._writer import JournalWriter, command_hash

__all__ = [
    "DB_NAME",
    "SCHEMA_VERSION",
    "Journal",
    "JournalWriter",
    "NewInstance",
    "Orphan",
    "RunLock",
    "command_hash",
    "connect",
    "kill_groups",
    "process_alive",
    "process_start_time",
    "read_lock",
]
