"""Spawn throughput: N ``true`` commands at -j 8, each with its own log file.

Compared in the same run (same machine, same moments):

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
  under a semaphore of 8;
- fleetrun again with the live view subscribed and drawing (to /dev/null, as
  to a terminal): its ratio to plain fleetrun is what the view costs.

The host may be busy with other work, so contenders are interleaved over
``--rounds`` rounds (the order alternates every round: fleetrun and xargs run
back to back each time). Each round gives its own ratios; the median of the
per-round ratios is the headline, and the ratio of the best rates is shown
beside it. The load averages at the start and the end are printed. Before
each run, the files of the previous run are deleted, the disk is synced and
Python's garbage is collected, so that no run pays for an earlier one.

Each contender's CPU time per task is shown too: its own process (for
fleetrun: every thread of the process that runs the loop; for xargs and GNU
parallel: the xargs or perl process itself) and with its children. CPU time
is far less sensitive to the host's load than throughput.

Targets: fleetrun >= 1.0x xargs, >= 5x GNU parallel.

    python bench/bench_spawn.py [--n 5000] [-j 8] [--rounds 5] [--parallel-n 1000]
                                [--spawn-threads N[,N...]]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

sys.path.insert(0, str(Path(__file__).parent))

from _common import fresh_dir, load, median, row, settle_deletions, verdict

from fleetrun.engine import RunOptions, run_graph
from fleetrun.engine.testing import graph, task
from fleetrun.executors import LocalExecutor
from fleetrun.report import LiveConsole


@dataclass(frozen=True)
class Sample:
    """One contender's run: tasks per second and CPU seconds per task."""

    rate: float
    own_cpu: float
    """CPU of the contender's own process (all its threads), per task."""
    all_cpu: float
    """The same plus every child it reaped, per task."""


def _times() -> tuple[float, float]:
    t = os.times()
    return t.user + t.system, t.children_user + t.children_system


def run_fleetrun(
    work: Path, n: int, j: int, spawn_threads: int | None, live: bool = False
) -> Sample:
    """fleetrun's engine; with ``live``, the live view subscribed and drawing
    (to /dev/null, as to a 120x40 terminal, at its normal redraw rate)."""
    g = graph([task("t", "true", targets=[f"n{i}" for i in range(n)])], base_dir=work)
    run_dir = fresh_dir(work, "fleetrun")
    opts = RunOptions(run_id="bench", run_dir=run_dir, parallelism=j)
    executor = LocalExecutor(spawn_threads=spawn_threads)
    sink = open(os.devnull, "w")  # noqa: SIM115
    view = None
    if live:
        screen = Console(file=sink, width=120, height=40, force_terminal=True)
        view = LiveConsole(g, console=screen, parallelism=j)
        view.start()
    own0, kids0 = _times()
    t0 = time.perf_counter()
    try:
        result = asyncio.run(run_graph(g, opts, executor, [view] if view else []))
    finally:
        if view is not None:
            view.stop()
        sink.close()
    secs = time.perf_counter() - t0
    own1, kids1 = _times()
    assert result.counts == {"succeeded": n}, result.counts
    logs = sum(1 for _ in (run_dir / "logs" / "t").iterdir())
    assert logs == n, logs
    own = own1 - own0
    return Sample(n / secs, own / n, (own + kids1 - kids0) / n)


def _external(cmd: list[str], n: int) -> Sample:
    """Run ``cmd`` with the numbers 0..n-1 on stdin; its rate and CPU per task.

    The command's own CPU is read from ``/proc`` while it is a zombie (waited
    for with ``WNOWAIT``), before it is reaped; its children's CPU reaches
    this process's ``RUSAGE_CHILDREN`` once it is reaped.
    """
    data = ("\n".join(map(str, range(n))) + "\n").encode()
    r, w = os.pipe()
    _, kids0 = _times()
    t0 = time.perf_counter()
    pid = os.posix_spawnp(cmd[0], cmd, os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, r, 0)])
    os.close(r)
    with os.fdopen(w, "wb") as f:
        f.write(data)
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    secs = time.perf_counter() - t0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    _, status = os.waitpid(pid, 0)
    _, kids1 = _times()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd[0]} failed: status {status}")
    return Sample(n / secs, own / n, (kids1 - kids0) / n)


def run_xargs(work: Path, n: int, j: int) -> Sample:
    d = fresh_dir(work, "xargs")
    s = _external(["xargs", "-P", str(j), "-I{}", "sh", "-c", f"true > {d}/{{}}.log"], n)
    assert len(os.listdir(d)) == n
    return s


def have_parallel() -> bool:
    if shutil.which("parallel") is None:
        subprocess.run(["apt-get", "install", "-y", "parallel"], capture_output=True)
    return shutil.which("parallel") is not None


def run_parallel(work: Path, n: int, j: int) -> Sample:
    d = fresh_dir(work, "parallel")
    s = _external(["parallel", "--will-cite", "-j", str(j), f"true > {d}/{{}}.log"], n)
    assert len(os.listdir(d)) == n
    return s


