"""Kubernetes manifests of one compute cluster and stage (pure: no I/O).

The coordinator (the Dask scheduler) runs outside Kubernetes at
``COORDINATOR_EP:COORDINATOR_PORT``; the workers reach it through a Service
without selector plus hand-made Endpoints, as in the reference deployment.
Every object is named ``<name>-<stage>[-suffix]`` and labelled
``app.kubernetes.io/{name,instance,component,part-of,managed-by}`` and
``fleetrun.io/stage``, so several stages share a namespace and ``down`` can
select exactly one stage's objects by label.

Order matters for ``kubectl apply -f -``: Namespace first, then what the
Deployment refers to (Secret, ConfigMap, Service, Endpoints), then the
Deployment.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import yaml

from fleetrun.cluster._config import ClusterConfig

WORKER_PORT = 40000
HEALTH_PORT = 8788
STAGE_LABEL = "fleetrun.io/stage"
MANAGED_BY = "fleetrun"
KINDS = ("deployment", "service", "endpoints", "configmap", "secret")
"""The kinds ``down`` deletes and then checks are gone (the namespace is shared)."""


def labels(c: ClusterConfig) -> dict[str, str]:
    """The labels every object of this cluster and stage carries."""
    return {
        "app.kubernetes.io/name": c.name,
        "app.kubernetes.io/instance": c.instance,
        "app.kubernetes.io/component": "compute-worker",
        "app.kubernetes.io/part-of": "fleetrun",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        STAGE_LABEL: c.stage,
    }


def selector(c: ClusterConfig) -> str:
    """The label selector that matches exactly this cluster's objects."""
    return f"app.kubernetes.io/instance={c.instance},{STAGE_LABEL}={c.stage}"


def names(c: ClusterConfig) -> dict[str, str]:
    """Object names by role."""
    base = c.instance
    return {
        "deployment": base,
        "service": f"{base}-coordinator",
        "configmap": f"{base}-conf",
        "secret": f"{base}-img-cred",
    }


def stage_annotation(c: ClusterConfig) -> str:
    """The namespace annotation key recording that this stage is deployed there."""
    return f"fleetrun.io/cluster-{c.instance}"


def scheduler_address(c: ClusterConfig) -> str:
    """The coordinator as the workers see it: through the Service's cluster DNS name."""
    return f"tcp://{names(c)['service']}.{c.namespace}.svc:{c.coordinator_port}"


def _meta(c: ClusterConfig, name: str) -> dict[str, Any]:
    return {"name": name, "namespace": c.namespace, "labels": labels(c)}


def render(c: ClusterConfig) -> list[dict[str, Any]]:
    """Every object of this cluster and stage, in apply order."""
    endpoint = c.require_coordinator()
    n = names(c)
    out: list[dict[str, Any]] = []
    if c.namespace != "default":
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": c.namespace,
                    "labels": {"app.kubernetes.io/part-of": "fleetrun"},
                },
            }
        )
    if c.has_credentials:
        registry = c.image_host_alias or c.image_host
        auth = base64.b64encode(f"{c.auth_user}:{c.auth_password}".encode()).decode()
        config = {"auths": {registry: {"username": c.auth_user, "auth": auth}}}
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": _meta(c, n["secret"]),
                "type": "kubernetes.io/dockerconfigjson",
                "data": {
                    ".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()
                },
            }
        )
    worker_conf = {
        "scheduler": scheduler_address(c),
        "stage": c.stage,
        "resources": dict(c.worker_resources),
        "drain_timeout": c.drain_timeout,
    }
    out.append(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _meta(c, n["configmap"]),
            "data": {"worker.yaml": yaml.safe_dump(worker_conf, sort_keys=False)},
        }
    )
    out.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(c, n["service"]),
            "spec": {
                # No selector: the Endpoints below point outside the cluster.
                "ports": [
                    {
                        "name": "scheduler",
                        "protocol": "TCP",
                        "port": c.coordinator_port,
                        "targetPort": c.coordinator_port,
                    }
                ]
            },
        }
    )
    out.append(
        {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": _meta(c, n["service"]),
            "subsets": [
                {
                    "addresses": [{"ip": endpoint}],
                    "ports": [{"name": "scheduler", "port": c.coordinator_port, "protocol": "TCP"}],
                }
            ],
        }
    )
    out.append(_deployment(c))
    return out


