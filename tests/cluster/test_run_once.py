"""A cluster job runs once per attempt, whatever its worker does.

Real schedulers and workers on 127.0.0.1, workers killed with SIGKILL: a job
that finished is never run again, a job whose worker died while it ran is
counted as an attempt (fleetrun's retry runs it again), a job that only
waited in a dead worker's queue runs once elsewhere, and with no worker left
the run ends after a bounded wait.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from fleetrun.cluster import LocalCluster
from fleetrun.executors import ClusterExecutor
from fleetrun.executors._contract import AttemptResult, Handle

from ._helpers import gone, make_attempt, pgrep, run

LOST = AttemptResult(exit_code=None, reason="worker lost", error_kind="lost")

# The functions these tests run on the workers and the scheduler go there by value
# (those processes do not import the tests).
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Two workers; a test that kills one starts another in its place."""
    c = LocalCluster(tmp_path_factory.mktemp("two"))
    c.start(2)
    try:
        yield c
    finally:
        c.stop(grace=5)


def _back_to_two(c: LocalCluster) -> None:
    c.forget({w.name for w in c.workers if not w.alive()})
    if len(c.workers) < 2:
        c.add_workers(2 - len(c.workers))


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _kill_once(ran: Path, killed: Path) -> str:
    """A command that records each run, and kills its own worker on its first run
    (the job's shell is the worker's child: Dask workers run without a nanny here)."""
    return (
        f"echo run >> {ran}; "
        f"if [ ! -e {killed} ]; then touch {killed}; kill -9 $PPID; sleep 30; fi; "
        "echo v=$FLEETRUN_ATTEMPT > $FLEETRUN_OUTPUT"
    )


async def _with_retry(
    ex: ClusterExecutor, tmp: Path, cmd: str, handles: list[Handle]
) -> list[AttemptResult]:
    """What the engine's ``retry.on.connect`` does: run again while the worker was lost."""
    results = []
    for n in range(1, 4):
        r = await ex.run(make_attempt(tmp, cmd, key="kill@w", n=n, handles=handles))
        results.append(r)
        if r.error_kind != "lost":
            break
    return results


def _mute_first_start(dask_worker: Any = None) -> None:
    """On a worker: drop the "started" events that the worker itself would send for
    ``kill@w``'s first attempt, as its death drops what it had not sent yet."""
    real = dask_worker.log_event

    def log_event(topic: Any, msg: Any) -> None:
        first_start = isinstance(msg, dict) and msg.get("seq") == -1
        if first_start and str(msg.get("job", "")).endswith("kill@w-1"):
            return
        real(topic, msg)

    dask_worker.log_event = log_event


def test_a_job_that_kills_its_worker_at_once_is_counted(two: LocalCluster, tmp_path: Path) -> None:
    # The job kills its worker as its first act: whatever the worker had not sent
    # yet dies with it (here, for certain: any "started" event of its own). The
    # attempt is still counted and reported lost, and the command runs once per
    # attempt: never again silently, as if it had never started.
    ran, killed = tmp_path / "ran", tmp_path / "killed"
    handles: list[Handle] = []

    async def go() -> list[AttemptResult]:
        ex = ClusterExecutor(two.address)
        try:
            client = await ex.client()
            await client.run(_mute_first_start)
            return await _with_retry(ex, tmp_path, _kill_once(ran, killed), handles)
        finally:
            await ex.aclose()

    try:
        results = run(go())
    finally:
        _back_to_two(two)
    assert results[0] == LOST
    assert results[1].ok, results
    assert results[1].outputs == {"v": "2"}
    assert len(results) == 2
    # Two runs of the command, two attempts started: each run is an attempt.
    assert _lines(ran) == ["run", "run"]
    assert [h.job for h in handles] == ["fleetrun-r1-kill@w-1", "fleetrun-r1-kill@w-2"]


def _wanted_by(key: str, client: str, dask_scheduler: Any = None) -> bool:
    ts = dask_scheduler.tasks.get(key)
    return ts is not None and any(c.client_key == client for c in ts.who_wants or ())


def test_a_finished_job_is_not_run_again_when_its_worker_dies(
    two: LocalCluster, tmp_path: Path
) -> None:
    # Dask computes a finished task again when the worker holding its result dies
    # while a client still wants it. Here a second client wants the job's key when
    # its worker is killed, after the job finished: Dask runs the task again, and the
    # job's claim refuses to run the command a second time.
    from distributed import Client, Future

    ran = tmp_path / "ran"
    handles: list[Handle] = []
    go_on = tmp_path / "go-on"
    cmd = (
        f"echo run >> {ran}; while [ ! -e {go_on} ]; do sleep 0.02; done; "
        "echo v=1 > $FLEETRUN_OUTPUT"
    )

    async def go() -> tuple[AttemptResult, Any, list[str]]:
        ex = ClusterExecutor(two.address)
        other = await Client(two.address, asynchronous=True, set_as_default=False)
        try:
            job = asyncio.ensure_future(
                ex.run(make_attempt(tmp_path, cmd, key="once@w", handles=handles))
            )
            while not handles:  # noqa: ASYNC110 (on_started is a plain callback)
                await asyncio.sleep(0.02)
            # Another client wants the key (as Dask's own clients say so when they
            # hold a future of a task that another client submitted).
            held = Future(handles[0].job, client=other)
            other._send_to_scheduler({"op": "client-desires-keys", "keys": [held.key]})
            for _ in range(3000):
                if await other.run_on_scheduler(_wanted_by, held.key, other.id):
                    break
                await asyncio.sleep(0.02)
            go_on.touch()  # the job finishes only once the other client wants it
            result = await job
            where = (await other.who_has([held]))[held.key]
            pids = await other.run(os.getpid)
            os.kill(pids[where[0]], signal.SIGKILL)
            again = await asyncio.wait_for(held.result(), 60)
            return result, again, list(where)
        finally:
            await other.close()
            await ex.aclose()

    try:
        result, again, where = run(go())
    finally:
        _back_to_two(two)
    assert result.ok
    assert result.outputs == {"v": "1"}
    assert len(where) == 1
    assert again == {"rerun": True}  # Dask ran the task again; the command did not run
    assert _lines(ran) == ["run"]


