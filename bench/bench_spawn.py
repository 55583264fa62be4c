"""Spawn throughput: N ``true`` commands at -j 8, each with its own log file.

Compared in the same run (same machine, same moment):

- fleetrun: ``run_graph`` + ``LocalExecutor``; every attempt's stdout+stderr go
  to its own log file under ``run_dir/logs/t/<target>.1.log`` (journal off);
- ``xargs -P 8``: ``sh -c 'true > logs/N.log'`` per task. One process per
  task (``true`` is a builtin of sh), one log file opened per task: the same
  work as fleetrun, which execs ``/usr/bin/true`` directly with its log opened
  by the spawn;
- GNU parallel ``-j 8 'true > logs/{}.log'`` (installed with apt if missing;
  skipped with a message otherwise). It is slow, so it runs ``--parallel-n``
  tasks and its rate is compared;
- a bare asyncio loop: ``asyncio.create_subprocess_exec('true', stdout=log)``
  under a semaphore of 8.

Targets: fleetrun >= 1.0x xargs, >= 5x GNU parallel. Each contender runs
``--rounds`` times, interleaved; the best rate of each is compared.

    python bench/bench_spawn.py [--n 5000] [-j 8] [--rounds 3] [--parallel-n 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import machine, row, timed, verdict

from fleetrun.engine import RunOptions, run_graph
from fleetrun.engine.testing import graph, task
from fleetrun.executors import LocalExecutor

SPAWN_THREADS: int | None = None


def run_fleetrun(work: Path, n: int, j: int) -> float:
    g = graph([task("t", "true", targets=[f"n{i}" for i in range(n)])], base_dir=work)
    run_dir = work / "fleetrun"
    shutil.rmtree(run_dir, ignore_errors=True)
    opts = RunOptions(run_id="bench", run_dir=run_dir, parallelism=j)
    secs, result = timed(
        lambda: asyncio.run(run_graph(g, opts, LocalExecutor(spawn_threads=SPAWN_THREADS)))
    )
    assert result.counts == {"succeeded": n}, result.counts
    logs = sum(1 for _ in (run_dir / "logs" / "t").iterdir())
    assert logs == n, logs
    return n / secs


def _fresh(work: Path, name: str) -> Path:
    d = work / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    return d


def run_xargs(work: Path, n: int, j: int) -> float:
    d = _fresh(work, "xargs")
    seq = "\n".join(map(str, range(n))) + "\n"
    cmd = ["xargs", "-P", str(j), "-I{}", "sh", "-c", f"true > {d}/{{}}.log"]
    secs, _ = timed(lambda: subprocess.run(cmd, input=seq.encode(), check=True))
    assert len(os.listdir(d)) == n
    return n / secs


def run_parallel(work: Path, n: int, j: int) -> float | None:
    if shutil.which("parallel") is None:
        subprocess.run(["apt-get", "install", "-y", "parallel"], capture_output=True)
    if shutil.which("parallel") is None:
        print("  GNU parallel: not installed and not installable here; skipped")
        return None
    d = _fresh(work, "parallel")
    seq = "\n".join(map(str, range(n))) + "\n"
    cmd = ["parallel", "--will-cite", "-j", str(j), f"true > {d}/{{}}.log"]
    secs, _ = timed(lambda: subprocess.run(cmd, input=seq.encode(), check=True))
    assert len(os.listdir(d)) == n
    return n / secs


def run_asyncio(work: Path, n: int, j: int) -> float:
    d = _fresh(work, "asyncio")

    async def main() -> None:
        sem = asyncio.Semaphore(j)

        async def one(i: int) -> None:
            async with sem:
                fd = os.open(f"{d}/{i}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    p = await asyncio.create_subprocess_exec("true", stdout=fd, stderr=fd)
                finally:
                    os.close(fd)
                await p.wait()

        async with asyncio.TaskGroup() as tg:
            for i in range(n):
                tg.create_task(one(i))

    secs, _ = timed(lambda: asyncio.run(main()))
    return n / secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("-j", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--parallel-n", type=int, default=1000)
    ap.add_argument("--spawn-threads", type=int, default=None, help="LocalExecutor(spawn_threads=)")
    args = ap.parse_args()
    global SPAWN_THREADS
    SPAWN_THREADS = args.spawn_threads
    work = Path(tempfile.mkdtemp(prefix="fleetrun-bench-spawn-"))
    os.chdir(work)  # the plan's base_dir: commands run here, so `true` is exec'd directly
    best: dict[str, float] = {}
    try:
        for _ in range(args.rounds):
            for name, fn, n in (
                ("fleetrun", run_fleetrun, args.n),
                ("xargs -P", run_xargs, args.n),
                ("asyncio subprocess", run_asyncio, args.n),
                ("GNU parallel", run_parallel, args.parallel_n),
            ):
                rate = fn(work, n, args.j)
                if rate is not None:
                    best[name] = max(best.get(name, 0.0), rate)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"spawn throughput, -j {args.j}, best of {args.rounds} ({machine()})")
    for name, rate in best.items():
        row(name, f"{rate:,.0f} tasks/s")
    fx = best["fleetrun"] / best["xargs -P"]
    row("fleetrun / xargs", f"{fx:.2f}x", f"target >= 1.0  {verdict(fx >= 1.0)}")
    row("fleetrun / asyncio subprocess", f"{best['fleetrun'] / best['asyncio subprocess']:.2f}x")
    if "GNU parallel" in best:
        fp = best["fleetrun"] / best["GNU parallel"]
        row("fleetrun / GNU parallel", f"{fp:.2f}x", f"target >= 5.0  {verdict(fp >= 5.0)}")


if __name__ == "__main__":
    main()
