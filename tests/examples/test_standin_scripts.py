"""The chain138 stand-in scripts, run for real with dash the way the engine runs them."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "examples" / "chain138" / "scripts"
SH = shutil.which("dash") or "/bin/sh"


def run(
    script: str, *args: str, tmp: Path, env: dict[str, str] | None = None, task: str = "t"
) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    """Run one stand-in with the engine's FLEETRUN_* variables; return it and its outputs."""
    out = tmp / f"out-{script}-{'-'.join(args)}.txt"
    out.unlink(missing_ok=True)
    full = {
        "PATH": os.environ["PATH"],
        "FLEETRUN_TASK": task,
        "FLEETRUN_TARGET": args[0] if args else "",
        "FLEETRUN_ATTEMPT": "1",
        "FLEETRUN_RUN_ID": "run-1",
        "FLEETRUN_OUTPUT": str(out),
        "CHAIN138_SCALE": "0",
        **(env or {}),
    }
    proc = subprocess.run(
        [str(SCRIPTS / script), *args],
        env=full,
        cwd=SCRIPTS.parent,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    outputs = {}
    if out.exists():
        for line in out.read_text().splitlines():
            key, _, value = line.partition("=")
            outputs[key] = value
    return proc, outputs


def test_scripts_are_executable_posix_sh() -> None:
    scripts = sorted(p for p in SCRIPTS.glob("*.sh") if p.name != "lib.sh")
    assert len(scripts) == 8
    for path in scripts:
        assert path.stat().st_mode & stat.S_IXUSR, path
        assert path.read_text().startswith("#!/bin/sh\n"), path
        subprocess.run([SH, "-n", str(path)], check=True, timeout=10)
    subprocess.run([SH, "-n", str(SCRIPTS / "lib.sh")], check=True, timeout=10)


def test_contract_addresses_are_deterministic(tmp_path: Path) -> None:
    p1, o1 = run("deploy-contract.sh", "WETH9", "1", tmp=tmp_path)
    p2, o2 = run("deploy-contract.sh", "WETH9", "1", "--x", "y", tmp=tmp_path)
    p3, o3 = run("deploy-contract.sh", "WETH10", "1", tmp=tmp_path)
    assert p1.returncode == p2.returncode == p3.returncode == 0
    assert o1["address"] == o2["address"] != o3["address"]
    assert len(o1["address"]) == 42
    assert o1["address"].startswith("0x")
    int(o1["address"], 16)
    assert f"Deployed to: {o1['address']}" in p1.stdout


def test_region_steps_print_and_publish(tmp_path: Path) -> None:
    proc, out = run("terraform-apply.sh", "uksouth", "1", tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Apply complete!" in proc.stdout
    assert out["cluster"] == "aks-chain138-uksouth"
    proc, out = run("configure-kubernetes.sh", "uksouth", "aks-chain138-uksouth", "1", tmp=tmp_path)
    assert proc.returncode == 0
    assert out == {"context": "aks-chain138-uksouth"}
    proc, out = run("deploy-besu.sh", "uksouth", "3", "1", tmp=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.count("condition met (Ready)") == 3
    assert out["validators"] == "3"
    assert out["rpc_url"].startswith("http://besu-uksouth.")
    proc, _ = run("verify-region.sh", "uksouth", out["rpc_url"], "0xabc", "1", tmp=tmp_path)
    assert proc.returncode == 0
    assert "region uksouth: in sync" in proc.stdout
    proc, out = run("verify-contracts.sh", "1", "0x1", "0x2", "0x3", tmp=tmp_path)
    assert proc.stdout.count("source verified") == 3
    assert out == {"verified": "3"}


@pytest.mark.parametrize(
    ("script", "args"),
    [
        ("terraform-apply.sh", ("japaneast", "1")),
        ("configure-kubernetes.sh", ("japaneast", "c", "1")),
        ("deploy-besu.sh", ("japaneast", "2", "1")),
        ("verify-region.sh", ("japaneast", "u", "r", "1")),
        ("service.sh", ("status", "japaneast")),
    ],
)
def test_fail_regions(script: str, args: tuple[str, ...], tmp_path: Path) -> None:
    env = {"FAIL_REGIONS": "uksouth,japaneast"}
    if script == "service.sh":
        env["FLEETRUN_TARGET"] = "japaneast"
    proc, out = run(script, *args, tmp=tmp_path, env=env)
    assert proc.returncode == 1
    assert "japaneast" in proc.stderr
    assert "FAIL_REGIONS" in proc.stderr
    assert out == {}
    ok, _ = run(script, *args, tmp=tmp_path, env={"FAIL_REGIONS": "japanwest,uksouth2"})
    assert ok.returncode == 0


def test_throttled_first_attempt_exits_75_with_429(tmp_path: Path) -> None:
    env = {"THROTTLE_REGIONS": "eastus"}
    proc, _ = run("terraform-apply.sh", "eastus", "1", tmp=tmp_path, env=env)
    assert proc.returncode == 75
    assert "429" in proc.stderr
    proc, out = run(
        "terraform-apply.sh", "eastus", "1", tmp=tmp_path, env={**env, "FLEETRUN_ATTEMPT": "2"}
    )
    assert proc.returncode == 0
    assert "cluster" in out


def test_marker_dir_counts_executions(tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    env = {"CHAIN138_MARKER_DIR": str(markers)}
    for _ in range(3):
        run("deploy-besu.sh", "eastus", "2", "1", tmp=tmp_path, env=env, task="besu")
    run(
        "deploy-contract.sh",
        "Oracle",
        "1",
        tmp=tmp_path,
        env={**env, "FLEETRUN_TARGET": ""},
        task="oracle",
    )
    assert sorted(p.name for p in markers.iterdir()) == ["besu@eastus", "oracle"]
    assert len((markers / "besu@eastus").read_text().splitlines()) == 3
    assert (markers / "oracle").read_text() == "run-1 attempt=1\n"


def sleep_seconds(tmp: Path, key: str, env: dict[str, str]) -> float:
    """The duration scaled_sleep would sleep, read back through a fake ``sleep``."""
    fake = tmp / "bin"
    fake.mkdir(exist_ok=True)
    (fake / "sleep").write_text('#!/bin/sh\necho "$1"\n')
    (fake / "sleep").chmod(0o755)
    script = f'. "{SCRIPTS / "lib.sh"}"; scaled_sleep 2 "{key}"'
    proc = subprocess.run(
        [SH, "-c", script],
        env={"PATH": f"{fake}:{os.environ['PATH']}", **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    return float(proc.stdout.strip())


def test_scaled_and_heavy_tailed_durations(tmp_path: Path) -> None:
    assert sleep_seconds(tmp_path, "infra:eastus", {}) == 2.0
    assert sleep_seconds(tmp_path, "infra:eastus", {"CHAIN138_SCALE": "0.25"}) == 0.5
    seeded = {"CHAIN138_HEAVY_TAIL_SEED": "42"}
    regions = [f"region{i}" for i in range(40)]
    first = [sleep_seconds(tmp_path, f"infra:{r}", seeded) for r in regions]
    again = [sleep_seconds(tmp_path, f"infra:{r}", seeded) for r in regions]
    assert first == again  # deterministic per seed + task + region
    other = [
        sleep_seconds(tmp_path, f"infra:{r}", {"CHAIN138_HEAVY_TAIL_SEED": "7"}) for r in regions
    ]
    assert other != first
    # Heavy-tailed: a wide spread around the base of 2 s, capped at 12x.
    assert max(first) / min(first) > 8
    assert max(first) <= 24.0
    assert min(first) > 0


def test_empty_key_keeps_the_base_duration(tmp_path: Path) -> None:
    assert sleep_seconds(tmp_path, "", {"CHAIN138_HEAVY_TAIL_SEED": "42"}) == 2.0


# Base seconds and heavy-tail key prefix of each task, as plan.yaml passes them.
STEPS = {
    "infra": (2.0, "infra"),
    "monitoring": (2.0, "monitoring"),
    "k8s": (1.5, "k8s"),
    "besu": (2.0, "besu"),
    "verify-region": (0.5, "verify"),
}


@pytest.mark.parametrize("seed", ["1", "3", "4"])
def test_heavy_tail_makes_pipelining_pay(seed: str, tmp_path: Path) -> None:
    """With per-region heavy tails, the dag schedule beats phase barriers clearly.

    The durations the scripts would sleep are read back through a fake ``sleep``
    and fed to the same simulation ``fleetrun plan`` uses.
    """
    from fleetrun.plan import expand, load_plan, simulate

    graph = expand(load_plan(ROOT / "examples" / "chain138" / "plan.yaml"))
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sleep").write_text('#!/bin/sh\necho "$1"\n')
    (fake / "sleep").chmod(0o755)
    lines = [f'. "{SCRIPTS / "lib.sh"}"']
    for node in graph.nodes:
        base, prefix = STEPS.get(node.task, (0.5, ""))
        key = f"{prefix}:{node.target}" if prefix else ""
        lines.append(f'scaled_sleep {base} "{key}"')
    proc = subprocess.run(
        [SH, "-c", "\n".join(lines)],
        env={"PATH": f"{fake}:{os.environ['PATH']}", "CHAIN138_HEAVY_TAIL_SEED": seed},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    durations = [float(x) for x in proc.stdout.split()]
    assert len(durations) == len(graph.nodes)
    besu = [d for d, n in zip(durations, graph.nodes, strict=True) if n.task == "besu"]
    assert max(besu) / min(besu) > 5  # per-region durations vary a lot
    # Pipelining against barriers alone: the plan's rollout waves hold dag's
    # per-region pipelines back too (``fleetrun plan`` shows both estimates).
    phased = simulate(graph, "phased", None, durations, rollout=False)
    dag = simulate(graph, "dag", None, durations, rollout=False)
    assert dag <= 0.7 * phased
