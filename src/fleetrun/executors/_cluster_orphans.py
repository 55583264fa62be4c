"""``ClusterOrphanFinder``: the cluster jobs that a dead run left running, found and ended."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from fleetrun.executors import _cluster_job
from fleetrun.executors._contract import Orphan, RecordedAttempt
from fleetrun.executors._dask_local import quiet_dask_logs

MAX_REQUEUE = 10
"""How many times a job that waited in the queue of a worker that died is
submitted again (as ``KEY~1`` ... ``KEY~10``) before its attempt gives up."""


def _client_class() -> Any:
    """``distributed.Client`` (not annotated), its logs kept off the console."""
    import distributed

    quiet_dask_logs()
    return distributed.Client


class ClusterOrphanFinder:
    """Finds and ends the cluster jobs a dead run left behind.

    A recorded handle names the scheduler and the job key; when the scheduler
    is reachable, a job that a worker still runs is an orphan (the scheduler
    itself drops the queued jobs of a client that went away). ``end`` ends its
    process group on that worker.
    """

    kind = "cluster"

    def __init__(self, connect_timeout: float = 5.0) -> None:
        self.connect_timeout = connect_timeout

    async def find(
        self, attempts: Sequence[RecordedAttempt], dead_runs: Sequence[str]
    ) -> list[Orphan]:
        """Orphans among ``attempts`` whose scheduler still knows their job."""
        by_host: dict[str, list[RecordedAttempt]] = {}
        for a in attempts:
            if a.handle.kind == self.kind and a.handle.job:
                by_host.setdefault(a.handle.host, []).append(a)
        found: list[Orphan] = []
        for host, recs in by_host.items():
            known = await self._known(host)
            found += [
                Orphan(r.run_id, r.key, r.attempt, r.handle)
                for r in recs
                if any(k == r.handle.job or k.startswith(f"{r.handle.job}~") for k in known)
            ]
        return found

    async def _known(self, address: str) -> set[str]:
        Client = _client_class()
        try:
            client = await Client(
                address, asynchronous=True, timeout=self.connect_timeout, set_as_default=False
            )
        except (OSError, TimeoutError):
            return set()
        try:
            # The scheduler forgets a dead client's jobs, but a worker's thread goes on
            # running one: ask the workers what they run.
            running = await client.run(_cluster_job.running_jobs, on_error="ignore")
            return {k for keys in running.values() if isinstance(keys, list) for k in keys}
        finally:
            await client.close()

    async def end(self, orphans: Sequence[Orphan], grace: float) -> None:
        """End each orphan's process group on its worker (SIGTERM, grace, SIGKILL)."""
        Client = _client_class()
        by_host: dict[str, list[str]] = {}
        for o in orphans:
            if o.handle.job:
                # A job submitted again after its queue's worker died runs as KEY~N.
                jobs = [o.handle.job, *(f"{o.handle.job}~{i}" for i in range(1, MAX_REQUEUE + 1))]
                by_host.setdefault(o.handle.host, []).extend(jobs)
        for host, keys in by_host.items():
            try:
                client = await Client(
                    host, asynchronous=True, timeout=self.connect_timeout, set_as_default=False
                )
            except (OSError, TimeoutError):
                continue
            try:
                await asyncio.gather(
                    *(client.run(_cluster_job.end_job, k, grace, on_error="ignore") for k in keys)
                )
            finally:
                await client.close()
