"""Compute-cluster configuration: ``cluster.yaml`` and the reference script's environment.

Precedence, lowest first: built-in defaults, ``cluster.yaml``, environment
variables (the names the reference ``cluster-client.sh`` reads, so its users
keep their environment), command-line flags. The registry password comes from
``IMAGE_AUTH_PASSWORD`` only: it is never read from, or written to, a file.

``cluster.yaml`` (every key optional, defaults shown)::

    name: fleetrun-worker        # base of every object name; the stage is appended
    namespace: default           # CLUSTER_NS
    stage: <short git commit>    # STAGE
    replicas: 2                  # CLIENT_REPLICAS
    image: {repo: ..., host: ..., host_alias: <host>, user: ...}   # IMAGE_*
    coordinator: {endpoint: ..., port: 50055}  # COORDINATOR_EP / COORDINATOR_PORT
    node_selector: {key: fluidexnode, value: computation}
    toleration: {key: dedicated, value: computation, effect: null}
    worker_resources: {MACHINE: 1}
    requests: {cpu: "1", memory: 2Gi}
    limits: {cpu: "2", memory: 4Gi}
    drain_timeout: 3600          # seconds a worker may take to finish its job when stopped
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from fleetrun.cluster.errors import ClusterConfigError
from fleetrun.plan import UnreadableFile, read_bounded

_REPO = re.compile(
    r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)
"""A repository path as the OCI distribution spec allows it (no host, no tag)."""

DEFAULT_PORT = 50055
DEFAULT_REPLICAS = 2
DEFAULT_NAME = "fleetrun-worker"
_DNS = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_TOP = (
    "name",
    "namespace",
    "stage",
    "replicas",
    "image",
    "coordinator",
    "node_selector",
    "toleration",
    "worker_resources",
    "requests",
    "limits",
    "drain_timeout",
)
_EFFECTS = (None, "NoSchedule", "PreferNoSchedule", "NoExecute")


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """Everything needed to render, apply, build and tear down one cluster and stage."""

    image_repo: str
    stage: str
    image_host: str = ""
    image_host_alias: str = ""
    auth_user: str | None = None
    auth_password: str | None = field(default=None, repr=False)
    coordinator_ep: str | None = None
    coordinator_port: int = DEFAULT_PORT
    namespace: str = "default"
    replicas: int = DEFAULT_REPLICAS
    name: str = DEFAULT_NAME
    node_key: str = "fluidexnode"
    node_value: str = "computation"
    toleration_key: str = "dedicated"
    toleration_value: str = "computation"
    toleration_effect: str | None = None
    worker_resources: Mapping[str, float] = field(default_factory=lambda: {"MACHINE": 1.0})
    requests: Mapping[str, str] = field(default_factory=lambda: {"cpu": "1", "memory": "2Gi"})
    limits: Mapping[str, str] = field(default_factory=lambda: {"cpu": "2", "memory": "4Gi"})
    drain_timeout: int = 3600

    @property
    def push_image(self) -> str:
        """``IMAGE_HOST/IMAGE_REPO:client-STAGE``: where ``build`` pushes."""
        return _image(self.image_host, self.image_repo, self.stage)

    @property
    def pull_image(self) -> str:
        """The same image as the nodes pull it (through ``IMAGE_HOST_ALIAS``)."""
        return _image(self.image_host_alias or self.image_host, self.image_repo, self.stage)

    @property
    def has_credentials(self) -> bool:
        """True when a registry user and password are both given."""
        return bool(self.auth_user and self.auth_password)

    @property
    def instance(self) -> str:
        """``<name>-<stage>``: the name of this cluster's objects and their instance label."""
        return f"{self.name}-{self.stage}"

    def require_coordinator(self) -> str:
        """The coordinator endpoint, or the one-line error when it is missing."""
        if not self.coordinator_ep:
            raise ClusterConfigError(
                "COORDINATOR_EP is not set: give the IP address every node can reach the "
                "coordinator at (environment, or coordinator.endpoint in cluster.yaml)"
            )
        return self.coordinator_ep

    def with_endpoint(self, endpoint: str, port: int | None) -> ClusterConfig:
        """This configuration pointed at another coordinator."""
        return replace(
            self, coordinator_ep=endpoint, coordinator_port=port or self.coordinator_port
        )


def _image(host: str, repo: str, stage: str) -> str:
    return f"{host.rstrip('/')}/{repo}:client-{stage}" if host else f"{repo}:client-{stage}"


