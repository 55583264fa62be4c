"""Reading a plan's compute-cluster keys: the ``cluster:`` section, a task's ``resources``."""

from __future__ import annotations

import re

from fleetrun.plan._fields import Ctx, join
from fleetrun.plan._model import ClusterSection
from fleetrun.plan._spec import ClusterSpec, keys_of
from fleetrun.plan._yaml import YNode, YScalar
from fleetrun.runs_on import scheduler_address_problem

CLUSTER_KEYS = keys_of(ClusterSpec)
RESOURCE_NAME = re.compile(r"^[A-Za-z_][\w.-]*$")


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


def read_resources(ctx: Ctx, node: YNode, key: str) -> dict[str, float]:
    """A task's ``resources``: resource name -> amount above zero (``{GPU: 1}``)."""
    out: dict[str, float] = {}
    m = ctx.mapping(node, key)
    for name, (knode, value) in m.entries.items() if m else ():
        sub = join(key, name)
        if not RESOURCE_NAME.match(name):
            ctx.error(knode, sub, f"{name!r} is not a resource name", "use letters, digits, '_'")
            continue
        v = value.value if isinstance(value, YScalar) else None
        if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
            shown = repr(v) if isinstance(value, YScalar) else "a collection"
            ctx.error(value, sub, f"must be a number above zero, got {shown}", "write e.g. 1")
            continue
        out[name] = float(v)
    return out
