"""The compute cluster's lifecycle: local processes, Kubernetes manifests, kubectl, image.

Dask distributed is the engine: the scheduler is the coordinator and every
worker advertises one ``MACHINE`` resource, so one job runs per machine.
"""

from fleetrun.cluster._config import (
    CLUSTER_ENV,
    DEFAULT_PORT,
    ClusterConfig,
    load_config,
    resolve_address,
    short_commit,
)
from fleetrun.cluster._control import (
    connect,
    down_local,
    drain,
    local_dir,
    scale_local,
    status,
)
from fleetrun.cluster._image import DOCKERFILE, build
from fleetrun.cluster._kube import Kubectl, endpoint, leftovers, render_text, scale
from fleetrun.cluster._kube import down as down_kubernetes
from fleetrun.cluster._kube import up as up_kubernetes
from fleetrun.cluster._local import MACHINE, LocalCluster, LocalProcess, stop_processes
from fleetrun.cluster._manifests import labels, names, render, scheduler_address, selector
from fleetrun.cluster.errors import (
    ClusterCommandError,
    ClusterConfigError,
    ClusterError,
    ClusterNotFoundError,
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
    "local_dir",
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