def run_asyncio(work: Path, n: int, j: int) -> Sample:
    d = fresh_dir(work, "asyncio")

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

    own0, kids0 = _times()
    t0 = time.perf_counter()
    asyncio.run(main())
    secs = time.perf_counter() - t0
    own1, kids1 = _times()
    own = own1 - own0
    return Sample(n / secs, own / n, (own + kids1 - kids0) / n)


def _quiesce() -> None:
    """Between runs: no run pays for the one before it.

    A finished run leaves dirty pages for writeback and garbage for the next
    collection; both are settled here, outside every timed region. Its files
    stay until the end of the benchmark (see ``_common.fresh_dir``).
    """
    gc.collect()
    os.sync()


def _us(x: float) -> str:
    return f"{x * 1e6:,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("-j", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--parallel-n", type=int, default=1000)
    ap.add_argument(
        "--spawn-threads",
        default="",
        help="LocalExecutor(spawn_threads=): N, or N,M,... to compare settings (first is judged)",
    )
    args = ap.parse_args()
    threads: list[int | None] = [int(x) for x in args.spawn_threads.split(",") if x] or [None]
    fr_names = [
        "fleetrun" if k == 0 else f"fleetrun spawn_threads={t}" for k, t in enumerate(threads)
    ]
    if len(threads) > 1:
        fr_names[0] = f"fleetrun spawn_threads={threads[0]}"

    contenders: list[tuple[str, Callable[[Path], Sample]]] = []
    for name, t in zip(fr_names, threads, strict=True):
        contenders.append((name, lambda w, t=t: run_fleetrun(w, args.n, args.j, t)))
    live = "fleetrun + live view"
    contenders.append((live, lambda w: run_fleetrun(w, args.n, args.j, threads[0], live=True)))
    contenders.append(("xargs -P", lambda w: run_xargs(w, args.n, args.j)))
    contenders.append(("asyncio subprocess", lambda w: run_asyncio(w, args.n, args.j)))
    if have_parallel():
        contenders.append(("GNU parallel", lambda w: run_parallel(w, args.parallel_n, args.j)))
    else:
        print("  GNU parallel: not installed and not installable here; skipped")
    names = [c[0] for c in contenders]
    fr = fr_names[0]

    print(
        f"spawn throughput: {args.n:,} `true` tasks at -j {args.j}, one log file each; "
        f"{args.rounds} interleaved rounds (python {sys.version.split()[0]}, "
        f"{os.cpu_count()} cpu(s))"
    )
    settle_deletions()
    load_start = load()
    print(f"  load at start {load_start}")
    work = Path(tempfile.mkdtemp(prefix="fleetrun-bench-spawn-"))
    os.chdir(work)  # the plan's base_dir: commands run here, so `true` is exec'd directly
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    try:
        for r in range(args.rounds):
            # ABAB: the order flips every round, so no contender always runs first.
            order = contenders if r % 2 == 0 else contenders[::-1]
            for name, fn in order:
                _quiesce()
                samples[name].append(fn(work))
            cells = "  ".join(f"{name} {samples[name][-1].rate:,.0f}/s" for name in names)
            ratios = f"{fr}/xargs {samples[fr][-1].rate / samples['xargs -P'][-1].rate:.2f}x"
            if "GNU parallel" in samples:
                gp = samples[fr][-1].rate / samples["GNU parallel"][-1].rate
                ratios += f", /parallel {gp:.2f}x"
            print(f"  round {r + 1}: {cells}  |  {ratios}  (load {load()})")
    finally:
        os.chdir("/")
        shutil.rmtree(work, ignore_errors=True)
    print(f"  load at end {load()}")

    print("rates (tasks/s)                         median            best")
    for name in names:
        rates = [s.rate for s in samples[name]]
        row(name, f"{median(rates):,.0f}", f"{max(rates):>14,.0f}")
    print("ratios                                   median of rounds  of best rates")

    def ratio(a: str, b: str, target: float | None) -> None:
        per = [x.rate / y.rate for x, y in zip(samples[a], samples[b], strict=True)]
        med = median(per)
        best = max(s.rate for s in samples[a]) / max(s.rate for s in samples[b])
        note = f"{best:>14.2f}x"
        if target is not None:
            note += f"  target >= {target:g}: median {verdict(med >= target)}, "
            note += f"best {verdict(best >= target)}"
        row(f"{a} / {b}", f"{med:.2f}x", note)
        print(f"      per round: {' '.join(f'{x:.2f}' for x in per)}")

    ratio(fr, "xargs -P", 1.0)
    if "GNU parallel" in samples:
        ratio(fr, "GNU parallel", 5.0)
    ratio(fr, "asyncio subprocess", None)
    ratio(live, fr, None)  # what drawing the live view costs the engine
    for other in fr_names[1:]:
        ratio(other, "xargs -P", None)
    print("CPU per task (us, median of rounds)      own process     with children")
    for name in names:
        own = median([s.own_cpu for s in samples[name]])
        everything = median([s.all_cpu for s in samples[name]])
        row(name, _us(own), f"{_us(everything):>14}")


if __name__ == "__main__":
    main()
