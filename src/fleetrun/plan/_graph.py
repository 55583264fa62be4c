"""The expanded task graph: one node per task instance, immutable.

Nodes are numbered 0..n-1 in plan order (task order, then fleet order), which
is also a valid tie-break order for scheduling. Edges are stored as integer
tuples so that 100,000-node graphs stay small.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fleetrun.plan._model import Plan, Target, Task


@dataclass(frozen=True, slots=True)
class Requirement:
    """A group of dependencies of one node that must be met together.

    The node may start once ``at_least`` of ``nodes`` have succeeded; it is
    skipped as soon as that can no longer happen. A plain ``needs`` entry has
    ``at_least == len(nodes)``; a quorum need has fewer. ``single`` is True
    when the entry resolved to exactly one instance (same target or unfanned),
    which is what makes ``{{ tasks.<task>.outputs.<key> }}`` unambiguous.
    """

    task: str
    nodes: tuple[int, ...]
    at_least: int

    @property
    def single(self) -> bool:
        return len(self.nodes) == 1


@dataclass(frozen=True, slots=True)
class Node:
    """One task instance: ``task@target``, or just ``task`` when unfanned."""

    id: int
    key: str
    task: str
    target: str | None
    phase: str | None
    estimate: float
    requires: tuple[Requirement, ...]


@dataclass(frozen=True, slots=True)
class Graph:
    """An expanded plan.

    - ``dependents[i]``: ids of nodes with a requirement on node i.
    - ``waves``: topological layers (wave 0 has no dependencies).
    - ``rank[i]``: longest path from the start of node i to the end of the
      graph, by estimate (used to start the critical path first).
    - ``critical_path``: node ids of one longest path, first to last.
    """

    plan: Plan
    nodes: tuple[Node, ...]
    dependents: tuple[tuple[int, ...], ...]
    waves: tuple[tuple[int, ...], ...]
    rank: tuple[float, ...]
    critical_path: tuple[int, ...]
    index: Mapping[str, int]

    def task_of(self, node: Node) -> Task:
        """The plan task this node is an instance of."""
        return self.plan.tasks[node.task]

    def target_of(self, node: Node) -> Target | None:
        """The target this node runs for, or None when unfanned."""
        return None if node.target is None else self.plan.targets[node.target]

    @property
    def critical_path_length(self) -> float:
        """Sum of estimates along the critical path."""
        return sum(self.nodes[i].estimate for i in self.critical_path)

    @property
    def total_work(self) -> float:
        """Sum of all estimates: what a sequential run would take."""
        return sum(n.estimate for n in self.nodes)

    @property
    def cluster_work(self) -> float:
        """Sum of the estimates of ``runs_on: cluster`` instances (one worker each)."""
        tasks = self.plan.tasks
        return sum(n.estimate for n in self.nodes if tasks[n.task].runs_on == "cluster")

    def lower_bound(self, parallelism: int | None) -> float:
        """Makespan lower bound ``max(critical path, work / parallelism, cluster
        work / the cluster's workers)``."""
        bound = self.critical_path_length
        if parallelism:
            bound = max(bound, self.total_work / parallelism)
        return max(bound, self.cluster_work / self.plan.cluster.workers)
