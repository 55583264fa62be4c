"""Executors: run one resolved attempt and report how it ended (local processes,
compute-cluster jobs). They know nothing of plans: see ``Attempt`` for what they
are given."""

from typing import TYPE_CHECKING, Any

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
from fleetrun.executors._noop import NoopExecutor
from fleetrun.executors._procfs import (
    LocalOrphanFinder,
    kill_groups,
    process_alive,
    process_start_time,
)
from fleetrun.names import env_name

if TYPE_CHECKING:
    from fleetrun.executors._cluster import ClusterExecutor, ClusterOrphanFinder


def __getattr__(name: str) -> Any:
    # The compute-cluster executor loads on first use: runs without cluster tasks
    # (and `fleetrun` start-up) do not pay for it.
    if name in ("ClusterExecutor", "ClusterOrphanFinder"):
        from fleetrun.executors import _cluster

        return getattr(_cluster, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Attempt",
    "AttemptResult",
    "ClusterExecutor",
    "ClusterOrphanFinder",
    "ErrorKind",
    "Executor",
    "Handle",
    "LocalExecutor",
    "LocalOrphanFinder",
    "NoopExecutor",
    "Orphan",
    "OrphanFinder",
    "RecordedAttempt",
    "env_name",
    "kill_groups",
    "parse_outputs",
    "process_alive",
    "process_start_time",
]
