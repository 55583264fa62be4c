"""Executors: run one attempt of one node (local processes, compute-cluster jobs)."""

from fleetrun.engine._executor import AttemptResult, AttemptSpec, Executor
from fleetrun.executors._cluster import ClusterExecutor, ClusterOrphanFinder
from fleetrun.executors._local import LocalExecutor, env_name, parse_outputs
from fleetrun.executors._noop import NoopExecutor

__all__ = [
    "AttemptResult",
    "AttemptSpec",
    "ClusterExecutor",
    "ClusterOrphanFinder",
    "Executor",
    "LocalExecutor",
    "NoopExecutor",
    "env_name",
    "parse_outputs",
]
