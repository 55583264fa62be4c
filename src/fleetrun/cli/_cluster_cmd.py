"""``fleetrun cluster``: the compute cluster, as local processes or on Kubernetes.

Which cluster a command acts on: ``--local`` (the one ``up --local`` recorded
in the state directory) or ``--kubernetes`` (configured by ``cluster.yaml``
and the reference environment variables); with neither, the recorded local
cluster when there is one, else Kubernetes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from fleetrun.cluster import (
    ClusterConfig,
    ClusterNotFoundError,
    Kubectl,
    LocalCluster,
    build,
    down_kubernetes,
    down_local,
    drain,
    endpoint,
    load_config,
    load_local,
    local_dir,
    local_recorded,
    render_text,
    scale,
    scale_local,
    status,
    up_kubernetes,
)
from fleetrun.errors import UsageError
from fleetrun.layout import STATE_DIR_NAME
from fleetrun.names import CLUSTER_ENV


def _state(state_dir: str | None) -> Path:
    return Path(state_dir).resolve() if state_dir else Path.cwd() / STATE_DIR_NAME


def _config(path: str | None) -> ClusterConfig:
    if path is None and Path("cluster.yaml").exists():
        path = "cluster.yaml"
    return load_config(Path(path) if path else None)


def _kubectl(conf: ClusterConfig, context: str | None) -> Kubectl:
    return Kubectl(context=context, secrets=[conf.auth_password] if conf.auth_password else [])


def _is_local(local: bool | None, state_dir: str | None) -> bool:
    if local is not None:
        return local
    return local_recorded(local_dir(_state(state_dir)))


# A Kubernetes cluster is configured by one of these (or by a configuration file).
_KUBERNETES_VARS = ("IMAGE_REPO", "COORDINATOR_EP")


def _none_up(local: bool | None, config_path: str | None, state_dir: str | None) -> None:
    """Say, in one line (exit 2), that no cluster is up, when no cluster was named
    (``--local``/``--kubernetes``), none is recorded here and nothing configures a
    Kubernetes one: a status after ``down`` is not a configuration error."""
    if local is not None or _is_local(local, state_dir):
        return
    if config_path is not None or Path("cluster.yaml").exists():
        return
    if any(os.environ.get(v) for v in _KUBERNETES_VARS):
        return
    raise ClusterNotFoundError(
        f"no cluster is up: no local cluster is recorded in {local_dir(_state(state_dir))} "
        "and no Kubernetes cluster is configured (cluster.yaml, --config or COORDINATOR_EP); "
        "start one with `fleetrun cluster up --local`"
    )


_config_opt = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Cluster configuration file (default: ./cluster.yaml when present).",
)
_state_opt = click.option(
    "--state-dir", default=None, help="State directory (default: ./.fleetrun)."
)
_where_opt = click.option(
    "--local/--kubernetes",
    "local",
    default=None,
    help="The recorded local cluster, or the Kubernetes one (default: local if recorded).",
)
_context_opt = click.option("--context", default=None, help="kubectl context (default: current).")


@click.group()
def cluster() -> None:
    """The compute cluster: {commands}.

    \b
    Configuration: cluster.yaml and the variables IMAGE_REPO (required),
    IMAGE_HOST, IMAGE_HOST_ALIAS, IMAGE_AUTH_USER, IMAGE_AUTH_PASSWORD,
    COORDINATOR_EP (required on Kubernetes), COORDINATOR_PORT (50055),
    CLUSTER_NS, STAGE (short git commit), CLIENT_REPLICAS (2).
    """


@cluster.command()
@click.option("--local", "local", is_flag=True, help="Start scheduler and workers on this machine.")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="Workers (default 2).")
@click.option("--port", type=click.IntRange(0, 65535), default=0, help="Scheduler port (local).")
@click.option(
    "--host", default="127.0.0.1", help="Scheduler address to listen on (local; default loopback)."
)
@_config_opt
@_state_opt
@_context_opt
def up(
    local: bool,
    workers: int | None,
    port: int,
    host: str,
    config_path: str | None,
    state_dir: str | None,
    context: str | None,
) -> None:
    """Start a long-lived local cluster, or apply the cluster to Kubernetes."""
    if local:
        directory = local_dir(_state(state_dir))
        if local_recorded(directory):
            raise UsageError(
                f"a local cluster is already recorded in {directory}; "
                "`fleetrun cluster down --local` first"
            )
        c = LocalCluster(directory, port=port, host=host)
        try:
            address = c.start(2 if workers is None else workers)
        except BaseException:
            c.stop()
            c.remove_files()
            raise
        c.save()
        click.echo(f"local cluster up: {address}, {len(c.workers)} workers")
        click.echo(f"use it with: --cluster {address}  (or FLEETRUN_CLUSTER={address})")
        return
    conf = _config(config_path)
    if workers is not None:
        conf = _replace(conf, replicas=workers)
    objects = up_kubernetes(conf, _kubectl(conf, context))
    for o in objects:
        click.echo(f"applied {o}")
    click.echo(
        f"workers connect to the coordinator at {conf.coordinator_ep}:{conf.coordinator_port}"
    )


def _replace(conf: ClusterConfig, **changes: Any) -> ClusterConfig:
    from dataclasses import replace

    return replace(conf, **changes)


@cluster.command(name="status")
@click.option("--address", default=None, help="Scheduler address (default: see above).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@_where_opt
@_config_opt
@_state_opt
def status_cmd(
    address: str | None,
    fmt: str,
    local: bool | None,
    config_path: str | None,
    state_dir: str | None,
) -> None:
    """Workers, their resources and the job each runs; queued jobs."""
    address = address or os.environ.get(CLUSTER_ENV) or None
    if address is None:
        _none_up(local, config_path, state_dir)
        if _is_local(local, state_dir):
            address = load_local(local_dir(_state(state_dir))).address
        else:
            conf = _config(config_path)
            address = f"tcp://{conf.require_coordinator()}:{conf.coordinator_port}"
    info = status(address)
    if fmt == "json":
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"scheduler {info['address']}: {len(info['workers'])} workers")
    for w in info["workers"]:
        res = ",".join(f"{k}={v:g}" for k, v in w["resources"].items())
        click.echo(f"  {w['name']:<16} pid {w['pid']!s:<8} {res:<16} {w['job'] or 'idle'}")
    click.echo(f"queued jobs: {len(info['queued'])}")
    for key in info["queued"]:
        click.echo(f"  {key}")


@cluster.command(name="scale")
@click.argument("replicas", type=click.IntRange(min=0))
@click.option("--drain-timeout", type=float, default=3600.0, help="Seconds to wait for jobs.")
@_where_opt
@_config_opt
@_state_opt
@_context_opt
def scale_cmd(
    replicas: int,
    drain_timeout: float,
    local: bool | None,
    config_path: str | None,
    state_dir: str | None,
    context: str | None,
) -> None:
    """Grow or shrink the workers to REPLICAS; leaving workers finish their job first."""
    if _is_local(local, state_dir):
        c = load_local(local_dir(_state(state_dir)))
        got = scale_local(c, replicas, drain_timeout)
        click.echo(f"local cluster: {got['workers']} workers")
        return
    conf = _config(config_path)
    scale(conf, _kubectl(conf, context), replicas)
    click.echo(f"deployment {conf.instance}: {replicas} replicas")


@cluster.command(name="endpoint")
@click.argument("address")
@_config_opt
@_context_opt
def endpoint_cmd(address: str, config_path: str | None, context: str | None) -> None:
    """Point the workers at a coordinator at ADDRESS[:PORT] (re-render, apply, roll)."""
    host, _, port_text = address.partition(":")
    port: int | None = None
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise UsageError(f"{address!r}: the port must be a number from 1 to 65535")
        port = int(port_text)
    conf = _config(config_path).with_endpoint(host, port)
    endpoint(conf, _kubectl(conf, context))
    click.echo(f"workers of {conf.instance} now use {host}:{conf.coordinator_port}")


@cluster.command(name="down")
@click.option("--drain-timeout", type=float, default=3600.0, help="Seconds to wait for jobs.")
@click.option("--delete-namespace", is_flag=True, help="Also delete CLUSTER_NS (Kubernetes).")
@_where_opt
@_config_opt
@_state_opt
@_context_opt
def down_cmd(
    drain_timeout: float,
    delete_namespace: bool,
    local: bool | None,
    config_path: str | None,
    state_dir: str | None,
    context: str | None,
) -> None:
    """Drain, then remove every process, object and file of the cluster; verify."""
    if _is_local(local, state_dir):
        c = load_local(local_dir(_state(state_dir)))
        left = down_local(c, drain_timeout)
        what = "local cluster"
    else:
        conf = _config(config_path)
        left = down_kubernetes(conf, _kubectl(conf, context), delete_namespace=delete_namespace)
        what = f"cluster {conf.instance} in namespace {conf.namespace}"
    if left:
        raise ClusterNotFoundError(f"{what} is not fully down; still there: {', '.join(left)}")
    click.echo(f"{what} is down; nothing of it is left")


@cluster.command(name="render")
@_config_opt
def render_cmd(config_path: str | None) -> None:
    """Print the Kubernetes manifests (credentials included when given: mind where it goes)."""
    click.echo(render_text(_config(config_path)), nl=False)


@cluster.command(name="build")
@click.option(
    "--context-dir",
    type=click.Path(file_okay=False, exists=True),
    default=".",
    help="Docker build context (default: .).",
)
@click.option("--dockerfile", type=click.Path(dir_okay=False, exists=True), default=None)
@click.option("--push/--no-push", default=True, help="Push after building (default: push).")
@_config_opt
def build_cmd(
    context_dir: str, dockerfile: str | None, push: bool, config_path: str | None
) -> None:
    """Build the worker image IMAGE_HOST/IMAGE_REPO:client-STAGE and push it."""
    conf = _config(config_path)
    tag = build(
        conf, Path(context_dir), dockerfile=Path(dockerfile) if dockerfile else None, push=push
    )
    click.echo(f"{'pushed' if push else 'built'} {tag}")


@cluster.command(name="retire")
@click.option("--scheduler", required=True, help="The scheduler's address.")
@click.option("--worker", required=True, help="The worker's address (tcp://IP:PORT).")
@click.option("--timeout", type=float, default=3600.0, help="Seconds to wait for its job.")
def retire_cmd(scheduler: str, worker: str, timeout: float) -> None:
    """Retire one worker gracefully: no new job, wait for its job, then close it.

    The worker pods' preStop hook runs this.
    """
    drain(scheduler, [worker], timeout)
    click.echo(f"retired {worker}")


# The group's help names its commands, every one registered above.
cluster.help = (cluster.help or "").replace("{commands}", ", ".join(cluster.commands))
