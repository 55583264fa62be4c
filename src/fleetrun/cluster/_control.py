"""Talking to a running scheduler: status, draining workers, scaling a local cluster, down.

Draining is what Dask's ``retire_workers`` does not do by itself: it moves
data off a worker but closes it with its task still running. ``drain`` first
marks the workers ``closing_gracefully`` on the scheduler (no new job goes to
them), waits until each has finished the job it runs, and only then retires
and closes them. Invariant: a worker is closed only once it processes nothing,
so no job in flight is lost by ``scale`` or ``down``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fleetrun.cluster.errors import ClusterError, ClusterNotFoundError
from fleetrun.executors import (
    LocalCluster,
    quiet_dask_logs,
    running_cluster_jobs,
    stop_processes,
)

LOCAL_DIR = ("cluster", "local")


def local_dir(state_dir: Path) -> Path:
    """Where ``up --local`` records its cluster inside the state directory."""
    return state_dir.joinpath(*LOCAL_DIR)


def local_recorded(directory: Path) -> bool:
    """True when a local cluster is recorded in ``directory``."""
    return LocalCluster.recorded(directory)


def load_local(directory: Path) -> LocalCluster:
    """The local cluster recorded in ``directory``; ClusterNotFoundError when none is."""
    if not local_recorded(directory):
        raise ClusterNotFoundError(
            f"no local cluster is recorded in {directory}; start one with "
            "`fleetrun cluster up --local`"
        )
    return LocalCluster.load(directory)


@contextlib.contextmanager
def connect(address: str, timeout: float = 10.0) -> Iterator[Any]:
    """A synchronous ``distributed.Client`` for ``address``, closed afterwards."""
    from distributed import Client

    quiet_dask_logs()
    try:
        client = Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as e:
        raise ClusterNotFoundError(f"cannot reach the scheduler at {address}: {e}") from None
    try:
        yield client
    finally:
        client.close()


def status(address: str) -> dict[str, Any]:
    """Workers (name, address, pid, resources, the job each runs) and queued jobs."""
    with connect(address) as client:
        info = client.scheduler_info(n_workers=-1)
        running = client.run(running_cluster_jobs, on_error="return")
        pids = client.run(os.getpid, on_error="return")
        waiting = client.run_on_scheduler(_queued)
    busy = {k for jobs in running.values() if isinstance(jobs, list) for k in jobs}
    queued = [k for k in waiting if k not in busy]
    workers = []
    for addr, w in sorted(info["workers"].items(), key=lambda kv: str(kv[1].get("name"))):
        jobs = running.get(addr)
        workers.append(
            {
                "name": str(w.get("name")),
                "address": addr,
                "pid": pids.get(addr) if isinstance(pids.get(addr), int) else None,
                "resources": w.get("resources", {}),
                "job": jobs[0] if isinstance(jobs, list) and jobs else None,
            }
        )
    return {"address": address, "workers": workers, "queued": queued}


def _queued(dask_scheduler: Any = None) -> list[str]:
    # A job "processing" on a worker may still wait there for its MACHINE resource.
    states = ("no-worker", "queued", "waiting", "processing")
    return sorted(str(k) for k, ts in dask_scheduler.tasks.items() if ts.state in states)


def _mark_closing(addresses: list[str], dask_scheduler: Any = None) -> list[str]:
    from distributed.core import Status

    s = dask_scheduler
    stimulus = f"fleetrun-drain-{time.time()}"
    found = []
    for a in addresses:
        ws = s.workers.get(a)
        if ws is None:
            continue
        s.handle_worker_status_change(Status.closing_gracefully, ws, stimulus)
        s.stream_comms[a].send(
            {"op": "worker-status-change", "status": ws.status.name, "stimulus_id": stimulus}
        )
        found.append(a)
    return found


def _executing(dask_worker: Any = None) -> int:
    return len(dask_worker.state.executing)


async def _retire(addresses: list[str], dask_scheduler: Any = None) -> list[str]:
    done = await dask_scheduler.retire_workers(
        workers=addresses, close_workers=True, remove=True, stimulus_id="fleetrun-drain"
    )
    return list(done)


def drain(address: str, workers: list[str], timeout: float = 3600.0) -> None:
    """Stop sending jobs to ``workers``, wait for the jobs they run, then retire them.

    Jobs only queued on a leaving worker (waiting for its ``MACHINE``) never
    started there: retiring moves them to another worker, which does not count
    as a failure.
    """
    with connect(address) as client:
        found = client.run_on_scheduler(_mark_closing, workers)
        deadline = time.monotonic() + timeout
        while found:
            busy = client.run(_executing, workers=found, on_error="return")
            if not any(isinstance(n, int) and n > 0 for n in busy.values()):
                break
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"worker(s) still ran a job after {timeout:g}s: "
                    + ", ".join(a for a, n in busy.items() if n)
                )
            time.sleep(0.1)
        if found:
            client.run_on_scheduler(_retire, found)


def scale_local(cluster: LocalCluster, n: int, timeout: float = 3600.0) -> dict[str, int]:
    """Grow or shrink a recorded local cluster to ``n`` workers (shrinking drains)."""
    live = [w for w in cluster.workers if w.alive()]
    cluster.forget({w.name for w in cluster.workers if not w.alive()})
    if n > len(live):
        cluster.add_workers(n - len(live))
    elif n < len(live):
        info = status(cluster.address)
        by_name = {w["name"]: w for w in info["workers"]}
        # Idle workers go first, then the newest.
        order = sorted(
            live, key=lambda w: (by_name.get(w.name, {}).get("job") is not None, -live.index(w))
        )
        leaving = order[: len(live) - n]
        drain(
            cluster.address,
            [by_name[w.name]["address"] for w in leaving if w.name in by_name],
            timeout,
        )
        stop_processes(leaving, 10.0)
        cluster.forget({w.name for w in leaving})
    cluster.save()
    return {"workers": len(cluster.workers)}


def down_local(cluster: LocalCluster, timeout: float = 3600.0) -> list[str]:
    """Drain every worker, stop all processes, remove the files; return what is left."""
    with contextlib.suppress(ClusterNotFoundError):
        info = status(cluster.address)
        drain(cluster.address, [w["address"] for w in info["workers"]], timeout)
    procs = [*cluster.workers, *([cluster.scheduler] if cluster.scheduler else [])]
    stop_processes(procs, 10.0)
    left = [f"process {p.name} (pid {p.pid})" for p in procs if p.alive()]
    cluster.workers = []
    cluster.scheduler = None
    left += [f"file {p}" for p in cluster.remove_files()]
    return left
