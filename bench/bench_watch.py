"""What following a run with ``fleetrun watch`` costs.

1. Idle: ``fleetrun watch`` (plain lines, and the live view on a pseudo-terminal)
   following a real ``fleetrun apply`` whose two tasks sleep: the CPU the
   watcher uses over ``--seconds`` once it has started (its process's
   utime + stime from ``/proc``), as a share of one CPU.
2. Catching up: a journal of ``--n`` instances (three events each, written by
   ``JournalWriter``) read back as typed events (``JournalReader.events_after``,
   in pieces of 2,000): CPU seconds and microseconds per event; then ``fleetrun
   watch`` of that finished run end to end (start, plan load, replay, summary).

    python bench/bench_watch.py [--seconds 6] [--n 50000]

Target: idle under 1% of a CPU.
"""

from __future__ import annotations

import argparse
import os
import pty
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import load

from fleetrun.engine import AttemptEnded, AttemptStarted, InstanceSettled, RunEnded, RunStarted
from fleetrun.plan import expand, load_plan
from fleetrun.state import Journal, JournalReader, JournalWriter, NewInstance

FLEETRUN = [sys.executable, "-m", "fleetrun"]


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle(work: Path, seconds: float, terminal: bool) -> float:
    """Share of a CPU a watcher uses while the run it follows is quiet."""
    plan = work / "nap.yaml"
    plan.write_text(
        "name: nap\ntargets: {a: {}, b: {}}\n"
        f"tasks:\n  nap: {{for_each: all, run: sleep {seconds + 6:g}}}\n"
    )
    state = work / f"st-{'tty' if terminal else 'plain'}"
    run = subprocess.Popen(
        [*FLEETRUN, "apply", str(plan), "--plain", "--state-dir", str(state)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while not list(state.glob("runs/*")):
        time.sleep(0.05)
    args = [*FLEETRUN, "watch", "--state-dir", str(state)]
    if terminal:
        master, slave = pty.openpty()
        env = {k: v for k, v in os.environ.items() if k not in ("CI", "NO_COLOR")}
        watcher = subprocess.Popen(
            args, stdin=slave, stdout=slave, stderr=slave, env={**env, "TERM": "xterm"}
        )
        os.close(slave)

        def drain() -> None:
            while True:
                try:
                    if not os.read(master, 65536):
                        break
                except OSError:
                    break

        threading.Thread(target=drain, daemon=True).start()
    else:
        watcher = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(3)  # started, caught up
    before, t0 = _cpu(watcher.pid), time.monotonic()
    time.sleep(seconds)
    used, took = _cpu(watcher.pid) - before, time.monotonic() - t0
    watcher.wait()
    run.wait()
    return used / took


def big_run(work: Path, n: int) -> Path:
    """A finished run of ``n`` instances (one failed in 1,000) journaled as a run writes it."""
    (work / "targets.yaml").write_text("".join(f"t{i}: {{}}\n" for i in range(n)))
    plan_file = work / "big.yaml"
    plan_file.write_text("name: big\ntargets: targets.yaml\ntasks:\n  w: {for_each: all, run: x}\n")
    plan = load_plan(plan_file)
    graph = expand(plan)
    state = work / "st-big"
    with Journal(state) as j:
        j.begin_run(
            run_id="big",
            parent_id=None,
            plan_path=str(plan_file),
            plan_name="big",
            plan_hash=plan.source_hash,
            plan_snapshot=plan_file.read_text(),
            mode="dag",
            kind="apply",
            options={"parallelism": 8},
            instances=[
                NewInstance(key=x.key, node=i, task=x.task, target=x.target)
                for i, x in enumerate(graph.nodes)
            ],
        )
        w = JournalWriter(j.db_path, "big")
        w.start()
        t = time.time()
        w(RunStarted(at=t, run_id="big", plan_name="big", mode="dag", parallelism=8, nodes=n))
        for i, x in enumerate(graph.nodes):
            a, bad = t + i / 1000, i % 1000 == 0
            w(AttemptStarted(at=a, node=i, key=x.key, attempt=1, command="x", pid=None,
                             pgid=None, log_path="l"))  # fmt: skip
            outcome = "failed" if bad else "succeeded"
            w(AttemptEnded(at=a + 0.01, node=i, key=x.key, attempt=1, started_at=a,
                           exit_code=int(bad), signal=None, timed_out=False,
                           outcome=outcome, tail=("error: x",)))  # fmt: skip
            w(InstanceSettled(at=a + 0.01, node=i, key=x.key, state=outcome, attempts=1))
        w(RunEnded(at=t + n / 1000 + 1, run_id="big", status="failed", counts={}))
        w.close()
    return state


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--n", type=int, default=50_000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-watch-") as tmp:
        work = Path(tmp)
        print(f"load {load()}")
        for terminal in (False, True):
            share = idle(work, a.seconds, terminal)
            what = "live view on a terminal" if terminal else "plain lines"
            verdict = "PASS" if share < 0.01 else "MISS"
            print(f"idle, {what}: {100 * share:.2f}% of a CPU  {verdict} (< 1%)")
        state = big_run(work, a.n)
        with JournalReader(state) as r:
            c0, seq, events = time.process_time(), 0, 0
            while True:
                seq, got = r.events_after("big", seq, 2000)
                if not got:
                    break
                events += len(got)
            cpu = time.process_time() - c0
        print(f"read back {events} events: {cpu:.2f} s CPU, {1e6 * cpu / events:.1f} µs per event")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(
            [*FLEETRUN, "watch", "--state-dir", str(state)], stdout=subprocess.DEVNULL, check=False
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        print(
            f"fleetrun watch of the finished {a.n}-instance run: {time.perf_counter() - t0:.2f} s"
            f" wall, {cpu:.2f} s CPU (start, plan load, replay, summary)"
        )


if __name__ == "__main__":
    main()
