"""Losing the scheduler while a job runs: a lost connection, as for SSH.

A real scheduler is SIGKILLed under a running ``fleetrun apply``: the attempt
ends as ``lost`` (so ``retry.on.connect`` runs it again, here against a new
scheduler at the same address), no library traceback or log reaches the
console, and the job's processes on the old worker end at once instead of
running on under it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from fleetrun.cluster import LocalCluster
from fleetrun.executors import ClusterExecutor
from fleetrun.executors._contract import AttemptResult, Handle

from ._helpers import make_attempt, pgrep, run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_a_dead_scheduler_is_a_lost_connection_and_its_job_ends_with_it(tmp_path: Path) -> None:
    port = _free_port()
    first = LocalCluster(tmp_path / "first", port=port)
    first.start(1)
    second = LocalCluster(tmp_path / "second", port=port)
    nap = f"60.{uuid.uuid4().int % 10**9:09d}"  # attempt 1 sleeps; the retry does not
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "name: lost\n"
        "targets: {a: {}}\n"
        "phases: [prove]\n"
        "tasks:\n"
        "  job:\n"
        "    phase: prove\n"
        "    for_each: all\n"
        "    runs_on: cluster\n"
        "    retry: {attempts: 2, backoff: 0.1, on: {connect: true}}\n"
        f'    run: if [ "$FLEETRUN_ATTEMPT" = 1 ]; then sleep {nap}; fi; echo done\n'
    )
    events = tmp_path / "events.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "FLEETRUN_CLUSTER"}
    argv = [sys.executable, "-m", "fleetrun", "apply", str(plan), "--plain"]
    argv += ["--cluster", first.address, "--events", str(events)]
    proc = subprocess.Popen(
        argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not pgrep(f"sleep {nap}"):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.05)
        assert first.scheduler is not None
        os.kill(first.scheduler.pid, signal.SIGKILL)
        # The job on the old worker ends with its scheduler: it does not run on
        # under a worker that nobody can hear any more.
        ended = time.monotonic() + 15
        while pgrep(f"sleep {nap}") and time.monotonic() < ended:
            time.sleep(0.05)
        assert not pgrep(f"sleep {nap}"), "the job outlived its scheduler"
        # A new scheduler at the same address: the retry connects afresh.
        second.start(1)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        first.stop(grace=3)
        second.stop(grace=3)
    assert proc.returncode == 0, out + err
    for said in (out, err):  # no library traceback or log line on the console
        assert "Traceback" not in said, said
        assert "distributed." not in said, said
    seen = [json.loads(line) for line in events.read_text().splitlines()]
    ended_events = [
        (e["attempt"], e["outcome"], e["error_kind"]) for e in seen if e["type"] == "AttemptEnded"
    ]
    assert ended_events == [(1, "retrying", "lost"), (2, "succeeded", None)]
    (retry,) = [
        e["retry_reason"] for e in seen if e["type"] == "AttemptEnded" and e["attempt"] == 1
    ]
    assert retry == (
        f"lost: lost the connection to the compute cluster's scheduler {first.address} "
        "while the job ran"
    )


def test_a_job_cut_off_from_a_live_scheduler_is_ended_and_reported_lost(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    # Only the connection breaks (the scheduler and the worker live on): the attempt
    # is lost, and its job is ended over a new connection instead of running on,
    # unheard, beside the attempt that retry would start.
    nap = f"60.{uuid.uuid4().int % 10**9:09d}"
    handles: list[Handle] = []

    async def go() -> AttemptResult:
        ex = ClusterExecutor(cluster.address)
        try:
            job = asyncio.ensure_future(
                ex.run(make_attempt(tmp_path, f"sleep {nap}", grace=1.0, handles=handles))
            )
            while not handles:  # noqa: ASYNC110 (on_started is a plain callback)
                await asyncio.sleep(0.02)
            client = await ex.client()
            client.scheduler_comm.comm.abort()  # the connection breaks, nothing else
            return await asyncio.wait_for(job, 60)
        finally:
            await ex.aclose()

    result = run(go())
    assert result == AttemptResult(
        exit_code=None,
        reason=f"lost the connection to the compute cluster's scheduler {cluster.address} "
        "while the job ran",
        error_kind="lost",
    )
    deadline = time.monotonic() + 10
    while pgrep(f"sleep {nap}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pgrep(f"sleep {nap}"), "the job ran on after its attempt was reported lost"
