"""The public names of the compute-cluster package, pinned (a removal is a breaking change)."""

from __future__ import annotations

import subprocess
import sys

import fleetrun.cluster
import fleetrun.executors


def test_cluster_exports() -> None:
    assert sorted(fleetrun.cluster.__all__) == sorted(
        [
            "CLUSTER_ENV", "DEFAULT_PORT", "DOCKERFILE", "MACHINE", "ClusterCommandError",
            "ClusterConfig", "ClusterConfigError", "ClusterError", "ClusterNotFoundError",
            "Kubectl", "LocalCluster", "LocalProcess", "build", "connect", "down_kubernetes",
            "down_local", "drain", "endpoint", "labels", "leftovers", "load_config",
            "load_local", "local_dir", "local_recorded", "names", "render", "render_text",
            "resolve_address", "scale",
            "scale_local", "scheduler_address", "selector", "short_commit", "status",
            "stop_processes", "up_kubernetes",
        ]
    )  # fmt: skip
    for name in fleetrun.cluster.__all__:
        assert hasattr(fleetrun.cluster, name), name
    assert {
        "CLUSTER_ENV", "MACHINE", "ClusterExecutor", "ClusterOrphanFinder", "LocalCluster",
        "LocalProcess", "resolve_address", "running_cluster_jobs", "stop_processes",
    } <= set(fleetrun.executors.__all__)  # fmt: skip
    for name in fleetrun.executors.__all__:
        assert hasattr(fleetrun.executors, name), name


def test_importing_fleetrun_does_not_need_the_cluster_extra() -> None:
    code = (
        "import sys, fleetrun.executors, fleetrun.cluster, fleetrun.cli._cluster_cmd; "
        "print('distributed' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
