"""Losing a worker, scaling down and tearing down, on real local clusters (one per test)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetrun.cluster import LocalCluster, down_local, scale_local, status
from fleetrun.executors import ClusterExecutor
from fleetrun.executors._contract import AttemptResult

from ._helpers import make_attempt, pgrep, run


@pytest.fixture
def three(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path / "cluster")
    c.start(3)
    try:
        yield c
    finally:
        c.stop(grace=3)


async def _with_retry(ex: ClusterExecutor, tmp: Path, key: str, cmd: str) -> list[AttemptResult]:
    """What the engine's retry does for a lost worker: run again, up to 3 attempts."""
    results = []
    for n in range(1, 4):
        r = await ex.run(make_attempt(tmp, cmd, key=key, n=n))
        results.append(r)
        if r.error_kind != "lost":
            break
    return results


def _wait_busy(address: str, name: str) -> None:
    """Wait until worker ``name`` runs a job."""
    for _ in range(100):
        if any(w["name"] == name and w["job"] for w in status(address)["workers"]):
            return
        time.sleep(0.05)
    raise AssertionError(f"worker {name} never ran a job")


def test_a_killed_worker_loses_one_attempt_and_the_retry_completes_once(
    three: LocalCluster, tmp_path: Path
) -> None:
    nap = f"1.5{uuid.uuid4().int % 10**6:06d}"
    done = tmp_path / "done.txt"
    # Each job works 1.5 s, then records its completion; a lost run must never record one.
    cmd = f'sleep {nap}; echo "$JOB" >> {done}; echo result=$(($JOB * $JOB)) >> "$FLEETRUN_OUTPUT"'
    victim = three.workers[0]

    async def go() -> list[list[AttemptResult]]:
        ex = ClusterExecutor(three.address)
        try:
            jobs = [_with_retry(ex, tmp_path, f"prove@{i}", f"JOB={i}; {cmd}") for i in range(6)]
            gathered = asyncio.gather(*jobs)
            await asyncio.to_thread(_wait_busy, three.address, victim.name)
            os.kill(victim.pid, signal.SIGKILL)
            return list(await gathered)
        finally:
            await ex.aclose()

    t = time.monotonic()
    results = run(go())
    took = time.monotonic() - t
    lost = [r for rs in results for r in rs if r.error_kind == "lost"]
    assert len(lost) == 1
    assert lost[0] == AttemptResult(exit_code=None, reason="worker lost", error_kind="lost")
    assert all(rs[-1].ok for rs in results)
    assert [rs[-1].outputs for rs in results] == [{"result": str(i * i)} for i in range(6)]
    # Every job completed exactly once: the lost run's processes died with its worker.
    assert sorted(done.read_text().split()) == [str(i) for i in range(6)]
    time.sleep(0.5)
    assert not pgrep(f"sleep {nap}")
    # 6 jobs of 1.5 s on 3 then 2 workers: about 4.5 s, well under a serial 9 s.
    assert took < 8.0


def test_scale_down_while_jobs_run_loses_none(three: LocalCluster, tmp_path: Path) -> None:
    done = tmp_path / "done.txt"
    cmd = f"sleep 1; echo $FLEETRUN_ATTEMPT >> {done}"
    pids = [w.pid for w in three.workers]

    async def go() -> list[AttemptResult]:
        ex = ClusterExecutor(three.address)
        try:
            jobs = asyncio.gather(
                *(ex.run(make_attempt(tmp_path, cmd, key=f"j@{i}")) for i in range(5))
            )
            await asyncio.sleep(0.6)
            got = await asyncio.to_thread(scale_local, three, 1, 60.0)
            assert got == {"workers": 1}
            return list(await jobs)
        finally:
            await ex.aclose()

    results = run(go())
    assert [r.ok for r in results] == [True] * 5
    assert [r.error_kind for r in results] == [None] * 5
    assert done.read_text().split() == ["1"] * 5
    assert len(three.workers) == 1
    gone = [p for p in pids if p != three.workers[0].pid]
    assert all(not os.path.exists(f"/proc/{p}/stat") or _zombie(p) for p in gone)
    assert len(status(three.address)["workers"]) == 1


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True  # gone while we looked


