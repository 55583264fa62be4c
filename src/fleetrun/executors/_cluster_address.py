"""Where the compute cluster is: the scheduler address of a run, from ``--cluster``,
``FLEETRUN_CLUSTER`` or the plan, checked before anything connects to it."""

from __future__ import annotations

import os
from collections.abc import Mapping

from fleetrun.errors import UsageError
from fleetrun.names import CLUSTER_ENV
from fleetrun.runs_on import scheduler_address_problem


def resolve_address(
    flag: str | None, plan_address: str | None, env: Mapping[str, str] | None = None
) -> str | None:
    """The scheduler for a run: ``--cluster``, else ``FLEETRUN_CLUSTER``, else the
    plan's ``cluster.address``; None means an embedded local cluster.
    ``HOST:PORT`` gets ``tcp://`` in front. A malformed address raises
    ``UsageError`` (exit 2) naming where it came from and its form."""
    env = os.environ if env is None else env
    where = "--cluster"
    address = flag
    if not address:
        where, address = f"${CLUSTER_ENV}", env.get(CLUSTER_ENV)
    if not address:
        where, address = "the plan's cluster.address", plan_address
    if not address:
        return None
    problem = scheduler_address_problem(address)
    if problem is not None:
        raise UsageError(
            f"{where}: {address!r} is not a scheduler address ({problem}); "
            "give HOST:PORT or tcp://HOST:PORT, e.g. tcp://10.0.0.5:8786"
        )
    return address if "://" in address else f"tcp://{address}"
