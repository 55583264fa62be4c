"""Timeouts and interrupts end whole process groups: no descendant survives."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from fleetrun.engine import AttemptStarted, InstanceSettled, RunControl
from fleetrun.engine.testing import graph, pid_alive, task


def _stubborn(pidfile: Path) -> str:
    """A command whose grandchild ignores SIGTERM and records its pid."""
    return f"sh -c 'trap \"\" TERM; echo $$ > {pidfile}.$FLEETRUN_TARGET; exec sleep 60' & wait"


def _pids(tmp_path: Path) -> list[int]:
    return [int(p.read_text()) for p in tmp_path.glob("pids.*") if p.read_text().strip()]


def test_timeout_kills_grandchild_that_ignores_sigterm(runner, tmp_path):
    g = graph([task("t", _stubborn(tmp_path / "pids"), targets=["x"], timeout=0.5)])
    ran = runner(g, grace=0.3)
    st = ran.settled()["t@x"]
    assert st.state == "failed"
    assert st.reason == "timed out after 0.5s"
    pids = _pids(tmp_path)
    assert len(pids) == 1
    assert not pid_alive(pids[0])


def test_interrupt_ends_everything_and_second_skips_grace(runner, tmp_path):
    control = RunControl()
    started: list[int] = []

    def hook(e):
        if isinstance(e, AttemptStarted):
            started.append(e.pid)
            if len(started) == 3:
                # Give the grandchildren a moment to record their pids, then interrupt.
                loop = asyncio.get_running_loop()
                loop.call_later(0.5, control.interrupt)
                loop.call_later(0.8, control.interrupt)

    g = graph(
        [
            task("t", _stubborn(tmp_path / "pids"), targets=["a", "b", "c"]),
            task("after", "true", targets=["a", "b", "c"], needs=["t"]),
            task("other", "sleep 30", targets=["x", "y"]),
        ]
    )
    t0 = time.monotonic()
    ran = runner(g, hook=hook, control=control, parallelism=3, grace=60.0)
    took = time.monotonic() - t0
    assert ran.result.status == "interrupted"
    counts = ran.result.counts
    assert counts == {"cancelled": 3, "not_started": 5}
    reasons = {e.reason for e in ran.of(InstanceSettled) if e.state == "not_started"}
    assert reasons == {"not started: the run was interrupted"}
    assert took < 30  # the second interrupt skipped the 60 s grace
    pids = _pids(tmp_path)
    assert len(pids) == 3
    assert not any(pid_alive(p) for p in pids + started)


SCRIPT = textwrap.dedent(
    """
    import asyncio, signal, sys
    from pathlib import Path
    from fleetrun.engine import RunControl, RunOptions, run_graph, AttemptStarted
    from fleetrun.engine.testing import graph, task
    from fleetrun.executors import LocalExecutor

    tmp = Path(sys.argv[1])
    g = graph([task("t", sys.argv[2], targets=["a", "b"])])

    async def main():
        control = RunControl()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, control.interrupt)
        def sub(e):
            if isinstance(e, AttemptStarted):
                with open(tmp / "started", "a") as f:
                    f.write(f"{e.pid}\\n")
        opts = RunOptions(run_id="r", run_dir=tmp / "run", grace=1.0)
        return await run_graph(g, opts, LocalExecutor(), [sub], control=control)

    result = asyncio.run(main())
    sys.exit(130 if result.status == "interrupted" else 1)
    """
)


def test_sigint_to_a_script_exits_130_without_survivors(tmp_path):
    script = tmp_path / "drive.py"
    script.write_text(SCRIPT)
    cmd = _stubborn(tmp_path / "pids")
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), cmd])
    deadline = time.monotonic() + 30
    while len(_pids(tmp_path)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_pids(tmp_path)) == 2
    os.kill(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    started = [int(x) for x in (tmp_path / "started").read_text().split()]
    assert len(started) == 2
    assert not any(pid_alive(p) for p in _pids(tmp_path) + started)