def test_down_drains_and_leaves_no_process_and_no_file(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path / "state" / "cluster" / "local")
    c.start(2)
    c.save()
    assert oct(os.stat(c.directory).st_mode & 0o777) == "0o700"
    assert oct(os.stat(c.directory / "cluster.json").st_mode & 0o777) == "0o600"
    done = tmp_path / "done.txt"
    procs = [*c.workers, c.scheduler]

    async def go() -> AttemptResult:
        ex = ClusterExecutor(c.address)
        try:
            job = asyncio.ensure_future(
                ex.run(make_attempt(tmp_path, f"sleep 1; echo ok > {done}"))
            )
            await asyncio.sleep(0.5)
            left = await asyncio.to_thread(down_local, LocalCluster.load(c.directory), 60.0)
            assert left == []
            return await job
        finally:
            await ex.aclose()

    r = run(go())
    assert r.ok  # the job in flight finished before its worker went
    assert done.read_text() == "ok\n"
    assert all(p is not None and not p.alive() for p in procs)
    assert not c.directory.exists()


def test_the_embedded_cluster_starts_for_the_run_and_stops_after(tmp_path: Path) -> None:
    async def go() -> tuple[AttemptResult, list[int], str]:
        ex = ClusterExecutor(workers=1)
        r = await ex.run(make_attempt(tmp_path, "echo n=$FLEETRUN_ATTEMPT > $FLEETRUN_OUTPUT"))
        local = ex._local
        assert local is not None
        assert local.scheduler is not None
        pids = [local.scheduler.pid, *(w.pid for w in local.workers)]
        directory = str(local.directory)
        await ex.aclose()
        return r, pids, directory

    r, pids, directory = run(go())
    assert r.outputs == {"n": "1"}
    assert len(pids) == 2
    assert not any(_alive(p) for p in pids)
    assert not os.path.exists(directory)


def _alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}/stat") and not _zombie(pid)


def test_a_worker_killed_just_after_its_job_started_takes_the_job_along(tmp_path: Path) -> None:
    # The watchdog reads its registrations in batches: a group registered just before
    # the worker died, after many that came and went, is still killed.
    _killed_worker_takes_its_job_along(tmp_path, kill_watchdog_first=False)


def test_a_dead_watchdog_is_replaced_at_the_next_job(tmp_path: Path) -> None:
    _killed_worker_takes_its_job_along(tmp_path, kill_watchdog_first=True)


def _killed_worker_takes_its_job_along(tmp_path: Path, *, kill_watchdog_first: bool) -> None:
    c = LocalCluster(tmp_path / "cluster")
    c.start(1)
    worker = c.workers[0].pid
    nap = f"60.{uuid.uuid4().int % 10**9:09d}"
    try:

        async def go() -> AttemptResult:
            ex = ClusterExecutor(c.address)
            try:
                quick = [ex.run(make_attempt(tmp_path, "true", key=f"q@{i}")) for i in range(100)]
                assert all(r.ok for r in await asyncio.gather(*quick))
                if kill_watchdog_first:
                    (watchdog,) = _children(worker)
                    os.kill(watchdog, signal.SIGKILL)
                job = asyncio.ensure_future(
                    ex.run(make_attempt(tmp_path, f"sleep {nap} & sleep {nap}; wait"))
                )
                for _ in range(1000):
                    await asyncio.sleep(0.01)
                    if len(pgrep(f"sleep {nap}")) >= 3:  # the shell and both sleeps
                        break
                os.kill(worker, signal.SIGKILL)
                return await job
            finally:
                await ex.aclose()

        r = run(go())
        assert r == AttemptResult(exit_code=None, reason="worker lost", error_kind="lost")
        deadline = time.monotonic() + 2.0
        while pgrep(f"sleep {nap}") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pgrep(f"sleep {nap}")
    finally:
        c.stop(grace=3)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]
