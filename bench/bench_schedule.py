"""Scheduling quality: makespan of random layered DAGs against the lower bound.

Each DAG has ``--n`` tasks (default 2,000) in layers; every task needs 1-3
random tasks of the previous layer and sleeps a lognormal duration, scaled so
that ``work / j`` is about ``--seconds``. Estimates equal the true durations,
so ``graph.rank`` is exact. The lower bound is ``max(critical path, work / j)``.

Executor: by default an in-process *sleep executor* (``asyncio.sleep`` of the
duration in the command ``sleep D``), which isolates the scheduler from the
machine's process-spawn cost; ``--real`` runs real ``sleep`` child processes
through ``LocalExecutor`` instead.

Also reports critical-path-first vs FIFO on a chain-heavy DAG (a few long
chains plus many short independent tasks): FIFO starts the short tasks first
and the chains end late.

Target: makespan <= 1.05 x lower bound at -j 16.

    python bench/bench_schedule.py [--n 2000] [-j 16] [--seconds 18] [--seed 1] [--real]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import machine, row, timed, verdict

from fleetrun.engine import RunOptions, run_graph
from fleetrun.engine.testing import graph, task
from fleetrun.executors import Attempt, AttemptResult, Handle, LocalExecutor
from fleetrun.plan import Graph, simulate


class SleepExecutor:
    """Runs ``sleep D`` as ``asyncio.sleep(D)``: no process, exact durations."""

    kind = "local"

    async def run(self, spec: Attempt) -> AttemptResult:
        spec.on_started(Handle("local", "", 0, 0))
        await asyncio.sleep(float(spec.command.split()[1]))
        return AttemptResult(exit_code=0, outputs={})

    def kill_now(self) -> None:
        pass


def layered(n: int, j: int, seconds: float, rng: random.Random) -> Graph:
    layers = max(2, int(n**0.5 / 2))
    sizes = [n // layers + (1 if i < n % layers else 0) for i in range(layers)]
    raw = [rng.lognormvariate(0.0, 0.8) for _ in range(n)]
    scale = seconds * j / sum(raw)
    tasks, prev, k = [], [], 0
    for size in sizes:
        cur = []
        for _ in range(size):
            name = f"n{k}"
            d = raw[k] * scale
            deps = rng.sample(prev, min(len(prev), rng.randint(1, 3))) if prev else []
            tasks.append(task(name, f"sleep {d:.4f}", needs=deps, estimate=round(d, 4)))
            cur.append(name)
            k += 1
        prev = cur
    return graph(tasks)


def chain_heavy(j: int, seconds: float, rng: random.Random) -> Graph:
    # 4 chains of 10 tasks of 0.04*seconds each; 600 short tasks filling the rest.
    tasks = []
    step = seconds * 0.04
    for c in range(4):
        for i in range(10):
            needs = [f"c{c}_{i - 1}"] if i else []
            tasks.append(task(f"c{c}_{i}", f"sleep {step:.4f}", needs=needs, estimate=step))
    short = seconds * j * 0.5 / 600
    shorts = [task(f"s{i}", f"sleep {short:.4f}", estimate=round(short, 4)) for i in range(600)]
    return graph(shorts + tasks)  # short tasks first in plan order: FIFO's worst case


def makespan(g: Graph, j: int, executor: object, priority: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        opts = RunOptions(run_id="b", run_dir=Path(tmp), parallelism=j, priority=priority)  # type: ignore[arg-type]
        secs, result = timed(lambda: asyncio.run(run_graph(g, opts, executor)))  # type: ignore[arg-type]
        assert result.status == "succeeded", result.counts
    return secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("-j", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=18.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--real", action="store_true", help="real sleep processes")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    executor = LocalExecutor() if args.real else SleepExecutor()
    kind = "real sleep processes" if args.real else "in-process sleep executor"
    print(f"scheduling quality, -j {args.j}, {kind} ({machine()})")
    g = layered(args.n, args.j, args.seconds, rng)
    lb = g.lower_bound(args.j)
    ms = makespan(g, args.j, executor, "critical_path")
    row(
        f"layered DAG, {len(g.nodes)} tasks",
        f"{ms:.2f} s",
        f"CP {g.critical_path_length:.2f} s, work/j {g.total_work / args.j:.2f} s",
    )
    ratio = ms / lb
    sim = simulate(g, "dag", args.j)
    row("list schedule on paper", f"{sim:.2f} s", f"{sim / lb:.3f} x LB (same rules, no overhead)")
    row("makespan / lower bound", f"{ratio:.3f}", f"target <= 1.05  {verdict(ratio <= 1.05)}")
    c = chain_heavy(args.j, args.seconds, rng)
    lb = c.lower_bound(args.j)
    cp = makespan(c, args.j, executor, "critical_path")
    fifo = makespan(c, args.j, executor, "fifo")
    row(f"chain-heavy DAG, {len(c.nodes)} tasks", f"LB {lb:.2f} s")
    row("critical-path-first", f"{cp:.2f} s", f"{cp / lb:.3f} x LB")
    row("FIFO", f"{fifo:.2f} s", f"{fifo / lb:.3f} x LB")
    row("FIFO / critical-path-first", f"{fifo / cp:.2f}x")


if __name__ == "__main__":
    main()
