"""Jobs that wait for a worker: an attempt starts when its job starts on a worker.

One real scheduler and one real worker, so that jobs queue: the time a job
waits is queued time ("waiting for a worker"), not the attempt's duration,
and its ``timeout`` counts from its start on the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from fleetrun.cli import cli
from fleetrun.cluster import LocalCluster
from fleetrun.executors import ClusterExecutor, _cluster_job
from fleetrun.executors._contract import AttemptResult, Handle

from ._helpers import make_attempt, run

WAITING = "waiting for a worker"


@pytest.fixture(scope="module")
def one(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A scheduler and a single worker: a second job waits for the first."""
    c = LocalCluster(tmp_path_factory.mktemp("one"))
    c.start(1)
    try:
        yield c
    finally:
        c.stop(grace=5)


def test_four_jobs_on_one_worker_run_one_after_another(
    one: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "name: queue\n"
        f"cluster: {{address: '{one.address}', workers: 1}}\n"
        "targets: {a: {}, b: {}, c: {}, d: {}}\n"
        "phases: [prove]\n"
        "tasks:\n"
        "  job: {phase: prove, for_each: all, runs_on: cluster, timeout: 3s, run: sleep 1}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "FLEETRUN_CLUSTER"}
    done = subprocess.run(
        [sys.executable, "-m", "fleetrun", "apply", str(plan), "--plain"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    db = sqlite3.connect(tmp_path / ".fleetrun" / "state.db")
    rows = db.execute(
        "select key, n, started_at, ended_at, ready_at, queued_reason, outcome, executor"
        " from attempts order by started_at"
    ).fetchall()
    db.close()
    # Every job ran once and succeeded, though the last one waited three jobs long.
    assert sorted(r[0] for r in rows) == ["job@a", "job@b", "job@c", "job@d"]
    assert [(r[1], r[6], r[7]) for r in rows] == [(1, "succeeded", "cluster")] * 4
    for i, (key, _, started, ended, ready, reason, _, _) in enumerate(rows):
        # Its duration is its own second (the start is when its "started" event came,
        # the end when its result came: a little jitter either way), not its wait.
        assert 0.9 <= ended - started <= 1.5, (key, ended - started)
        # Started i-th on the only worker: it waited for the i jobs before it.
        assert started - ready >= 0.9 * i, (key, started - ready)
        if i:
            assert reason == WAITING, key
    for (_, _, _, ended, *_), (key, _, started, *_) in itertools.pairwise(rows):
        assert started >= ended - 0.1, key  # one at a time: no two overlap
    # The last one's timeout (3s) would have run out during its wait, had it counted.
    assert rows[-1][3] - rows[-1][4] > 3.0

    monkeypatch.chdir(tmp_path)
    shown = CliRunner().invoke(cli, ["report", "--format", "json"])
    assert shown.exit_code == 0, shown.output
    report = json.loads(shown.output)
    # One worker: no speedup. The phase's wall is its first start to its last end;
    # the run's also holds connecting to the cluster.
    (phase,) = report["phases"]
    assert 0.85 <= phase["speedup"] <= 1.1, phase
    overall = report["overall"]
    assert overall["speedup"] <= 1.1, overall
    assert overall["queued_reasons"].get(WAITING, 0.0) >= 0.9 * (1 + 2 + 3), overall


def test_a_job_cancelled_while_it_waits_never_starts(one: LocalCluster, tmp_path: Path) -> None:
    marker = tmp_path / f"ran-{uuid.uuid4().hex[:8]}"

    async def go() -> tuple[list[Handle], list[Handle], AttemptResult, list[str]]:
        ex = ClusterExecutor(one.address)
        client = await ex.client()
        try:
            busy_handles: list[Handle] = []
            busy_started = asyncio.Event()

            def started(h: Handle) -> None:
                busy_handles.append(h)
                busy_started.set()

            nap = f"60.{uuid.uuid4().int % 10**9:09d}"
            busy = make_attempt(tmp_path, f"sleep {nap}", key="busy@w", grace=0.5)
            busy_task = asyncio.ensure_future(ex.run(dataclasses.replace(busy, on_started=started)))
            await asyncio.wait_for(busy_started.wait(), 60)  # the worker is taken

            queued_handles: list[Handle] = []
            queued = make_attempt(
                tmp_path, f"touch {marker}", key="queued@w", handles=queued_handles
            )
            queued_task = asyncio.ensure_future(ex.run(queued))
            for _ in range(500):  # until its job is with the scheduler
                if "fleetrun-r1-queued@w-1" in client.futures:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)
            queued_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await queued_task
            assert queued_task.cancelled()
            busy_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await busy_task
            # The worker is free: a job submitted now runs, after any still queued.
            after = await ex.run(make_attempt(tmp_path, "true", key="after@w"))
            jobs = await client.run(_cluster_job.running_jobs)
            return busy_handles, queued_handles, after, [k for ks in jobs.values() for k in ks]
        finally:
            await ex.aclose()

    busy_handles, queued_handles, after, running = run(go())
    assert [h.job for h in busy_handles] == ["fleetrun-r1-busy@w-1"]
    assert queued_handles == []  # it never started: no on_started call
    assert after.ok
    assert not marker.exists()
    assert running == []
