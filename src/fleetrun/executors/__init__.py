"""Executors: run one attempt of one node (local processes; more kinds later)."""

from fleetrun.engine._executor import AttemptResult, AttemptSpec, Executor
from fleetrun.executors._local import LocalExecutor, env_name, parse_outputs
from fleetrun.executors._noop import NoopExecutor
from fleetrun.executors._ssh import SSHExecutor
from fleetrun.executors._ssh_orphans import SSHOrphanFinder
from fleetrun.executors._ssh_spec import SSHSpec

__all__ = [
    "AttemptResult",
    "AttemptSpec",
    "Executor",
    "LocalExecutor",
    "NoopExecutor",
    "SSHExecutor",
    "SSHOrphanFinder",
    "SSHSpec",
    "env_name",
    "parse_outputs",
]
