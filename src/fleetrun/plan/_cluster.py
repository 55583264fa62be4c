"""Reading a plan's ``cluster:`` section (a task's ``resources`` are ``TaskSpec``'s)."""

from __future__ import annotations

from fleetrun.plan._fields import Ctx, join
from fleetrun.plan._model import ClusterSection
from fleetrun.plan._spec import ClusterSpec, keys_of
from fleetrun.plan._yaml import YNode
from fleetrun.runs_on import scheduler_address_problem

CLUSTER_KEYS = keys_of(ClusterSpec)


def read_cluster(ctx: Ctx, node: YNode) -> ClusterSection:
    """The plan's ``cluster:`` section (``address``, ``workers``)."""
    m = ctx.mapping(node, "cluster")
    if m is None:
        return ClusterSection()
    address: str | None = None
    workers = 2
    for k, v in ctx.items(m, "cluster", CLUSTER_KEYS):
        key = join("cluster", k)
        if k == "address":
            address = ctx.string(v, key)
            problem = None if address is None else scheduler_address_problem(address)
            if problem is not None:
                ctx.error(
                    v,
                    key,
                    f"{address!r} is not a scheduler address ({problem})",
                    "write tcp://HOST:PORT (or HOST:PORT), or remove it to use a local cluster",
                )
                address = None
        else:
            workers = ctx.integer(v, key, minimum=1) or workers
    if address is not None and "://" not in address:
        address = "tcp://" + address
    return ClusterSection(address=address, workers=workers)
