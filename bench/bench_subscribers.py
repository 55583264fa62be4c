"""What each event subscriber costs the engine: microseconds per event.

The engine calls every subscriber on its loop for every event; this feeds the
same synthetic run (3 events per instance: started, ended, settled, with
``-j`` instances in flight) to each one on a running loop and times it. The
baseline is a bare ``list.append`` measured in the same run. The live view
draws to /dev/null as to a 120x40 terminal at its normal redraw rate; the
redraws that fall in the run are included.

    python bench/bench_subscribers.py [--n 100000] [-j 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import load, median, row
from rich.console import Console

from fleetrun.engine import AttemptEnded, AttemptStarted, Event, InstanceSettled, RunStarted
from fleetrun.engine.testing import graph, task
from fleetrun.plan import Graph
from fleetrun.redact import Redactor
from fleetrun.report import EventsFile, LiveConsole, PlainConsole


def synthetic(g: Graph, j: int) -> list[Event]:
    """A run of every node of ``g`` with ``j`` in flight, one second per instance."""
    n = len(g.nodes)
    out: list[Event] = [
        RunStarted(at=0.0, run_id="b", plan_name="b", mode="dag", parallelism=j, nodes=n)
    ]

    def end(k: int, at: float) -> None:
        key = g.nodes[k].key
        out.append(
            AttemptEnded(
                at=at, node=k, key=key, attempt=1, started_at=at - 1, exit_code=0,
                signal=None, timed_out=False, outcome="succeeded",
            )
        )  # fmt: skip
        out.append(InstanceSettled(at=at, node=k, key=key, state="succeeded", attempts=1))

    for i in range(n):
        at = 1.0 + i / j
        if i >= j:
            end(i - j, at)
        key = g.nodes[i].key
        out.append(
            AttemptStarted(
                at=at, node=i, key=key, attempt=1, command="true", pid=1, pgid=1, log_path="x"
            )
        )
    for k in range(max(0, n - j), n):
        end(k, 2.0 + n / j)
    return out


def timed(sub: Callable[[Event], None], evs: list[Event], chunk: int = 64) -> float:
    """Seconds spent in ``sub`` over ``evs``, fed ``chunk`` per loop turn (as the
    engine delivers them), so timers the subscriber arms do fire."""

    async def feed() -> float:
        spent = 0.0
        for start in range(0, len(evs), chunk):
            t = time.perf_counter()
            for ev in evs[start : start + chunk]:
                sub(ev)
            spent += time.perf_counter() - t
            await asyncio.sleep(0)
        return spent

    return asyncio.run(feed())


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="instances (3 events each)")
    ap.add_argument("-j", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    g = graph([task("t", "true", targets=[f"n{i}" for i in range(args.n)], estimate=1)])
    evs = synthetic(g, args.j)
    tmp = Path(tempfile.mkdtemp(prefix="fleetrun-bench-subs-"))
    sink = open(os.devnull, "w")  # noqa: SIM115

    def bare() -> tuple[Callable[[Event], None], Callable[[], None]]:
        got: list[Event] = []
        return got.append, got.clear

    def plain() -> tuple[Callable[[Event], None], Callable[[], None]]:
        return PlainConsole(sink), lambda: None

    def live() -> tuple[Callable[[Event], None], Callable[[], None]]:
        screen = Console(file=sink, width=120, height=40, force_terminal=True)
        view = LiveConsole(g, console=screen, parallelism=args.j)
        view.start()
        return view, view.stop

    def events_file() -> tuple[Callable[[Event], None], Callable[[], None]]:
        f = EventsFile(tmp / "events.jsonl", Redactor(["s3cr3t-value"]))
        return f, f.close

    cases = {
        "bare list.append": bare,
        "plain console": plain,
        "live view": live,
        "events file": events_file,
    }
    print(f"subscribers: {len(evs):,} events ({args.n:,} instances, -j {args.j}); load {load()}")
    per: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, make in cases.items():
            sub, close = make()
            per[name].append(timed(sub, evs) / len(evs))
            close()
    sink.close()
    base = median(per["bare list.append"])
    print("subscriber                              us/event (median)   vs bare")
    for name, xs in per.items():
        us = median(xs)
        row(name, f"{us * 1e6:.2f}", f"{us / base:>10.1f}x")


if __name__ == "__main__":
    main()
