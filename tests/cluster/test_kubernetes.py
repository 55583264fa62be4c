"""Manifests validated strictly against the Kubernetes schemas; kubectl and docker steps.

No API server or Docker engine runs here: ``kubectl`` and ``docker`` are a
recording stand-in on PATH (``_standin`` below — the one fake in these tests)
that appends its argv and stdin to a file and prints nothing, or what the test
asks ``get`` to print.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from fleetrun.cli._main import cli
from fleetrun.cluster import ClusterConfigError, load_config, render

K8S_VERSION = "1.33.0"
"""The pinned Kubernetes version whose official schemas the manifests must pass (strict)."""

REFERENCE_ENV = {
    "IMAGE_REPO": "fluidex/prover-client",
    "IMAGE_HOST": "registry.example.com:5000",
    "IMAGE_HOST_ALIAS": "10.1.0.2:5000",
    "IMAGE_AUTH_USER": "deployer",
    "IMAGE_AUTH_PASSWORD": "s3cr3t-Regpass",
    "COORDINATOR_EP": "10.0.0.5",
    "CLUSTER_NS": "prover",
    "STAGE": "085d6a6",
}

_STANDIN = """#!{python}
# Recording stand-in for {name}: appends argv and stdin to $STANDIN_RECORD.
import json, os, sys
data = sys.stdin.read() if not sys.stdin.isatty() else ""
with open(os.environ["STANDIN_RECORD"], "a") as f:
    f.write(json.dumps({{"argv": ["{name}", *sys.argv[1:]], "stdin": data}}) + "\\n")
if len(sys.argv) > 1 and sys.argv[1] == "get":
    sys.stdout.write(os.environ.get("STANDIN_GET", ""))
