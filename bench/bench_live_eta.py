"""Cost of the live view's ETA, midway through a chain138-shaped run with rollout
waves, phases and a rate-limited pool: the live view's cost per event (which
never simulates), taking the simulation's inputs (on the event loop), and one
simulation of what remains (on a thread, about once a second).

    python bench/bench_live_eta.py [--targets 500] [--rounds 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import load
from rich.console import Console

from fleetrun.engine import (
    AttemptEnded,
    AttemptStarted,
    Event,
    InstanceSettled,
    RunStarted,
)
from fleetrun.engine.testing import plan, task
from fleetrun.plan import Graph, Pool, Rollout, expand
from fleetrun.report import LiveConsole


def chain138(targets: int) -> Graph:
    """infra (rate-limited pool) -> k8s -> besu per region, a quorum gate, verify."""
    regions = [f"r{i}" for i in range(targets)]
    p = plan(
        [
            task("infra", "true", targets=regions, phase="infra", pools=["api"], estimate=30),
            task("k8s", "true", targets=regions, phase="k8s", needs=["infra"], estimate=20),
            task("besu", "true", targets=regions, phase="k8s", needs=["k8s"], estimate=20),
            task("gate", "true", phase="verify", needs=[("besu", targets * 2 // 3)], estimate=5),
            task(
                "verify",
                "true",
                targets=regions,
                phase="verify",
                needs=["besu", "gate"],
                estimate=5,
            ),
        ],
        targets=regions,
        pools=[Pool("api", concurrency=64, rate=10.0)],
        phases=["infra", "k8s", "verify"],
    )
    return expand(dataclasses.replace(p, rollout=Rollout((1, 0.1, 1.0))))


def midway(g: Graph, mode: str) -> list[Event]:
    """Half of the regions' infra done in 12 s each, a tenth of them running."""
    n = len(g.nodes)
    out: list[Event] = [
        RunStarted(at=0.0, run_id="b", plan_name="b", mode=mode, parallelism=None, nodes=n)
    ]
    infra = [i for i, node in enumerate(g.nodes) if node.task == "infra"]
    half = len(infra) // 2
    for k, i in enumerate(infra[: half + len(infra) // 10]):
        key = g.nodes[i].key
        at = k * 0.1
        out.append(AttemptStarted(
            at=at, node=i, key=key, attempt=1, command="true", pid=1, pgid=1, log_path="x"
        ))  # fmt: skip
        if k < half:
            out.append(AttemptEnded(
                at=at + 12, node=i, key=key, attempt=1, started_at=at, exit_code=0,
                signal=None, timed_out=False, outcome="succeeded",
            ))  # fmt: skip
            out.append(InstanceSettled(at=at + 12, node=i, key=key, state="succeeded"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--targets", type=int, default=500, help="regions (4 nodes each, +1)")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    g = chain138(args.targets)
    edges = sum(len(d) for d in g.dependents)
    print(f"live ETA: {len(g.nodes):,} nodes, {edges:,} edges, rollout waves, phases, a pool")
    print(f"load {load()}")
    for mode in ("dag", "phased"):
        evs = midway(g, mode)
        live = LiveConsole(g, console=Console(file=io.StringIO(), width=120))
        t = time.perf_counter()
        for ev in evs:
            live(ev)
        per_event = (time.perf_counter() - t) / len(evs)
        now = 200.0
        costs, takes, eta = [], [], None
        for _ in range(args.rounds):
            t = time.perf_counter()
            inputs = live.state.eta_inputs(now)
            takes.append(time.perf_counter() - t)
            t = time.perf_counter()
            eta = inputs.simulate()
            costs.append(time.perf_counter() - t)
        sim, take = statistics.median(costs), statistics.median(takes)
        print(
            f"  {mode:7} per event {per_event * 1e6:5.2f} us   inputs {take * 1e3:5.2f} ms"
            f"   one simulation {sim * 1e3:7.1f} ms (min {min(costs) * 1e3:.1f})   ETA {eta:.0f}s"
        )


if __name__ == "__main__":
    main()
