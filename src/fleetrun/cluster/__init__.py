"""The compute cluster's lifecycle: local processes, Kubernetes manifests, kubectl, image.

Dask distributed is the engine: the scheduler is the coordinator and every
worker advertises one ``MACHINE`` resource, so one job runs per machine.
"""

from fleetrun.cluster._config import DEFAULT_PORT, ClusterConfig, load_config, short_commit
from fleetrun.cluster._control import (
    connect,
    down_local,
    drain,
    load_local,
    local_dir,
    local_recorded,
    scale_local,
    status,
)
from fleetrun.cluster._image import DOCKERFILE, build
from fleetrun.cluster._kube import Kubectl, endpoint, leftovers, render_text, scale
from fleetrun.cluster._kube import down as down_kubernetes
from fleetrun.cluster._kube import up as up_kubernetes
from fleetrun.cluster._manifests import labels, names, render, scheduler_address, selector
from fleetrun.cluster.errors import (
    ClusterCommandError,
    ClusterConfigError,
    ClusterError,
    ClusterNotFoundError,
)
from fleetrun.executors import (
    CLUSTER_ENV,
    MACHINE,
    LocalCluster,
    LocalProcess,
    resolve_address,
    stop_processes,
)

__all__ = [
    "CLUSTER_ENV",
    "DEFAULT_PORT",
    "DOCKERFILE",
    "MACHINE",
    "ClusterCommandError",
    "ClusterConfig",
    "ClusterConfigError",
    "ClusterError",
    "ClusterNotFoundError",
    "Kubectl",
    "LocalCluster",
    "LocalProcess",
    "build",
    "connect",
    "down_kubernetes",
    "down_local",
    "drain",
    "endpoint",
    "labels",
    "leftovers",
    "load_config",
    "load_local",
    "local_dir",
    "local_recorded",
    "names",
    "render",
    "render_text",
    "resolve_address",
    "scale",
    "scale_local",
    "scheduler_address",
    "selector",
    "short_commit",
    "status",
    "stop_processes",
    "up_kubernetes",
]