"""


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``kubectl`` and ``docker`` stand-ins first on PATH; returns the record file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("kubectl", "docker"):
        p = bin_dir / name
        p.write_text(_STANDIN.format(python=sys.executable, name=name))
        p.chmod(p.stat().st_mode | stat.S_IXUSR)
    record = tmp_path / "calls.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("STANDIN_RECORD", str(record))
    monkeypatch.chdir(tmp_path)
    for k in (*REFERENCE_ENV, "COORDINATOR_PORT", "CLIENT_REPLICAS"):
        monkeypatch.delenv(k, raising=False)
    return record


def _calls(record: Path) -> list[dict[str, Any]]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines()]


def _cli(args: list[str], env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, args, env=env, catch_exceptions=False)


def _by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in objects}


# --- manifests --------------------------------------------------------------------


def test_reference_manifests_pass_strict_validation_and_carry_the_scheduling() -> None:
    objects = render(load_config(None, REFERENCE_ENV))
    assert [o["kind"] for o in objects] == [
        "Namespace",
        "Secret",
        "ConfigMap",
        "Service",
        "Endpoints",
        "Deployment",
    ]
    for o in objects:
        kubernetes_validate.validate(o, K8S_VERSION, strict=True)
    k = _by_kind(objects)
    pod = k["Deployment"]["spec"]["template"]["spec"]
    term = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["nodeSelectorTerms"] == [
        {"matchExpressions": [{"key": "fluidexnode", "operator": "In", "values": ["computation"]}]}
    ]
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "computation"}]
    anti = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert anti == [
        {
            "labelSelector": {
                "matchLabels": {"app.kubernetes.io/instance": "fleetrun-worker-085d6a6"}
            },
            "topologyKey": "kubernetes.io/hostname",
        }
    ]
    assert pod["imagePullSecrets"] == [{"name": "fleetrun-worker-085d6a6-img-cred"}]
    secret = k["Secret"]
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    conf = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    assert (
        conf["auths"]["10.1.0.2:5000"]["auth"]
        == base64.b64encode(b"deployer:s3cr3t-Regpass").decode()
    )
    assert k["Endpoints"]["subsets"] == [
        {
            "addresses": [{"ip": "10.0.0.5"}],
            "ports": [{"name": "scheduler", "port": 50055, "protocol": "TCP"}],
        }
    ]
    assert "selector" not in k["Service"]["spec"]
    assert k["Service"]["metadata"]["name"] == k["Endpoints"]["metadata"]["name"]
    container = pod["containers"][0]
    assert container["image"] == "10.1.0.2:5000/fluidex/prover-client:client-085d6a6"
    assert container["command"] == ["dask", "worker"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DASK_SCHEDULER_ADDRESS"] == (
        "tcp://fleetrun-worker-085d6a6-coordinator.prover.svc:50055"
    )
    assert "MACHINE=1" in container["args"]
    assert container["resources"]["requests"] == {"cpu": "1", "memory": "2Gi"}
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    pre = " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
    assert "fleetrun cluster retire" in pre
    assert pod["terminationGracePeriodSeconds"] > 3600
    for o in objects[1:]:
        labels = o["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "fleetrun-worker-085d6a6"
        assert labels["fleetrun.io/stage"] == "085d6a6"
        assert labels["app.kubernetes.io/managed-by"] == "fleetrun"
        assert o["metadata"]["name"].startswith("fleetrun-worker-085d6a6")


def test_no_credentials_no_secret_default_namespace_and_configurable_toleration(
    tmp_path: Path,
) -> None:
    conf_file = tmp_path / "cluster.yaml"
    conf_file.write_text(
        yaml.safe_dump(
            {
                "replicas": 4,
                "toleration": {"key": "gpu", "value": "yes", "effect": "NoSchedule"},
                "node_selector": {"key": "pool", "value": "provers"},
                "requests": {"cpu": "8", "memory": "32Gi"},
                "limits": {"cpu": "8", "memory": "32Gi"},
            }
        )
    )
    env = {"IMAGE_REPO": "prover", "COORDINATOR_EP": "192.168.1.9", "STAGE": "dev"}
    objects = render(load_config(conf_file, env))
    assert [o["kind"] for o in objects] == ["ConfigMap", "Service", "Endpoints", "Deployment"]
    for o in objects:
        kubernetes_validate.validate(o, K8S_VERSION, strict=True)
    dep = objects[-1]
    pod = dep["spec"]["template"]["spec"]
    assert dep["spec"]["replicas"] == 4
    assert "imagePullSecrets" not in pod
    assert pod["tolerations"] == [
        {"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}
    ]
    expr = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert expr["nodeSelectorTerms"][0]["matchExpressions"][0]["key"] == "pool"
    assert pod["containers"][0]["resources"]["requests"] == {"cpu": "8", "memory": "32Gi"}
    assert pod["containers"][0]["image"] == "prover:client-dev"


def test_two_stages_share_a_namespace_without_a_shared_name() -> None:
    a = render(load_config(None, {**REFERENCE_ENV, "STAGE": "aaa1111"}))
    b = render(load_config(None, {**REFERENCE_ENV, "STAGE": "bbb2222"}))
    names_a = {(o["kind"], o["metadata"]["name"]) for o in a if o["kind"] != "Namespace"}
    names_b = {(o["kind"], o["metadata"]["name"]) for o in b if o["kind"] != "Namespace"}
    assert not names_a & names_b


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "IMAGE_REPO is not set"),
        ({"IMAGE_REPO": "r", "STAGE": "s", "COORDINATOR_PORT": "x"}, "port 'x'"),
        ({"IMAGE_REPO": "r", "STAGE": "s", "CLUSTER_NS": "Bad_NS"}, "namespace 'Bad_NS'"),
    ],
)
def test_bad_configuration_is_one_clear_line(env: dict[str, str], message: str) -> None:
    with pytest.raises(ClusterConfigError, match=message) as e:
        load_config(None, env)
    assert "\n" not in str(e.value)
    assert e.value.exit_code == 2


@pytest.mark.parametrize("kind", ["device", "fifo", "directory", "missing"])
def test_a_configuration_file_that_is_no_regular_file_is_one_clear_line(
    tmp_path: Path, kind: str
) -> None:
    """cluster.yaml is read as a plan's files are: a device (/dev/zero would
    fill memory), a FIFO nobody writes to (would wait forever) or a directory
    is refused at once, in one line, exit 2."""
    path = {
        "device": Path("/dev/zero"),
        "directory": tmp_path,
        "missing": tmp_path / "no.yaml",
    }.get(kind, tmp_path / "fifo")
    if kind == "fifo":
        os.mkfifo(path)
    with pytest.raises(ClusterConfigError, match=f"cannot read {path}: ") as e:
        load_config(path, REFERENCE_ENV)
    assert "\n" not in str(e.value)
    assert e.value.exit_code == 2


def test_render_without_coordinator_exits_2_with_one_line(standin: Path) -> None:
    r = _cli(["cluster", "render"], env={"IMAGE_REPO": "r", "STAGE": "s"})
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == [
        "error: COORDINATOR_EP is not set: give the IP address every node can reach the "
        "coordinator at (environment, or coordinator.endpoint in cluster.yaml)"
    ]


def test_render_prints_every_manifest(standin: Path) -> None:
    r = _cli(["cluster", "render"], env=REFERENCE_ENV)
    assert r.exit_code == 0, r.output
    docs = [d for d in yaml.safe_load_all(r.output) if d]
    assert [d["kind"] for d in docs][-1] == "Deployment"
    assert _calls(standin) == []


# --- kubectl -------------------------------------------------------------------------


def test_up_applies_on_stdin_and_annotates_the_namespace(standin: Path) -> None:
    r = _cli(["cluster", "up"], env=REFERENCE_ENV)
    assert r.exit_code == 0, r.output
    calls = _calls(standin)
    assert calls[0]["argv"] == ["kubectl", "apply", "-f", "-"]
    applied = [d for d in yaml.safe_load_all(calls[0]["stdin"]) if d]
    assert applied[0]["kind"] == "Namespace"
    assert calls[1]["argv"] == [
        "kubectl",
        "annotate",
        "--overwrite",
        "namespace",
        "prover",
        "fleetrun.io/cluster-fleetrun-worker-085d6a6=up",
    ]
    assert all("s3cr3t-Regpass" not in " ".join(c["argv"]) for c in calls)
    assert "s3cr3t-Regpass" not in r.output
    # Nothing rendered (credentials included) was written to a file.
    assert {p.name for p in Path.cwd().iterdir()} == {"bin", "calls.jsonl"}


def test_down_drains_deletes_every_kind_by_label_and_verifies(standin: Path) -> None:
    r = _cli(["cluster", "down", "--kubernetes"], env=REFERENCE_ENV)
    assert r.exit_code == 0, r.output
    argvs = [c["argv"][1:] for c in _calls(standin)]
    sel = "app.kubernetes.io/instance=fleetrun-worker-085d6a6,fleetrun.io/stage=085d6a6"
    assert argvs == [
        ["get", "deployment/fleetrun-worker-085d6a6", "-n", "prover", "-o", "name",
         "--ignore-not-found"],
        ["wait", "--for=delete", "pod", "-l", sel, "-n", "prover", "--timeout=3660s"],
        ["delete", "deployment,service,endpoints,configmap,secret", "-l", sel, "-n", "prover",
         "--ignore-not-found", "--wait=true"],
        ["annotate", "namespace", "prover", "fleetrun.io/cluster-fleetrun-worker-085d6a6-",
         "--overwrite"],
        ["get", "deployment,service,endpoints,configmap,secret", "-l", sel, "-n", "prover", "-o",
         "name"],
        ["get", "namespace", "prover", "-o",
         "jsonpath={.metadata.annotations.fleetrun\\.io/cluster-fleetrun-worker-085d6a6}",
         "--ignore-not-found"],
    ]  # fmt: skip
    assert "nothing of it is left" in r.output


def test_down_reports_what_is_left(standin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STANDIN_GET", "configmap/fleetrun-worker-085d6a6-conf\n")
    r = _cli(["cluster", "down", "--kubernetes"], env=REFERENCE_ENV)
    assert r.exit_code == 2
    assert "configmap/fleetrun-worker-085d6a6-conf" in r.output
    # With a Deployment found, the workers are scaled to zero first (their preStop drains).
    assert ["kubectl", "scale", "deployment/fleetrun-worker-085d6a6", "--replicas=0", "-n",
            "prover"] in [c["argv"] for c in _calls(standin)]  # fmt: skip


def test_endpoint_rerenders_from_configuration_applies_and_rolls(standin: Path) -> None:
    r = _cli(["cluster", "endpoint", "10.9.9.9:6000"], env=REFERENCE_ENV)
    assert r.exit_code == 0, r.output
    calls = _calls(standin)
    applied = {d["kind"]: d for d in yaml.safe_load_all(calls[0]["stdin"]) if d}
    assert applied["Endpoints"]["subsets"][0]["addresses"] == [{"ip": "10.9.9.9"}]
    assert applied["Endpoints"]["subsets"][0]["ports"][0]["port"] == 6000
    assert applied["Service"]["spec"]["ports"][0]["port"] == 6000
    assert [c["argv"][1:3] for c in calls[1:]] == [["rollout", "restart"], ["rollout", "status"]]
    bad = _cli(["cluster", "endpoint", "10.9.9.9:http"], env=REFERENCE_ENV)
    assert bad.exit_code == 2


def test_scale_on_kubernetes(standin: Path) -> None:
    r = _cli(["cluster", "scale", "5", "--kubernetes"], env=REFERENCE_ENV)
    assert r.exit_code == 0, r.output
    assert _calls(standin)[0]["argv"] == [
        "kubectl", "scale", "deployment/fleetrun-worker-085d6a6", "--replicas=5", "-n", "prover",
    ]  # fmt: skip


# --- docker ---------------------------------------------------------------------------


def test_build_pushes_the_commit_tag_and_the_password_only_on_stdin(
    standin: Path, tmp_path: Path
) -> None:
    r = _cli(["cluster", "build", "--context-dir", str(tmp_path)], env=REFERENCE_ENV)
    assert r.exit_code == 0, r.output
    calls = _calls(standin)
    tag = "registry.example.com:5000/fluidex/prover-client:client-085d6a6"
    build, login, push = (c["argv"] for c in calls)
    assert build[:5] == ["docker", "build", "--pull", "-t", tag]
    assert login[0:2] == ["docker", "--config"]
    assert login[3:] == [
        "login", "registry.example.com:5000", "--username", "deployer", "--password-stdin",
    ]  # fmt: skip
    assert calls[1]["stdin"] == "s3cr3t-Regpass"
    assert push == ["docker", "--config", login[2], "push", tag]
    for c in calls:
        assert "s3cr3t-Regpass" not in " ".join(c["argv"])
    assert "s3cr3t-Regpass" not in r.output
    # The temporary Docker config (which login fills) is gone after the push.
    assert not Path(login[2]).exists()
    assert f"pushed {tag}" in r.output


def test_build_failure_names_the_command_without_the_password(
    standin: Path, tmp_path: Path
) -> None:
    docker = Path(os.environ["PATH"].split(os.pathsep)[0]) / "docker"
    docker.write_text(
        f"#!{sys.executable}\nimport sys\nsys.stdin.read()\n"
        "sys.stderr.write('denied for s3cr3t-Regpass\\n'); sys.exit(1 if 'login' in sys.argv "
        "else 0)\n"
    )
    r = _cli(["cluster", "build", "--context-dir", str(tmp_path)], env=REFERENCE_ENV)
    assert r.exit_code == 1
    assert "failed with exit 1: denied for ***" in r.output
    assert "s3cr3t-Regpass" not in r.output


def test_a_kubectl_failure_is_one_line_without_the_password(standin: Path) -> None:
    kubectl = Path(os.environ["PATH"].split(os.pathsep)[0]) / "kubectl"
    kubectl.write_text(
        f"#!{sys.executable}\nimport sys\nsys.stdin.read()\n"
        "sys.stderr.write('error: Secret data s3cr3t-Regpass rejected\\n'); sys.exit(1)\n"
    )
    r = _cli(["cluster", "up"], env=REFERENCE_ENV)
    assert r.exit_code == 1
    assert r.output.strip().splitlines() == [
        "error: kubectl apply -f - failed with exit 1: error: Secret data *** rejected"
    ]
