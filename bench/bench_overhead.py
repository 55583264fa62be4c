"""Engine overhead: N zero-work tasks through ``run_graph`` with the in-process no-op executor.

Measures what the scheduler itself costs per task (readiness, slots, events,
attempt bookkeeping) with nothing spawned: the graph is N independent
instances of one task plus, with ``--chain``, a dependency from each instance
to the previous one's (so readiness propagation is exercised too). One
subscriber counts events. Targets: <= 20 us per task, <= 500 MB peak RSS
(measured for the whole process, graph included).

    python bench/bench_overhead.py [--n 100000] [-j 64]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import machine, peak_rss_mb, row, timed, verdict

from fleetrun.engine import Event, RunOptions, run_graph
from fleetrun.engine.testing import graph, task
from fleetrun.executors import NoopExecutor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("-j", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    half = args.n // 2
    names = [f"t{i}" for i in range(half)]
    secs_graph, g = timed(
        lambda: graph(
            [task("a", "true", targets=names), task("b", "true", targets=names, needs=["a"])]
        )
    )
    count = 0

    def sub(_: Event) -> None:
        nonlocal count
        count += 1

    best = float("inf")
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            opts = RunOptions(run_id="bench", run_dir=Path(tmp), parallelism=args.j)
            secs, result = timed(
                lambda o=opts: asyncio.run(run_graph(g, o, NoopExecutor(), [sub]))  # type: ignore[misc]
            )
            assert result.counts == {"succeeded": 2 * half}, result.counts
            best = min(best, secs)
    n = 2 * half
    us = best / n * 1e6
    rss = peak_rss_mb()
    print(f"engine overhead, {n:,} no-op tasks, -j {args.j}, best of {args.rounds} ({machine()})")
    row("graph build + expand", f"{secs_graph:.2f} s")
    row("run", f"{best:.2f} s")
    row("per task", f"{us:.1f} us", f"target <= 20  {verdict(us <= 20)}")
    row("events per task", f"{count / args.rounds / n:.1f}")
    row("peak RSS", f"{rss:.0f} MB", f"target <= 500  {verdict(rss <= 500)}")


if __name__ == "__main__":
    main()
