"""The compute cluster: fleetrun's executor against bare Dask, and recovery from a lost worker.

1. Throughput: ``--n`` jobs of ``true`` through a local cluster of 2 workers
   (one job per worker at a time: ``MACHINE=1``). fleetrun's ``ClusterExecutor``
   (a log file per job, output streaming, outputs file, process-group
   handling) against a bare ``Client.submit(subprocess.run, ...)`` loop with the
   same resources on the same cluster. Target: fleetrun <= 1.5x bare Dask.
2. Worker loss: 20 jobs of 1 s on 2 workers, one worker SIGKILLed at 5 s; a
   lost attempt is run again (what the engine's retry does). Target: makespan
   <= ideal + one job, where ideal = kill time + (jobs not done by then) on 1
   worker (15 s for jobs of exactly 1 s; the job's real duration on this
   machine, spawning and dispatch included, is measured by the same batch
   without a kill and used for both).

   Both run in every round, who goes first alternating; the ratio is the median
   of the rounds' ratios. For information, each round also times bare Dask
   submitting all jobs as one graph (``Client.map``), which fleetrun does with
   the jobs that become ready in the same turn of its event loop.

    python bench/bench_cluster.py [--n 2000] [--rounds 5] [--loss-jobs 20] [--kill-at 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import fresh_dir, load, machine, median, verdict

from fleetrun.cluster import MACHINE, LocalCluster
from fleetrun.executors import ClusterExecutor
from fleetrun.executors._contract import Attempt, AttemptResult
from fleetrun.redact import Redactor


def _attempt(d: Path, i: int, command: str, n: int = 1) -> Attempt:
    return Attempt(
        run_id="bench",
        key=f"job@{i}",
        task="job",
        target=str(i),
        n=n,
        command=command,
        display=command,
        env={},
        env_extra={"FLEETRUN_ATTEMPT": str(n)},
        cwd=None,
        log_path=str(d / f"{i}.{n}.log"),
        output_path=str(d / f"{i}.{n}.out"),
        timeout=None,
        grace=5.0,
        redactor=Redactor(),
        on_started=lambda h: None,
    )


async def _fleetrun(address: str, d: Path, n: int, tag: str) -> float:
    ex = ClusterExecutor(address)
    await ex.client()
    try:
        t = time.perf_counter()
        results = await asyncio.gather(*(ex.run(_attempt(d, i, "true", n=1)) for i in range(n)))
        took = time.perf_counter() - t
    finally:
        await ex.aclose()
    assert all(r.ok for r in results), tag
    return took


def _bare(address: str, n: int, tag: str) -> float:
    from distributed import Client

    with Client(address, set_as_default=False) as client:
        t = time.perf_counter()
        futures = [
            client.submit(
                subprocess.run,
                ["/bin/sh", "-c", "true"],
                key=f"bare-{tag}-{i}",
                pure=False,
                resources={MACHINE: 1},
            )
            for i in range(n)
        ]
        done = client.gather(futures)
        took = time.perf_counter() - t
    assert all(r.returncode == 0 for r in done)
    return took


def _bare_map(address: str, n: int, tag: str) -> float:
    """Information, no target: bare Dask submitting every job in one graph, as
    fleetrun does with the jobs of one turn of its event loop."""
    from distributed import Client

    with Client(address, set_as_default=False) as client:
        t = time.perf_counter()
        futures = client.map(
            subprocess.run,
            [["/bin/sh", "-c", "true"]] * n,
            key=[f"map-{tag}-{i}" for i in range(n)],
            pure=False,
            resources={MACHINE: 1},
        )
        done = client.gather(futures)
        took = time.perf_counter() - t
    assert all(r.returncode == 0 for r in done)
    return took


def throughput(root: Path, n: int, rounds: int) -> None:
    c = LocalCluster(root / "cluster-throughput")
    c.start(2)
    ratios: list[float] = []
    fleet: list[float] = []
    bare: list[float] = []
    bare_map: list[float] = []
    try:
        _bare(c.address, 50, "warm")
        _bare_map(c.address, 50, "warm")
        asyncio.run(_fleetrun(c.address, fresh_dir(root, "warm"), 50, "warm"))
        for r in range(rounds):
            # Both in every round, who goes first alternating: the load drifts between runs.
            if r % 2:
                b = _bare(c.address, n, f"b{r}")
            f = asyncio.run(_fleetrun(c.address, fresh_dir(root, "fleetrun"), n, f"f{r}"))
            if not r % 2:
                b = _bare(c.address, n, f"b{r}")
            m = _bare_map(c.address, n, f"m{r}")
            first = "bare" if r % 2 else "fleetrun"
            print(
                f"  round {r + 1} ({first} first): fleetrun {f:6.2f} s   bare Dask {b:6.2f} s   "
                f"ratio {f / b:.2f}x   (bare Client.map {m:5.2f} s)   load {load()}"
            )
            fleet.append(f)
            bare.append(b)
            bare_map.append(m)
            ratios.append(f / b)
    finally:
        c.stop()
    ratio = median(ratios)
    print(
        f"throughput: {n} jobs of `true` on 2 workers, median of {rounds} rounds: "
        f"fleetrun {median(fleet):.2f} s ({n / median(fleet):.0f} jobs/s), "
        f"bare Client.submit {median(bare):.2f} s ({n / median(bare):.0f} jobs/s); "
        f"ratio {ratio:.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f}x; target <= 1.5x) "
        f"{verdict(ratio <= 1.5)}"
    )
    print(
        f"  (information: bare Client.map, all jobs in one graph: {median(bare_map):.2f} s; "
        f"fleetrun / map {median([f / m for f, m in zip(fleet, bare_map, strict=True)]):.2f}x)"
    )


async def _loss_run(
    c: LocalCluster, d: Path, jobs: int, kill_at: float | None
) -> tuple[float, int]:
    ex = ClusterExecutor(c.address)
    await ex.client()
    lost = 0

    async def one(i: int) -> AttemptResult:
        nonlocal lost
        for n in range(1, 4):
            r = await ex.run(_attempt(d, i, "sleep 1", n=n))
            if r.error_kind != "lost":
                return r
            lost += 1
        return r

    async def killer() -> None:
        if kill_at is not None:
            await asyncio.sleep(kill_at)
            os.kill(c.workers[0].pid, signal.SIGKILL)

    try:
        t = time.perf_counter()
        k = asyncio.ensure_future(killer())
        results = await asyncio.gather(*(one(i) for i in range(jobs)))
        took = time.perf_counter() - t
        k.cancel()
    finally:
        await ex.aclose()
    assert all(r.ok for r in results)
    return took, lost


def worker_loss(root: Path, jobs: int, kill_at: float) -> None:
    c = LocalCluster(root / "cluster-loss")
    c.start(2)
    try:
        # Calibration: the same jobs without a kill give one job's real duration here
        # (1 s plus spawning and dispatch on this machine).
        base, _ = asyncio.run(_loss_run(c, fresh_dir(root, "base"), jobs, None))
        took, lost = asyncio.run(_loss_run(c, fresh_dir(root, "loss"), jobs, kill_at))
    finally:
        c.stop()
    job = base / (jobs / 2)
    nominal = kill_at + max(jobs - 2 * kill_at, 0)  # 1 s jobs, no overhead
    ideal = kill_at + max(jobs - 2 * kill_at / job, 0) * job
    bound = ideal + job
    print(
        f"worker loss: {jobs} jobs of 1 s on 2 workers, one killed at {kill_at:g} s: "
        f"makespan {took:.2f} s; no kill {base:.2f} s, so one job takes {job:.3f} s here; "
        f"ideal {ideal:.2f} s (nominal {nominal:.2f} s), bound ideal + one job {bound:.2f} s; "
        f"attempts lost {lost} {verdict(took <= bound)}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--loss-jobs", type=int, default=20)
    ap.add_argument("--kill-at", type=float, default=5.0)
    ap.add_argument("--dir", default=None, help="Where log files go (default: a temp dir).")
    args = ap.parse_args()
    print(f"bench_cluster: {machine()}")
    # Workers run as separate processes and import fleetrun the same way.
    src = str(Path(__file__).resolve().parents[1] / "src")
    os.environ["PYTHONPATH"] = os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])
    with tempfile.TemporaryDirectory(prefix="bench-cluster-", dir=args.dir) as tmp:
        root = Path(tmp)
        throughput(root, args.n, args.rounds)
        worker_loss(root, args.loss_jobs, args.kill_at)


if __name__ == "__main__":
    main()
