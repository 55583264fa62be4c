"""Executors: run one resolved attempt and report how it ended (local processes,
SSH). They know nothing of plans: see ``Attempt`` for what they are given."""

from fleetrun.executors._contract import (
    Attempt,
    AttemptResult,
    ErrorKind,
    Executor,
    Handle,
    Orphan,
    OrphanFinder,
    RecordedAttempt,
)
from fleetrun.executors._local import LocalExecutor, parse_outputs
from fleetrun.executors._names import file_name
from fleetrun.executors._noop import NoopExecutor
from fleetrun.executors._procfs import (
    LocalOrphanFinder,
    kill_groups,
    process_alive,
    process_start_time,
)
from fleetrun.executors._reaper import ATTEMPT_ID, TaggedProcess, tagged_processes
from fleetrun.executors._ssh import SSHExecutor
from fleetrun.executors._ssh_orphans import SSHOrphanFinder
from fleetrun.executors._ssh_spec import SSHSpec
from fleetrun.names import env_name

__all__ = [
    "ATTEMPT_ID",
    "Attempt",
    "AttemptResult",
    "ErrorKind",
    "Executor",
    "Handle",
    "LocalExecutor",
    "LocalOrphanFinder",
    "NoopExecutor",
    "Orphan",
    "OrphanFinder",
    "RecordedAttempt",
    "SSHExecutor",
    "SSHOrphanFinder",
    "SSHSpec",
    "TaggedProcess",
    "env_name",
    "file_name",
    "kill_groups",
    "parse_outputs",
    "process_alive",
    "process_start_time",
    "tagged_processes",
]
