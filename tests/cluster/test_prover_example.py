"""examples/prover: its jobs on a real local cluster.

The first test walks the plan by hand so that it can kill a worker mid-batch:
generate, prove (through ``ClusterExecutor``; the lost attempt is run again,
as ``retry`` does), verify and aggregate, each rendered from the plan with the
outputs of what it needs. The second is ``fleetrun apply`` as a user runs it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import subprocess
import uuid
from dataclasses import replace
from pathlib import Path

from fleetrun.cluster import LocalCluster, status
from fleetrun.executors import ClusterExecutor, parse_outputs
from fleetrun.executors._contract import AttemptResult
from fleetrun.plan import load_plan

from ._helpers import make_attempt, run

ROOT = Path(__file__).resolve().parents[2]


def _local(cmd: str, cwd: Path, tmp: Path) -> dict[str, str]:
    out = tmp / f"out-{abs(hash(cmd))}"
    env = {**os.environ, "FLEETRUN_OUTPUT": str(out), "PROVER_SCALE": "0.1"}
    subprocess.run(["/bin/sh", "-c", cmd], cwd=cwd, env=env, check=True, capture_output=True)
    return parse_outputs(out.read_text()) if out.exists() else {}


def test_prover_batch_on_the_cluster_survives_a_lost_worker(tmp_path: Path) -> None:
    example = tmp_path / "prover"
    shutil.copytree(ROOT / "examples" / "prover", example)
    plan = load_plan(example / "plan.yaml")
    assert plan.tasks["prove"].runs_on == "cluster"
    assert (plan.cluster.address, plan.cluster.workers) == (None, 2)
    gen = _local(plan.tasks["generate"].run.render(None, plan.vars), example, tmp_path)
    seed = gen["seed"]
    cluster = LocalCluster(tmp_path / "cluster")
    cluster.start(plan.cluster.workers)
    prove = plan.tasks["prove"]
    env = {**plan.env, "PROVER_SCALE": "0.4"}
    lost: list[str] = []

    async def one(ex: ClusterExecutor, name: str) -> AttemptResult:
        cmd = prove.run.render(plan.targets[name], plan.vars, {"generate": gen})
        for n in range(1, prove.retry.attempts + 1):
            a = make_attempt(tmp_path, cmd, key=f"prove@{name}", n=n, env=env)
            r = await ex.run(replace(a, cwd=str(example)))
            if r.error_kind != "lost":
                return r
            lost.append(name)
        return r

    async def batch() -> list[AttemptResult]:
        ex = ClusterExecutor(cluster.address)
        try:
            jobs = asyncio.gather(*(one(ex, name) for name in plan.targets))
            victim = cluster.workers[0]
            for _ in range(200):
                await asyncio.sleep(0.05)
                info = await asyncio.to_thread(status, cluster.address)
                if any(w["name"] == victim.name and w["job"] for w in info["workers"]):
                    break
            await asyncio.sleep(0.2)
            os.kill(victim.pid, signal.SIGKILL)
            return list(await jobs)
        finally:
            await ex.aclose()

    try:
        results = run(batch())
    finally:
        cluster.stop(grace=3)
    assert all(r.ok for r in results)
    assert len(lost) == 1, results  # the job running on the killed worker, run again once
    outputs = {"generate": gen}
    for name, r in zip(plan.targets, results, strict=True):
        assert r.outputs is not None
        assert r.outputs["block"] == f"{seed}-{plan.targets[name].attrs['number']}"
        outs = {**outputs, "prove": dict(r.outputs)}
        _local(
            plan.tasks["verify"].run.render(plan.targets[name], plan.vars, outs), example, tmp_path
        )
    agg = _local(plan.tasks["aggregate"].run.render(None, plan.vars, outputs), example, tmp_path)
    lines = sorted(
        f"{r.outputs['block']}:{r.outputs['nonce']}:{r.outputs['proof']}"  # type: ignore[index]
        for r in results
    )
    assert agg == {"proofs": "8", "root": hashlib.sha256("\n".join(lines).encode()).hexdigest()}


def test_fleetrun_apply_runs_the_prove_jobs_on_an_embedded_cluster(tmp_path: Path) -> None:
    import sqlite3
    import sys

    example = tmp_path / "prover"
    shutil.copytree(ROOT / "examples" / "prover", example)
    plan = example / "plan.yaml"
    # A mark in the run's environment tells its processes from those of tests
    # running beside this one.
    env = {k: v for k, v in os.environ.items() if k != "FLEETRUN_CLUSTER"}
    env["PROVER_SCALE"] = "0.1"  # the stand-in prover's CPU time, from the environment
    env["FLEETRUN_TEST_RUN"] = uuid.uuid4().hex
    mark = f"FLEETRUN_TEST_RUN={env['FLEETRUN_TEST_RUN']}"
    done = subprocess.run(
        [sys.executable, "-m", "fleetrun", "apply", str(plan), "--plain"],
        cwd=example,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "18 succeeded (of 18)" in done.stdout
    db = sqlite3.connect(example / ".fleetrun" / "state.db")
    rows = db.execute("select key, executor, host, job from attempts order by key").fetchall()
    prove = [r for r in rows if r[0].startswith("prove@")]
    assert len(prove) == 8
    assert {r[1] for r in prove} == {"cluster"}
    assert all(r[2].startswith("tcp://127.0.0.1:") and r[3].endswith("-1") for r in prove)
    assert {r[1] for r in rows if not r[0].startswith("prove@")} == {"local"}
    # The embedded cluster went with the run: no Dask process of the run is left.
    assert _dask_pids(mark) == set()


def _dask_pids(mark: str) -> set[str]:
    """Live Dask processes whose environment holds ``mark``."""
    out = subprocess.run(["pgrep", "-f", "distributed.cli.dask_"], capture_output=True, text=True)
    found = set()
    for pid in out.stdout.split():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        if mark.encode() in environ:
            found.add(pid)
    return found
