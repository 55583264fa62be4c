"""The cluster on Kubernetes through the user's ``kubectl`` (context and credentials are theirs).

Manifests go to ``kubectl apply -f -`` on stdin: nothing rendered, and so no
credential, is ever written to a file. ``down`` drains (scales the workers to
zero: each pod's preStop hook lets its job finish), deletes every object of
the stage by label, removes the namespace annotation, then checks that
``kubectl get`` finds none of them any more.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence

from fleetrun.cluster._config import ClusterConfig
from fleetrun.cluster._manifests import KINDS, names, render, selector, stage_annotation, to_yaml
from fleetrun.cluster.errors import ClusterCommandError, ClusterConfigError
from fleetrun.redact import Redactor


class Kubectl:
    """Runs ``kubectl`` (found on PATH) and raises ``ClusterCommandError`` on failure."""

    def __init__(
        self, binary: str = "kubectl", context: str | None = None, secrets: Sequence[str] = ()
    ) -> None:
        path = shutil.which(binary)
        if path is None:
            raise ClusterConfigError(f"{binary} is not on PATH: install kubectl to use Kubernetes")
        self.binary = path
        self.context = context
        # kubectl may echo what it was given on stdin (a Secret) in an error.
        self.redactor = Redactor([*secrets])

    def __call__(self, *args: str, input: str | None = None, timeout: float = 600.0) -> str:
        argv = [self.binary, *(("--context", self.context) if self.context else ()), *args]
        try:
            done = subprocess.run(
                argv, input=input, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            raise ClusterCommandError(argv, -1, f"timed out after {timeout:g}s") from None
        if done.returncode != 0:
            raise ClusterCommandError(argv, done.returncode, self.redactor.redact(done.stderr))
        return done.stdout


def up(c: ClusterConfig, kubectl: Kubectl) -> list[str]:
    """Apply every object of the stage and annotate the namespace; return the objects."""
    objects = render(c)
    kubectl("apply", "-f", "-", input=to_yaml(objects))
    kubectl("annotate", "--overwrite", "namespace", c.namespace, f"{stage_annotation(c)}=up")
    return [f"{o['kind']}/{o['metadata']['name']}" for o in objects]


def endpoint(c: ClusterConfig, kubectl: Kubectl) -> None:
    """Re-render from configuration (with the new coordinator), apply, and roll the workers."""
    kubectl("apply", "-f", "-", input=to_yaml(render(c)))
    dep = f"deployment/{names(c)['deployment']}"
    kubectl("rollout", "restart", dep, "-n", c.namespace)
    kubectl("rollout", "status", dep, "-n", c.namespace, f"--timeout={c.drain_timeout + 300}s")


def scale(c: ClusterConfig, kubectl: Kubectl, replicas: int) -> None:
    """Set the number of workers; pods that go drain first (their preStop hook)."""
    dep = f"deployment/{names(c)['deployment']}"
    kubectl("scale", dep, f"--replicas={replicas}", "-n", c.namespace)
    kubectl("rollout", "status", dep, "-n", c.namespace, f"--timeout={c.drain_timeout + 300}s")


def down(c: ClusterConfig, kubectl: Kubectl, *, delete_namespace: bool = False) -> list[str]:
    """Drain, delete every object of the stage, verify; return what is left (empty: clean)."""
    ns = c.namespace
    sel = selector(c)
    dep = f"deployment/{names(c)['deployment']}"
    if kubectl("get", dep, "-n", ns, "-o", "name", "--ignore-not-found").strip():
        kubectl("scale", dep, "--replicas=0", "-n", ns)  # each pod's preStop drains it
    try:
        kubectl(
            "wait", "--for=delete", "pod", "-l", sel, "-n", ns, f"--timeout={c.drain_timeout + 60}s"
        )
    except ClusterCommandError as e:
        if "no matching resources" not in str(e):
            raise
    kubectl("delete", ",".join(KINDS), "-l", sel, "-n", ns, "--ignore-not-found", "--wait=true")
    kubectl("annotate", "namespace", ns, f"{stage_annotation(c)}-", "--overwrite")
    if delete_namespace and ns != "default":
        kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=true")
    return leftovers(c, kubectl)


def leftovers(c: ClusterConfig, kubectl: Kubectl) -> list[str]:
    """Objects of the stage that still exist, and the annotation if it is still set."""
    ns = c.namespace
    left = kubectl("get", ",".join(KINDS), "-l", selector(c), "-n", ns, "-o", "name").split()
    key = stage_annotation(c).replace(".", "\\.")
    annotation = kubectl(
        "get",
        "namespace",
        ns,
        "-o",
        f"jsonpath={{.metadata.annotations.{key}}}",
        "--ignore-not-found",
    ).strip()
    if annotation:
        left.append(f"namespace/{ns} annotation {stage_annotation(c)}")
    return left


def render_text(c: ClusterConfig) -> str:
    """The manifests as YAML (what ``fleetrun cluster render`` prints)."""
    return to_yaml(render(c))


def kinds() -> Sequence[str]:
    """The object kinds this package creates per stage (besides the namespace)."""
    return KINDS
