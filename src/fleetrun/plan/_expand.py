"""Expansion of a validated plan into its immutable task graph (selections: ``_select``).

One node per task instance, numbered in plan order: tasks in plan order, each
over its targets in fleet order. A ``needs`` entry becomes one ``Requirement``:

- fanned -> fanned (``auto``): the same target's instance (one node);
- anything -> unfanned: that task's single instance;
- unfanned -> fanned (``auto``) or ``X[*]``: every instance, all of them needed;
- quorum ``{task, at_least}``: every instance, ``at_least`` of them needed
  (``N``, or ``ceil(P% * count)``).

Everything here is linear in nodes + edges so that 100,000-node plans expand in
about a second. Requirements that are identical for many nodes (all-instance
fan-ins) share one object.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from fleetrun.errors import Diagnostic, PlanError
from fleetrun.plan._graph import Graph, Node, Requirement
from fleetrun.plan._model import Need, Plan, Task


def node_key(task: str, target: str | None) -> str:
    """The display key of an instance: ``task@target``, or ``task`` when unfanned."""
    return task if target is None else f"{task}@{target}"


def quorum_size(need: Need, count: int) -> int:
    """How many of ``count`` instances a quorum need waits for.

    ``percent`` is on a 0-100 scale (``"67%"`` -> 67.0) and rounds up; a tiny
    epsilon keeps ``50% of 24`` at 12 despite binary floating point.
    """
    if need.at_least is not None:
        return need.at_least
    if need.percent is not None:
        return max(0, math.ceil(need.percent * count / 100.0 - 1e-9))
    return count


def _need_error(task: Task, need: Need, message: str, fix: str) -> Diagnostic:
    return Diagnostic(
        need.location or task.location,
        message,
        key=f"tasks.{task.name}.needs",
        fix=fix,
    )


def _requirements(
    plan: Plan,
    first_id: dict[str, int],
    shared: dict[tuple[str, int], Requirement],
    singles: list[Requirement | None],
    problems: list[Diagnostic],
) -> list[tuple[Requirement, ...]]:
    """The ``requires`` tuple of every node, in node order."""
    out: list[tuple[Requirement, ...]] = []

    def single(node_id: int, dep: str) -> Requirement:
        # One Requirement per depended-on node, shared by all its same-target users.
        req = singles[node_id]
        if req is None:
            req = singles[node_id] = Requirement(dep, (node_id,), 1)
        return req

    def every(dep: Task, at_least: int) -> Requirement:
        key = (dep.name, at_least)
        req = shared.get(key)
        if req is None:
            start = first_id[dep.name]
            count = 1 if dep.targets is None else len(dep.targets)
            req = shared[key] = Requirement(dep.name, tuple(range(start, start + count)), at_least)
        return req

    for task in plan.tasks.values():
        targets: Sequence[str | None] = (None,) if task.targets is None else task.targets
        # Per task, resolve each need once into either a fixed Requirement or a
        # same-target lookup table (target name -> node id).
        resolved: list[tuple[Need, Requirement | dict[str, int]]] = []
        for need in task.needs:
            dep = plan.tasks.get(need.task)
            if dep is None:
                problems.append(
                    _need_error(
                        task,
                        need,
                        f"needs unknown task {need.task!r}",
                        "name a task defined under 'tasks'",
                    )
                )
                continue
            count = 1 if dep.targets is None else len(dep.targets)
            if need.mode == "quorum":
                at_least = quorum_size(need, count)
                if at_least > count:
                    problems.append(
                        _need_error(
                            task,
                            need,
                            f"quorum of {at_least} but {need.task!r} has only {count} "
                            f"instance{'s' if count != 1 else ''}",
                            f"use at_least <= {count} or a percentage",
                        )
                    )
                    continue
                resolved.append((need, every(dep, at_least)))
            elif dep.targets is None:
                resolved.append((need, single(first_id[dep.name], dep.name)))
            elif need.mode == "all" or task.targets is None:
                resolved.append((need, every(dep, count)))
            else:
                start = first_id[dep.name]
                table = {t: start + i for i, t in enumerate(dep.targets)}
                missing = [t for t in task.targets if t not in table]
                if missing:
                    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
                    problems.append(
                        _need_error(
                            task,
                            need,
                            f"{node_key(task.name, missing[0])}{more} needs {dep.name!r} on the "
                            f"same target, but {dep.name!r} does not run on {missing[0]!r}",
                            f"fan {dep.name!r} out over a group containing these targets, "
                            f"or write '{dep.name}[*]' to wait for all its instances",
                        )
                    )
                    continue
                resolved.append((need, table))
        if all(isinstance(item, Requirement) for _, item in resolved):
            # No same-target needs: every instance has the same requirements; share them.
            common = tuple(item for _, item in resolved if isinstance(item, Requirement))
            out.extend(common for _ in targets)
            continue
        for target in targets:
            reqs: list[Requirement] = []
            for need, item in resolved:
                if isinstance(item, Requirement):
                    reqs.append(item)
                else:
                    # Same-target tables exist only for fanned tasks, and cover every target.
                    assert target is not None
                    reqs.append(single(item[target], need.task))
            out.append(tuple(reqs))
    return out


def _cycle(requires: list[tuple[Requirement, ...]], left: set[int]) -> list[int]:
    """One cycle among ``left`` (nodes Kahn's algorithm could not order), first to last.

    Every node left has an unordered requirement, itself left, so walking
    requirements from any of them must come back to a node already seen.
    """
    start = min(left)
    seen: dict[int, int] = {}
    path: list[int] = []
    node = start
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(d for r in requires[node] for d in r.nodes if d in left)
    # path[seen[node]:] needs ... needs node again; print it in "needs" order.
    return [*path[seen[node] :], node]


def topo_layers(
    n: int, requires: Sequence[tuple[Requirement, ...]], dependents: Sequence[Sequence[int]]
) -> tuple[list[list[int]], set[int]]:
    """Kahn's algorithm by layers: each node lands one layer after its latest requirement.

    Returns the layers (ids ascending within each) and the nodes that could not be
    ordered (non-empty exactly when there is a cycle).
    """
    indegree = [0] * n
    for j in range(n):
        reqs = requires[j]
        if len(reqs) == 1:
            indegree[j] = len(reqs[0].nodes)
        elif reqs:
            indegree[j] = len({d for r in reqs for d in r.nodes})
    layer = [j for j in range(n) if indegree[j] == 0]
    layers: list[list[int]] = []
    placed = 0
    while layer:
        layers.append(layer)
        placed += len(layer)
        nxt: list[int] = []
        for i in layer:
            for j in dependents[i]:
                indegree[j] -= 1
                if indegree[j] == 0:
                    nxt.append(j)
        nxt.sort()
        layer = nxt
    left = {j for j in range(n) if indegree[j] > 0} if placed < n else set()
    return layers, left


def longest_paths(
    order: Iterable[int], dependents: Sequence[Sequence[int]], durations: Sequence[float]
) -> list[float]:
    """``rank[i]``: longest duration path from the start of i to the end of the graph.

    ``order`` must be topological; it is walked backwards. A quorum requirement
    counts as needing all its nodes, which makes rank an upper bound there.
    """
    rank = [0.0] * len(durations)
    for i in reversed(list(order)):
        best = 0.0
        for j in dependents[i]:
            if rank[j] > best:
                best = rank[j]
        rank[i] = durations[i] + best
    return rank


def expand(plan: Plan) -> Graph:
    """Expand ``plan`` into its immutable task graph.

    Raises ``PlanError`` for a need on an unknown task, a same-target need whose
    target the needed task does not run on, an impossible quorum, or a cycle
    (the message prints one cycle as ``a@x -> b@x -> a@x``, read as "needs").
    """
    first_id: dict[str, int] = {}
    n = 0
    for task in plan.tasks.values():
        first_id[task.name] = n
        n += 1 if task.targets is None else len(task.targets)

    problems: list[Diagnostic] = []
    singles: list[Requirement | None] = [None] * n
    requires = _requirements(plan, first_id, {}, singles, problems)
    if problems:
        raise PlanError(problems)

    nodes: list[Node] = []
    append = nodes.append
    for task in plan.tasks.values():
        estimate = task.estimate if task.estimate is not None else 1.0
        name, phase = task.name, task.phase
        if task.targets is None:
            i = len(nodes)
            append(Node(i, name, name, None, phase, estimate, requires[i]))
        else:
            for t in task.targets:
                i = len(nodes)
                append(Node(i, f"{name}@{t}", name, t, phase, estimate, requires[i]))

    dependents_l: list[list[int]] = [[] for _ in range(n)]
    for j, reqs in enumerate(requires):
        if len(reqs) == 1:
            for d in reqs[0].nodes:
                dependents_l[d].append(j)
        elif reqs:
            # The same node may appear in two requirements (``X`` and ``X[*]``): list j once.
            for d in sorted({d for r in reqs for d in r.nodes}):
                dependents_l[d].append(j)

    layers, left = topo_layers(n, requires, dependents_l)
    if left:
        cycle = _cycle(requires, left)
        first = plan.tasks[nodes[cycle[0]].task]
        shown = " -> ".join(nodes[i].key for i in cycle)
        tasks_in = " -> ".join(nodes[i].task for i in cycle)
        raise PlanError(
            [
                Diagnostic(
                    first.location,
                    f"needs form a cycle: {shown} (each needs the next)",
                    key=f"tasks.{first.name}.needs",
                    fix=f"remove one of the needs along {tasks_in}",
                )
            ]
        )

    estimates = [node.estimate for node in nodes]
    order = [i for layer in layers for i in layer]
    rank = longest_paths(order, dependents_l, estimates)
    dependents = tuple(tuple(d) for d in dependents_l)
    return Graph(
        plan=plan,
        nodes=tuple(nodes),
        dependents=dependents,
        waves=tuple(tuple(layer) for layer in layers),
        rank=tuple(rank),
        critical_path=critical_path(rank, dependents),
        index={node.key: node.id for node in nodes},
    )


def critical_path(rank: Sequence[float], dependents: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """One longest path: from the highest-ranked node, follow the highest-ranked dependent.

    Ties go to the lowest id, so the answer is stable.
    """
    if not rank:
        return ()
    node = max(range(len(rank)), key=lambda i: (rank[i], -i))
    path = [node]
    while dependents[node]:
        node = max(dependents[node], key=lambda j: (rank[j], -j))
        path.append(node)
    return tuple(path)


def dependents_closure(graph: Graph, nodes: Iterable[int]) -> frozenset[int]:
    """``nodes`` plus every node that transitively depends on them (what ``retry`` reruns)."""
    seen = set(nodes)
    stack = list(seen)
    while stack:
        for j in graph.dependents[stack.pop()]:
            if j not in seen:
                seen.add(j)
                stack.append(j)
    return frozenset(seen)