def _deployment(c: ClusterConfig) -> dict[str, Any]:
    n = names(c)
    pod_labels = labels(c)
    resources = ",".join(f"{k}={v:g}" for k, v in c.worker_resources.items())
    toleration: dict[str, Any] = {
        "key": c.toleration_key,
        "operator": "Equal",
        "value": c.toleration_value,
    }
    if c.toleration_effect:
        toleration["effect"] = c.toleration_effect
    retire = (
        'exec fleetrun cluster retire --scheduler "$DASK_SCHEDULER_ADDRESS" '
        f'--worker "tcp://$POD_IP:{WORKER_PORT}" --timeout {c.drain_timeout}'
    )
    container: dict[str, Any] = {
        "name": "worker",
        "image": c.pull_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["dask", "worker"],
        "args": [
            "$(DASK_SCHEDULER_ADDRESS)",
            "--name",
            "$(POD_NAME)",
            "--nthreads",
            "1",
            "--no-nanny",
            "--resources",
            resources,
            "--listen-address",
            f"tcp://0.0.0.0:{WORKER_PORT}",
            "--contact-address",
            f"tcp://$(POD_IP):{WORKER_PORT}",
            "--dashboard-address",
            f":{HEALTH_PORT}",
            "--death-timeout",
            "120",
        ],
        "env": [
            {"name": "DASK_SCHEDULER_ADDRESS", "value": scheduler_address(c)},
            {"name": "FLEETRUN_STAGE", "value": c.stage},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ],
        "ports": [
            {"name": "worker", "containerPort": WORKER_PORT, "protocol": "TCP"},
            {"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"},
        ],
        "resources": {"requests": dict(c.requests), "limits": dict(c.limits)},
        "readinessProbe": {
            "httpGet": {"path": "/health", "port": "health"},
            "initialDelaySeconds": 5,
            "periodSeconds": 10,
        },
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": "health"},
            "initialDelaySeconds": 30,
            "periodSeconds": 20,
            "failureThreshold": 6,
        },
        # Stopping a pod (scale down, rollout, down) first lets its job finish.
        "lifecycle": {"preStop": {"exec": {"command": ["/bin/sh", "-c", retire]}}},
        "volumeMounts": [{"name": "config", "mountPath": "/opt/config", "readOnly": True}],
        "securityContext": {"allowPrivilegeEscalation": False},
    }
    pod_spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": c.drain_timeout + 30,
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": c.node_key, "operator": "In", "values": [c.node_value]}
                            ]
                        }
                    ]
                }
            },
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "labelSelector": {
                            "matchLabels": {"app.kubernetes.io/instance": c.instance}
                        },
                        "topologyKey": "kubernetes.io/hostname",
                    }
                ]
            },
        },
        "tolerations": [toleration],
        "containers": [container],
        "volumes": [{"name": "config", "configMap": {"name": n["configmap"]}}],
    }
    if c.has_credentials:
        pod_spec["imagePullSecrets"] = [{"name": n["secret"]}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(c, n["deployment"]),
        "spec": {
            "replicas": c.replicas,
            "selector": {
                "matchLabels": {
                    "app.kubernetes.io/instance": c.instance,
                    STAGE_LABEL: c.stage,
                }
            },
            # One worker per node: a surge pod would find no free node, so replace in place.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
            },
            "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
        },
    }


def to_yaml(objects: list[dict[str, Any]]) -> str:
    """The objects as one multi-document YAML stream."""
    return "".join("---\n" + yaml.safe_dump(o, sort_keys=False) for o in objects)
