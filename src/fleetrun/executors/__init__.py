"""Executors: run one resolved attempt and report how it ended (local processes,
SSH, compute-cluster jobs). They know nothing of plans: see ``Attempt`` for what
they are given.

The local process code has a Linux fast path and a portable path for any
POSIX system; ``_platform`` chooses on first use (``FLEETRUN_PLATFORM``), and
``LocalExecutor()`` and ``LocalOrphanFinder()`` make the chosen path's."""

from typing import TYPE_CHECKING

from fleetrun._lazy import lazy_names
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
from fleetrun.executors._names import file_name
from fleetrun.executors._noop import NoopExecutor
from fleetrun.executors._orphans import TaggedProcess
from fleetrun.executors._outputs import (
    MAX_OUTPUTS_BYTES,
    MAX_VALUE_BYTES,
    OutputRefused,
    check_outputs_size,
    parse_output_bytes,
    parse_outputs,
)
from fleetrun.executors._platform import (
    LocalExecutor,
    LocalOrphanFinder,
    kill_groups,
    process_alive,
    process_start_time,
    tagged_processes,
)
from fleetrun.names import ATTEMPT_ID, env_name

if TYPE_CHECKING:
    from fleetrun.executors._cluster import (
        CLUSTER_ENV,
        ClusterExecutor,
        ClusterOrphanFinder,
        resolve_address,
    )
    from fleetrun.executors._cluster_job import running_jobs as running_cluster_jobs
    from fleetrun.executors._dask_local import (
        MACHINE,
        LocalCluster,
        LocalProcess,
        quiet_dask_logs,
        stop_processes,
    )
    from fleetrun.executors._ssh import SSHExecutor
    from fleetrun.executors._ssh_orphans import SSHOrphanFinder
    from fleetrun.executors._ssh_spec import SSHSpec

# Loaded on first use: a run without SSH or cluster tasks never imports
# asyncssh or Dask (each costs a noticeable part of fleetrun's start-up).
_LAZY = {
    "SSHExecutor": ("_ssh", "SSHExecutor"),
    "SSHOrphanFinder": ("_ssh_orphans", "SSHOrphanFinder"),
    "SSHSpec": ("_ssh_spec", "SSHSpec"),
    "CLUSTER_ENV": ("_cluster", "CLUSTER_ENV"),
    "ClusterExecutor": ("_cluster", "ClusterExecutor"),
    "ClusterOrphanFinder": ("_cluster", "ClusterOrphanFinder"),
    "resolve_address": ("_cluster", "resolve_address"),
    "running_cluster_jobs": ("_cluster_job", "running_jobs"),
    "MACHINE": ("_dask_local", "MACHINE"),
    "LocalCluster": ("_dask_local", "LocalCluster"),
    "LocalProcess": ("_dask_local", "LocalProcess"),
    "stop_processes": ("_dask_local", "stop_processes"),
    "quiet_dask_logs": ("_dask_local", "quiet_dask_logs"),
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())


__all__ = [
    "ATTEMPT_ID",
    "CLUSTER_ENV",
    "MACHINE",
    "MAX_OUTPUTS_BYTES",
    "MAX_VALUE_BYTES",
    "Attempt",
    "AttemptResult",
    "ClusterExecutor",
    "ClusterOrphanFinder",
    "ErrorKind",
    "Executor",
    "Handle",
    "LocalCluster",
    "LocalExecutor",
    "LocalOrphanFinder",
    "LocalProcess",
    "NoopExecutor",
    "Orphan",
    "OrphanFinder",
    "OutputRefused",
    "RecordedAttempt",
    "SSHExecutor",
    "SSHOrphanFinder",
    "SSHSpec",
    "TaggedProcess",
    "check_outputs_size",
    "env_name",
    "file_name",
    "kill_groups",
    "parse_output_bytes",
    "parse_outputs",
    "process_alive",
    "process_start_time",
    "quiet_dask_logs",
    "resolve_address",
    "running_cluster_jobs",
    "stop_processes",
    "tagged_processes",
]