def test_with_every_worker_dead_waiting_jobs_give_up_after_the_bound(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path / "cluster")
    c.start(1)
    marker = f"60.{os.getpid()}{id(tmp_path) % 10**6:06d}"
    handles: list[Handle] = []

    async def go() -> list[AttemptResult]:
        ex = ClusterExecutor(c.address, worker_wait=1.0)
        try:
            jobs = asyncio.gather(
                *(
                    ex.run(make_attempt(tmp_path, f"sleep {marker}", key=f"j@{i}", handles=handles))
                    for i in range(3)
                )
            )
            while not handles:  # noqa: ASYNC110 (on_started is a plain callback)
                await asyncio.sleep(0.02)
            # The start may be announced when the worker claims the job, a moment
            # before it has spawned it and registered its group with the
            # watchdog: the worker dies once the job's process exists and has
            # been registered (the worker does that right after the spawn).
            while not pgrep(f"sleep {marker}"):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.5)
            os.kill(c.workers[0].pid, signal.SIGKILL)
            # Without the bound this would wait for a worker forever.
            return list(await asyncio.wait_for(jobs, 60))
        finally:
            await ex.aclose()

    try:
        results = run(go())
    finally:
        c.stop(grace=3)
    assert len(handles) == 1  # one job ran; the other two only waited
    assert sorted(r.reason or "" for r in results) == [
        *[
            f"no worker left on the compute cluster {c.address} that can run this job "
            "(MACHINE=1) for 1s"
        ]
        * 2,
        "worker lost",
    ]
    assert all(r.error_kind == "lost" and r.exit_code is None for r in results)
    # The dead worker's watchdog ends the job's process group (asynchronously).
    assert gone(f"sleep {marker}"), pgrep(f"sleep {marker}")


@pytest.mark.slow
def test_eight_jobs_on_two_workers_one_kills_its_worker_each_runs_once_per_attempt(
    tmp_path: Path,
) -> None:
    # The run as a user has it: fleetrun apply with an embedded cluster of two
    # workers; one job kills its own worker on its first attempt, at once (the job
    # that finished just before it on that worker must not be taken along).
    ran, killed = tmp_path / "ran", tmp_path / "killed"
    marker = f"30.{os.getpid()}{id(tmp_path) % 10**6:06d}"
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "name: eight\n"
        "cluster: {workers: 2}\n"
        "targets: {a: {}, b: {}, c: {}, d: {}, e: {}, f: {}, g: {}, h: {}}\n"
        "phases: [prove]\n"
        "tasks:\n"
        "  job:\n"
        "    phase: prove\n"
        "    for_each: all\n"
        "    runs_on: cluster\n"
        "    retry: {attempts: 3, backoff: 0.1, on: {connect: true}}\n"
        "    run: |\n"
        f"      echo {{{{ target.name }}}}$FLEETRUN_ATTEMPT >> {ran}\n"
        f"      if [ {{{{ target.name }}}} = c ] && [ ! -e {killed} ]; then\n"
        f"        touch {killed}; kill -9 $PPID; sleep {marker}\n"
        "      fi\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "FLEETRUN_CLUSTER"}
    events = tmp_path / "events.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "fleetrun", "apply", str(plan), "--plain", "--events", str(events)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # Each command ran once, the killer once per attempt: two attempts, two runs.
    assert sorted(_lines(ran)) == ["a1", "b1", "c1", "c2", "d1", "e1", "f1", "g1", "h1"]
    seen = [json.loads(line) for line in events.read_text().splitlines()]
    started = sorted((e["key"], e["attempt"]) for e in seen if e["type"] == "AttemptStarted")
    assert started == sorted([*((f"job@{t}", 1) for t in "abcdefgh"), ("job@c", 2)])
    ended = {
        (e["key"], e["attempt"]): (e["outcome"], e["error_kind"])
        for e in seen
        if e["type"] == "AttemptEnded"
    }
    assert ended.pop(("job@c", 1)) == ("retrying", "lost")
    assert set(ended.values()) == {("succeeded", None)}
    assert "Traceback" not in done.stderr
    # The dead worker's watchdog ends the killed attempt's process group
    # (asynchronously: on a busy machine it may come after the run's end).
    assert gone(f"sleep {marker}"), pgrep(f"sleep {marker}")
