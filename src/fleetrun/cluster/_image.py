"""Building and pushing the worker image ``IMAGE_HOST/IMAGE_REPO:client-<STAGE>``.

The registry password goes to ``docker login --password-stdin`` and nowhere
else: not on a command line, not in a log, not in a file that outlives the
build (login uses a temporary ``--config`` directory, removed after the push,
so the user's own Docker credentials are neither used nor changed).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from fleetrun.cluster._config import ClusterConfig
from fleetrun.cluster.errors import ClusterCommandError, ClusterConfigError
from fleetrun.redact import Redactor

DOCKERFILE = """\
# The compute-cluster worker: Dask distributed plus fleetrun (for the drain hook).
FROM python:3.11-slim
COPY . /src
RUN pip install --no-cache-dir "/src[cluster]"
WORKDIR /work
CMD ["dask", "worker", "--help"]
"""


def build(
    c: ClusterConfig,
    context: Path,
    *,
    dockerfile: Path | None = None,
    push: bool = True,
    docker: str = "docker",
) -> str:
    """Build (and push) the image from ``context``; return its tag."""
    binary = shutil.which(docker)
    if binary is None:
        raise ClusterConfigError(f"{docker} is not on PATH: install Docker to build the image")
    redactor = Redactor([c.auth_password] if c.auth_password else [])
    tag = c.push_image
    with tempfile.TemporaryDirectory(prefix="fleetrun-build-") as tmp:
        os_tmp = Path(tmp)
        os_tmp.chmod(0o700)
        if dockerfile is None:
            dockerfile = context / "Dockerfile"
            if not dockerfile.exists():
                dockerfile = os_tmp / "Dockerfile"
                dockerfile.write_text(DOCKERFILE)
        _run([binary, "build", "--pull", "-t", tag, "-f", str(dockerfile), str(context)], redactor)
        if not push:
            return tag
        config: list[str] = []
        if c.has_credentials:
            conf_dir = os_tmp / "docker-config"
            conf_dir.mkdir(mode=0o700)
            config = ["--config", str(conf_dir)]
            registry = c.image_host or "docker.io"
            _run(
                [
                    binary,
                    *config,
                    "login",
                    registry,
                    "--username",
                    str(c.auth_user),
                    "--password-stdin",
                ],
                redactor,
                stdin=str(c.auth_password),
            )
        _run([binary, *config, "push", tag], redactor)
    return tag


def _run(argv: list[str], redactor: Redactor, stdin: str | None = None) -> None:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ClusterCommandError(argv, done.returncode, redactor.redact(done.stderr))