def short_commit(cwd: Path | None = None) -> str | None:
    """``git rev-parse --short HEAD`` in ``cwd``, None outside a repository."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def load_config(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    *,
    cwd: Path | None = None,
) -> ClusterConfig:
    """The configuration from ``path`` (``cluster.yaml``; optional) under ``env``.

    Raises ``ClusterConfigError`` (one line, exit 2) for anything missing or invalid.
    """
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(read_bounded(path).decode("utf-8", errors="replace"))
        except UnreadableFile as e:
            fix = f"; {e.fix}" if e.fix else ""
            raise ClusterConfigError(f"cannot read {path}: {e.reason}{fix}") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
            raise ClusterConfigError(f"{path}{where}: not valid YAML") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ClusterConfigError(f"{path}: expected a mapping of settings")
        data = loaded or {}
    where = str(path) if path else "configuration"
    for k in data:
        if k not in _TOP:
            raise ClusterConfigError(f"{where}: unknown key {k!r}; use one of: {', '.join(_TOP)}")
    image = _section(data, "image", where)
    coord = _section(data, "coordinator", where)
    node = _section(data, "node_selector", where)
    tol = _section(data, "toleration", where)

    def pick(var: str, value: Any, default: Any = None) -> Any:
        got = env.get(var)
        if got is not None and got != "":
            return got
        return value if value is not None else default

    repo = pick("IMAGE_REPO", image.get("repo"))
    if not repo:
        raise ClusterConfigError(
            "IMAGE_REPO is not set: name the worker image repository (environment, or "
            "image.repo in cluster.yaml)"
        )
    stage = pick("STAGE", data.get("stage")) or short_commit(cwd)
    if not stage:
        raise ClusterConfigError("STAGE is not set and this is not a git checkout: set STAGE")
    stage = str(stage).lower()
    host = str(pick("IMAGE_HOST", image.get("host"), ""))
    ns = str(pick("CLUSTER_NS", data.get("namespace"), "default"))
    name = str(data.get("name", DEFAULT_NAME))
    for label, value in (("namespace", ns), ("name", name), ("stage", stage)):
        if not _DNS.match(value) or len(value) > 63:
            raise ClusterConfigError(
                f"{label} {value!r} is not a valid Kubernetes name "
                "(lower-case letters, digits and '-')"
            )
    if not _REPO.match(str(repo)):
        raise ClusterConfigError(
            f"IMAGE_REPO {str(repo)!r} is not an image repository (lower-case path such as "
            "team/prover, no tag: the tag is client-<STAGE>)"
        )
    endpoint = pick("COORDINATOR_EP", coord.get("endpoint"))
    if endpoint:
        try:
            ipaddress.ip_address(str(endpoint))
        except ValueError:
            raise ClusterConfigError(
                f"COORDINATOR_EP {str(endpoint)!r} is not an IP address: the Endpoints object "
                "takes an address every node can reach (the port goes in COORDINATOR_PORT)"
            ) from None
    user = pick("IMAGE_AUTH_USER", image.get("user"))
    if user and not env.get("IMAGE_AUTH_PASSWORD"):
        # Name where the user came from: most often cluster.yaml, not the environment.
        given = "IMAGE_AUTH_USER" if env.get("IMAGE_AUTH_USER") else f"image.user in {path}"
        raise ClusterConfigError(
            f"{given} names a registry user but IMAGE_AUTH_PASSWORD is not set: "
            "export IMAGE_AUTH_PASSWORD=... in this shell (the registry secret needs both), "
            "or remove the user for a registry without login"
        )
    if not user and env.get("IMAGE_AUTH_PASSWORD"):
        raise ClusterConfigError(
            "IMAGE_AUTH_PASSWORD is set but no registry user is: set IMAGE_AUTH_USER or "
            "image.user (the registry secret needs both, or neither)"
        )
    effect = tol.get("effect")
    if effect not in _EFFECTS:
        raise ClusterConfigError(
            f"toleration.effect {effect!r} is not one of NoSchedule, PreferNoSchedule, NoExecute"
        )
    return ClusterConfig(
        image_repo=str(repo),
        stage=stage,
        image_host=host,
        image_host_alias=str(pick("IMAGE_HOST_ALIAS", image.get("host_alias"), host)),
        auth_user=user,
        auth_password=env.get("IMAGE_AUTH_PASSWORD") or None,
        coordinator_ep=endpoint,
        coordinator_port=_int(pick("COORDINATOR_PORT", coord.get("port"), DEFAULT_PORT), "port"),
        namespace=ns,
        replicas=_int(pick("CLIENT_REPLICAS", data.get("replicas"), DEFAULT_REPLICAS), "replicas"),
        name=name,
        node_key=str(node.get("key", "fluidexnode")),
        node_value=str(node.get("value", "computation")),
        toleration_key=str(tol.get("key", "dedicated")),
        toleration_value=str(tol.get("value", "computation")),
        toleration_effect=effect,
        worker_resources={
            str(k): float(v) for k, v in (data.get("worker_resources") or {"MACHINE": 1}).items()
        },
        requests={
            str(k): str(v)
            for k, v in (data.get("requests") or {"cpu": "1", "memory": "2Gi"}).items()
        },
        limits={
            str(k): str(v) for k, v in (data.get("limits") or {"cpu": "2", "memory": "4Gi"}).items()
        },
        drain_timeout=_int(data.get("drain_timeout", 3600), "drain_timeout"),
    )


def _section(data: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ClusterConfigError(f"{where}: {key} must be a mapping")
    return value


def _int(value: Any, what: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ClusterConfigError(f"{what} {value!r} is not a whole number") from None
    if n < 0 or (what == "port" and not 0 < n < 65536):
        raise ClusterConfigError(f"{what} {value!r} is out of range")
    return n
