"""The shipped examples, applied for real (copied to a temporary directory first).

These run ``fleetrun`` as a user would, in a child process, with the chain138
stand-ins sped up by ``CHAIN138_SCALE`` and counted through ``CHAIN138_MARKER_DIR``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def fleetrun(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("CHAIN138_", "FAIL_"))}
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "fleetrun", *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )


def counts(markers: Path) -> dict[str, int]:
    """Executions per ``task@region`` (or unfanned ``task``)."""
    return {p.name: len(p.read_text().splitlines()) for p in markers.iterdir()}


@pytest.fixture
def chain138(tmp_path: Path) -> Path:
    work = tmp_path / "chain138"
    shutil.copytree(EXAMPLES / "chain138", work, ignore=shutil.ignore_patterns(".fleetrun"))
    return work


def validators(work: Path) -> list[str]:
    import yaml

    fleet = yaml.safe_load((work / "fleet.yaml").read_text())
    return [name for name, attrs in fleet.items() if attrs["role"] != "admin"]


def test_quickstart_runs(tmp_path: Path) -> None:
    shutil.copy(EXAMPLES / "quickstart.yaml", tmp_path)
    proc = fleetrun("apply", "--plain", "quickstart.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"\b11 succeeded\b", proc.stdout)
    assert re.search(r"retrying\s+fetch-config", proc.stdout)
    logs = tmp_path / ".fleetrun" / "runs"
    (run,) = list(logs.iterdir())
    deploy = (run / "logs" / "deploy" / "host-c.1.log").read_text()
    assert "deploying hello 1.2.3 to host-c" in deploy  # the build's output, passed on


@pytest.mark.slow
def test_chain138_partial_failure_then_retry(chain138: Path) -> None:
    markers = chain138.parent / "markers"
    markers.mkdir()
    env = {
        "CHAIN138_SCALE": "0.05",
        "CHAIN138_MARKER_DIR": str(markers),
        "FAIL_REGIONS": "ukwest,japaneast",
    }
    proc = fleetrun("apply", "--plain", "plan.yaml", cwd=chain138, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    for summary in ("98 succeeded", "2 failed", "6 skipped"):
        assert re.search(rf"\b{summary}\b", proc.stdout)
    first = counts(markers)
    regions = validators(chain138)
    ok = [r for r in regions if r not in ("ukwest", "japaneast")]
    for task in ("infra", "k8s", "besu", "verify-region"):
        assert all(first[f"{task}@{r}"] == 1 for r in ok)
    for bad in ("ukwest", "japaneast"):
        assert first[f"infra@{bad}"] == 1
        assert not any(k.endswith(f"@{bad}") and not k.startswith("infra@") for k in first)
    contracts = ["multicall", "weth9", "weth10", "ccip-router", "oracle", "multisig"]
    assert all(first[c] == 1 for c in [*contracts, "verify-contracts"])
    assert first["monitoring@westeurope"] == 1
    assert not any(k.endswith("@westeurope") and k != "monitoring@westeurope" for k in first)

    # The regions come back: retry re-runs exactly what failed or was skipped.
    env["FAIL_REGIONS"] = ""
    proc = fleetrun("retry", "--plain", cwd=chain138, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    second = counts(markers)
    rerun = {k: second[k] - first.get(k, 0) for k in second if second[k] != first.get(k, 0)}
    assert rerun == {
        f"{task}@{r}": 1
        for r in ("ukwest", "japaneast")
        for task in ("infra", "k8s", "besu", "verify-region")
    }
