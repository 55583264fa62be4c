"""Cluster settings Kubernetes would refuse are refused first, in one line (exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _render(**env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGE_", "COORDINATOR_"))}
    base.update({"PYTHONPATH": str(ROOT / "src"), "STAGE": "dev", "IMAGE_REPO": "me/prover"})
    base.update(env)
    return subprocess.run(
        [sys.executable, "-m", "fleetrun", "cluster", "render"],
        env=base, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"COORDINATOR_EP": "my.host.example"}, "is not an IP address"),
        ({"COORDINATOR_EP": "10.0.0.9:50055"}, "is not an IP address"),
        ({"COORDINATOR_EP": "10.0.0.9", "IMAGE_REPO": "me/prover:latest"}, "no tag"),
        ({"COORDINATOR_EP": "10.0.0.9", "IMAGE_REPO": 'x"y'}, "not an image repository"),
        ({"COORDINATOR_EP": "10.0.0.9", "IMAGE_AUTH_USER": "bob"}, "needs both"),
        ({"COORDINATOR_EP": "10.0.0.9", "IMAGE_AUTH_PASSWORD": "pw-1234"}, "needs both"),
    ],
)
def test_invalid_settings_are_refused(env: dict[str, str], says: str) -> None:
    done = _render(**env)
    assert done.returncode == 2
    assert says in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "pw-1234" not in done.stderr


def test_valid_settings_render() -> None:
    done = _render(COORDINATOR_EP="10.0.0.9")
    assert done.returncode == 0, done.stderr
    assert "ip: 10.0.0.9" in done.stdout
