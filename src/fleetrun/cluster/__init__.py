"""The compute cluster's lifecycle: local processes, Kubernetes manifests, kubectl, image.

Dask distributed is the engine: the scheduler is the coordinator and every
worker advertises one ``MACHINE`` resource, so one job runs per machine.
"""

from fleetrun.cluster._local import MACHINE, LocalCluster, LocalProcess, stop_processes
from fleetrun.cluster.errors import (
    ClusterCommandError,
    ClusterConfigError,
    ClusterError,
    ClusterNotFoundError,
)

__all__ = [
    "MACHINE",
    "ClusterCommandError",
    "ClusterConfigError",
    "ClusterError",
    "ClusterNotFoundError",
    "LocalCluster",
    "LocalProcess",
    "stop_processes",
]
