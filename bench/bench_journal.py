"""What journaling costs: spawn throughput with the journal on and off.

5,000 ``true`` tasks at ``-j 8`` through ``run_graph`` and the local executor
(each attempt with its own log file), once with a ``JournalWriter`` subscribed
and passed as ``durable=`` (every state change committed before dependents
start), once without. Runs alternate on/off ``--rounds`` times; the best of
each is compared. Target: on/off >= 0.9.

    python bench/bench_journal.py [--tasks 5000] [-j 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from fleetrun.engine import run_graph
from fleetrun.engine._options import RunOptions, new_run_id
from fleetrun.executors import LocalExecutor
from fleetrun.plan import Graph, expand, load_plan
from fleetrun.state import Journal, JournalWriter, NewInstance


def _graph(work: Path, tasks: int) -> Graph:
    targets = "\n".join(f"  t{i}: {{}}" for i in range(tasks))
    plan = work / "plan.yaml"
    plan.write_text(
        f"name: bench-journal\ntargets:\n{targets}\ntasks:\n"
        "  noop:\n    for_each: all\n    run: 'true'\n"
    )
    return expand(load_plan(plan))


def _once(graph: Graph, work: Path, parallelism: int, journal_on: bool) -> float:
    state = work / ("state-on" if journal_on else "state-off")
    shutil.rmtree(state, ignore_errors=True)
    run_id = new_run_id()
    run_dir = state / "runs" / run_id
    run_dir.mkdir(parents=True)
    options = RunOptions(run_id=run_id, run_dir=run_dir, parallelism=parallelism)
    writer = None
    if journal_on:
        with Journal(state) as j:
            j.begin_run(
                run_id=run_id, parent_id=None, plan_path="plan.yaml", plan_name="bench",
                plan_hash="", plan_snapshot="", mode="dag", kind="apply", options={},
                instances=[NewInstance(n.key, n.id, n.task, n.target) for n in graph.nodes],
            )  # fmt: skip
        writer = JournalWriter(state / "state.db", run_id)
        writer.start()
    t0 = time.perf_counter()
    result = asyncio.run(
        run_graph(
            graph,
            options,
            LocalExecutor(),
            (writer,) if writer else (),
            durable=writer.durable if writer else None,
        )
    )
    if writer is not None:
        writer.close()  # the last commit counts: the journal must be complete
    elapsed = time.perf_counter() - t0
    if result.counts.get("succeeded") != len(graph.nodes):
        raise SystemExit(f"run did not succeed: {result.counts}")
    if journal_on:
        with Journal(state) as j:
            done = j.run(run_id)["counts"].get("succeeded")
            if done != len(graph.nodes):
                raise SystemExit(f"journal holds {done} succeeded, expected {len(graph.nodes)}")
    return len(graph.nodes) / elapsed


def main() -> None:
    """Run the benchmark and print tasks/s on and off and their ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=5000)
    ap.add_argument("-j", "--parallelism", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-journal-") as tmp:
        work = Path(tmp)
        graph = _graph(work, args.tasks)
        on: list[float] = []
        off: list[float] = []
        for _ in range(args.rounds):
            off.append(_once(graph, work, args.parallelism, journal_on=False))
            on.append(_once(graph, work, args.parallelism, journal_on=True))
        print(f"{args.tasks} 'true' tasks at -j {args.parallelism}, best of {args.rounds}")
        print(f"journal off: {max(off):8.0f} tasks/s   (all: {', '.join(f'{x:.0f}' for x in off)})")
        print(f"journal on:  {max(on):8.0f} tasks/s   (all: {', '.join(f'{x:.0f}' for x in on)})")
        ratio = max(on) / max(off)
        print(f"on/off ratio: {ratio:.3f}  (target >= 0.9: {'met' if ratio >= 0.9 else 'NOT met'})")


if __name__ == "__main__":
    main()
