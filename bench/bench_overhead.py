"""Engine overhead: N zero-work tasks through ``run_graph`` with the in-process no-op executor.

Measures what the scheduler itself costs per task (readiness, slots, events,
attempt bookkeeping) with nothing spawned: the graph is N independent
instances of one task plus, with ``--chain``, a dependency from each instance
to the previous one's (so readiness propagation is exercised too). One
subscriber counts events. The headline is the engine's own cost per task in
microseconds (the best round's run time over the tasks). Targets: <= 12 us
per task, <= 500 MB peak RSS (measured for the whole process, graph
included).

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

TARGET_US = 12.0
"""The engine's own cost per task, microseconds."""


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
    rounds: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            opts = RunOptions(run_id="bench", run_dir=Path(tmp), parallelism=args.j)
            secs, result = timed(
                lambda o=opts: asyncio.run(run_graph(g, o, NoopExecutor(), [sub]))  # type: ignore[misc]
            )
            assert result.counts == {"succeeded": 2 * half}, result.counts
            best = min(best, secs)
            rounds.append(secs)
    n = 2 * half
    us = best / n * 1e6
    rss = peak_rss_mb()
    print(f"engine overhead, {n:,} no-op tasks, -j {args.j}, best of {args.rounds} ({machine()})")
    print(
        f"ENGINE COST PER TASK: {us:.1f} us (target <= {TARGET_US:g}: {verdict(us <= TARGET_US)})"
    )
    row("graph build + expand", f"{secs_graph:.2f} s")
    row("run", f"{best:.2f} s")
    row(
        "per task (best round)",
        f"{us:.1f} us",
        f"target <= {TARGET_US:g}  {verdict(us <= TARGET_US)}",
    )
    row("per task, each round", " ".join(f"{x / n * 1e6:.1f}" for x in rounds) + " us")
    row("events per task", f"{count / args.rounds / n:.1f}")
    row("peak RSS", f"{rss:.0f} MB", f"target <= 500  {verdict(rss <= 500)}")


if __name__ == "__main__":
    main()
