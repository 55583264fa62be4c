"""Benchmark: load and expand a plan of 10,000 targets x 10 tasks (100,000+ instances).

Generates the plan file in a temporary directory (targets with attributes, a
``where`` group, per-target chains, two all-instance fan-ins through unfanned
gate tasks, one of them a quorum), then measures in this process:

- ``load_plan`` (YAML parsing and validation) and ``expand`` wall time,
- peak RSS (``resource.getrusage``, includes the interpreter),
- the ``dag`` makespan simulation at -j 64, for information.

Targets: load + expand under 10 s and peak RSS under 500 MB. Prints the figures
and PASS/FAIL; exits 1 on FAIL.

``--fleet`` measures big fleets instead: 100,000 and 700,000 targets (a 4 MB
and a 30 MB plan) with one fanned task each, every size in a fresh process so
that each peak RSS is its own. The 100,000-target plan must load and expand
under 10 s and 500 MB; the 700,000-target figures are printed for the record
(memory grows in proportion to the fleet; there is no fixed cap on values).

    python bench/bench_expand.py [--targets 10000] [--tasks 10]
    python bench/bench_expand.py --fleet
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fleetrun.plan import expand, load_plan, simulate

TIME_LIMIT_S = 10.0
RSS_LIMIT_MB = 500.0


FLEET_SIZES = (100_000, 700_000)
"""Targets of the ``--fleet`` runs; limits apply to the first."""


def write_plan(path: Path, n_targets: int, n_tasks: int = 10) -> int:
    """Write the benchmark plan; return the number of instances it expands to."""
    lines = ["name: bench-expand", "targets:"]
    for i in range(n_targets):
        role = "admin" if i % 1000 == 0 else "worker"
        lines.append(f"  r{i:05d}: {{zone: z{i % 7}, role: {role}, size: {i % 5 + 1}}}")
    lines += [
        "groups:",
        "  workers: {where: \"role != 'admin'\"}",
        "pools:",
        "  api: {concurrency: 64, rate: 50/s}",
        "phases: [one, two, three]",
        "tasks:",
    ]
    # Ten fanned tasks over every target, chained per target; two unfanned gates
    # fan in over all instances (one as a 90% quorum) and fan back out.
    gates = 0
    for k in range(n_tasks):
        needs = [] if k == 0 else [f"t{k - 1}"]
        if k == 5 and n_tasks > 3:
            needs.append("gate")
        if k == 8 and n_tasks > 6:
            needs.append("quorum-gate")
        phase = "one" if k < 4 else "two" if k < 7 else "three"
        lines += [
            f"  t{k}:",
            "    for_each: all",
            f"    phase: {phase}",
            f"    needs: [{', '.join(needs)}]",
            f"    estimate: {k + 1}s",
            "    pools: [api]",
            f"    run: ./step.sh {k} {{{{ target.name }}}} {{{{ target.size }}}}",
        ]
        if k == 3:
            gates += 1
            lines += [
                "  gate:",
                "    phase: two",
                "    needs: [t3]",
                "    run: echo all t3 done",
            ]
        if k == 6:
            gates += 1
            lines += [
                "  quorum-gate:",
                "    phase: three",
                "    needs: [{task: t6, at_least: '90%'}]",
                "    run: echo most t6 done",
            ]
    path.write_text("\n".join(lines) + "\n")
    return n_targets * n_tasks + gates


def fleet() -> int:
    """The ``--fleet`` runs: each size in a child process; a table of the figures."""
    print(
        f"{'targets':>9} {'plan MB':>8} {'instances':>10} {'load s':>7} {'expand s':>9} "
        f"{'total s':>8} {'peak RSS MB':>12}"
    )
    ok = True
    for n in FLEET_SIZES:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "plan.yaml"
            expected = write_plan(path, n, 1)
            proc = subprocess.run(
                [sys.executable, __file__, "--measure", str(path), "--expected", str(expected)],
                capture_output=True,
                text=True,
            )
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr, file=sys.stderr)
            return 1
        mb, instances, load_s, expand_s, rss = proc.stdout.split()
        total = float(load_s) + float(expand_s)
        print(
            f"{n:>9,} {float(mb):>8.1f} {int(instances):>10,} {float(load_s):>7.2f} "
            f"{float(expand_s):>9.2f} {total:>8.2f} {float(rss):>12.0f}"
        )
        if n == FLEET_SIZES[0]:
            ok = total < TIME_LIMIT_S and float(rss) < RSS_LIMIT_MB
    print(f"limits for {FLEET_SIZES[0]:,} targets: < {TIME_LIMIT_S:.0f} s, < {RSS_LIMIT_MB:.0f} MB")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def measure(path: Path, expected: int) -> int:
    """One ``--fleet`` row, in its own process: MB, instances, load s, expand s, RSS MB."""
    t0 = time.perf_counter()
    plan = load_plan(path)
    t1 = time.perf_counter()
    graph = expand(plan)
    t2 = time.perf_counter()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    mb = path.stat().st_size / 1024 / 1024
    print(f"{mb:.1f} {len(graph.nodes)} {t1 - t0:.2f} {t2 - t1:.2f} {rss:.0f}")
    return 0 if len(graph.nodes) == expected else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=10, help="fanned tasks (default 10)")
    parser.add_argument("--fleet", action="store_true", help="100,000 and 700,000 targets")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--expected", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fleet:
        return fleet()
    if args.measure:
        return measure(args.measure, args.expected)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plan.yaml"
        expected = write_plan(path, args.targets, args.tasks)
        size_kb = path.stat().st_size / 1024
        t0 = time.perf_counter()
        plan = load_plan(path)
        t1 = time.perf_counter()
        graph = expand(plan)
        t2 = time.perf_counter()
        dag = simulate(graph, "dag", 64)
        t3 = time.perf_counter()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    total = t2 - t0
    print(f"plan file:       {args.targets} targets, {size_kb:.0f} KiB")
    print(f"instances:       {len(graph.nodes)} (expected {expected}), {len(graph.waves)} waves")
    print(f"load_plan:       {t1 - t0:.2f} s")
    print(f"expand:          {t2 - t1:.2f} s")
    print(f"load + expand:   {total:.2f} s (target < {TIME_LIMIT_S:.0f} s)")
    print(f"peak RSS:        {rss_mb:.0f} MB (target < {RSS_LIMIT_MB:.0f} MB)")
    print(f"simulate dag:    {t3 - t2:.2f} s (makespan at -j 64: {dag:.0f} s)")
    ok = len(graph.nodes) == expected and total < TIME_LIMIT_S and rss_mb < RSS_LIMIT_MB
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
