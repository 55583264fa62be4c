"""Reading a plan's ``cluster:`` section (a task's ``resources`` are ``TaskSpec``'s)."""

from __future__ import annotations

from fleetrun.plan._fields import Ctx
from fleetrun.plan._model import ClusterSection
from fleetrun.plan._spec import ClusterSpec
from fleetrun.plan._validate import validate_node
from fleetrun.plan._yaml import YNode, to_python


def read_cluster(ctx: Ctx, node: YNode) -> ClusterSection:
    """The plan's ``cluster:`` section (``address``, ``workers``), checked by ``ClusterSpec``
    (an address by the rule ``--cluster`` follows too)."""
    if to_python(node) is None:  # every key commented out: as if left out
        return ClusterSection()
    spec = validate_node(ctx, ClusterSpec, node, "cluster")
    if spec is None:
        return ClusterSection()
    address = spec.address
    if address is not None and "://" not in address:
        address = "tcp://" + address
    return ClusterSection(address=address, workers=spec.workers or 2)
