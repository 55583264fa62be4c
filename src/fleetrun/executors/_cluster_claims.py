"""The scheduler's side of a cluster job's start: one call that makes a job run once.

``ClusterExecutor`` installs ``install`` on the scheduler when it connects
(``Client.run_on_scheduler``). The function travels by value (``cloudpickle``:
this module is registered to be pickled by value and imports only the
standard library), so a scheduler started elsewhere needs no fleetrun. It adds
one handler, ``fleetrun_start``, that a job calls (``_cluster_job``) from its
worker before its command starts, and waits for:

1. ``before``, the small result of the job that ran on that worker just
   before, is published on its topic unless the scheduler has already heard
   that job finish (the worker sent its "result" event ahead of "task
   finished"): so a job that kills its worker at once cannot take the result
   of the one before it along;
2. ``claim``, unique to one submission of a job, is taken; a claim taken
   before means Dask is running the task again (it recomputes a finished job
   whose result died with its worker, or a scheduler whose
   ``allowed-failures`` is above 0 re-runs a job whose worker died): the
   answer is False and the job runs nothing;
3. the job's "started" event is published on its topic, before its command
   can start, so the client has it before it can hear that the worker died.

The answer is True when the command may start. A scheduler without the
handler answers None (its log says "No handler fleetrun_start"): the job
then runs as Dask would, unclaimed. Claims whose task the scheduler has
forgotten (nothing can run it again) are dropped every ``SWEEP_EVERY`` calls.
"""

from __future__ import annotations

from typing import Any

HANDLER = "fleetrun_start"
SWEEP_EVERY = 1024
STARTED = -1  # the "seq" of a "started" event (as ``_cluster_job.STARTED``)


def install(dask_scheduler: Any = None) -> bool:
    """Add the ``fleetrun_start`` handler to this scheduler (once); True when it is there."""
    s = dask_scheduler
    if HANDLER in s.handlers:
        return True
    claims: dict[str, str] = {}  # claim -> the key of its task
    calls = [0]

    def fleetrun_start(topic: str, job: str, claim: str, before: list[Any] | None = None) -> bool:
        if before is not None:
            before_topic, before_job, before_msg = before
            ts = s.tasks.get(before_job)
            if ts is not None and ts.state == "processing":  # its end has not come yet
                s.log_event(before_topic, before_msg)
        if claim in claims:
            return False
        claims[claim] = job
        calls[0] += 1
        if calls[0] % SWEEP_EVERY == 0:
            for c, key in list(claims.items()):
                if key not in s.tasks:
                    del claims[c]
        s.log_event(topic, {"job": job, "seq": STARTED, "data": b""})
        return True

    s.handlers[HANDLER] = fleetrun_start
    return True
