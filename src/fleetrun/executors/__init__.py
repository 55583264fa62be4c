"""Executors: run one attempt of one node (local processes; more kinds later)."""

from fleetrun.engine._executor import AttemptResult, AttemptSpec, Executor
from fleetrun.executors._local import LocalExecutor, env_name, parse_outputs
from fleetrun.executors._names import file_name
from fleetrun.executors._noop import NoopExecutor
from fleetrun.executors._reaper import ATTEMPT_ID, TaggedProcess, tagged_processes

__all__ = [
    "ATTEMPT_ID",
    "AttemptResult",
    "AttemptSpec",
    "Executor",
    "LocalExecutor",
    "NoopExecutor",
    "TaggedProcess",
    "env_name",
    "file_name",
    "parse_outputs",
    "tagged_processes",
]
