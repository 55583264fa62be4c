"""Pipelining: the chain138 example in ``dag`` mode against ``phased`` mode.

Runs ``examples/chain138/plan.yaml`` (stand-in scripts that sleep) for real,
with ``CHAIN138_HEAVY_TAIL_SEED`` set so that per-region durations are
heavy-tailed (one slow region no longer holds every other region back in
``dag`` mode, while ``phased`` waits for the slowest region at every phase
barrier). ``CHAIN138_SCALE`` shortens every sleep. Modes alternate for
``--rounds``; the best makespan of each is compared. Target: dag <= 0.7 x phased.

    python bench/bench_pipeline.py [--seed 7] [--scale 0.25] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import machine, row, timed, verdict

from fleetrun.engine import RunOptions, run_graph
from fleetrun.executors import LocalExecutor
from fleetrun.plan import Graph, expand, load_plan
from fleetrun.redact import Redactor

PLAN = Path(__file__).resolve().parent.parent / "examples" / "chain138" / "plan.yaml"


def once(g: Graph, mode: str, j: int | None) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        opts = RunOptions(
            run_id=f"bench-{mode}",
            run_dir=Path(tmp),
            mode=mode,  # type: ignore[arg-type]
            parallelism=j,
            redactor=Redactor(g.plan.secret_values),
        )
        secs, result = timed(lambda: asyncio.run(run_graph(g, opts, LocalExecutor())))
        assert result.status == "succeeded", result.counts
    return secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", default="7")
    ap.add_argument("--scale", default="0.25")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("-j", type=int, default=None)
    args = ap.parse_args()
    os.environ["CHAIN138_HEAVY_TAIL_SEED"] = args.seed
    os.environ["CHAIN138_SCALE"] = args.scale
    os.environ.pop("FAIL_REGIONS", None)
    g = expand(load_plan(PLAN))
    best = {"dag": float("inf"), "phased": float("inf")}
    for _ in range(args.rounds):
        for mode in ("dag", "phased"):
            best[mode] = min(best[mode], once(g, mode, args.j))
    print(
        f"pipelining, chain138 ({len(g.nodes)} instances), heavy-tail seed {args.seed}, "
        f"scale {args.scale} ({machine()})"
    )
    row("dag makespan", f"{best['dag']:.2f} s")
    row("phased makespan", f"{best['phased']:.2f} s")
    ratio = best["dag"] / best["phased"]
    row("dag / phased", f"{ratio:.2f}", f"target <= 0.7  {verdict(ratio <= 0.7)}")


if __name__ == "__main__":
    main()
