"""Selections of a graph: ``--targets``/``--tasks``, and what they pull in beyond the names.

Like ``terraform -target``, a selection runs the named instances and
everything they need. An operator must see the second part before anything
runs: ``selection_closure`` says, for every instance pulled in beyond the
named ones, which instance needs it and how (same target, all instances, a
quorum), so that ``plan`` can show it and ``apply`` can print "also runs" or
refuse with ``--only``.

Names: ``--targets`` values are split on commas for convenience, but a value
that is exactly a known name is taken as it is, so a target whose name holds
a comma stays selectable (``split_names``).
"""

from __future__ import annotations

import difflib
from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence

from fleetrun.errors import UsageError
from fleetrun.plan._graph import Graph, Requirement
from fleetrun.plan._model import Plan
from fleetrun.plan._pattern import select_targets, split_terms
from fleetrun.textwidth import display_width, ljust

_SHOWN = 50
"""The text view lists this many pulled-in instances, then a count."""


def split_names(values: Iterable[str], known: Collection[str] = ()) -> list[str] | None:
    """Names from repeatable, comma-separated ``--targets``/``--tasks`` values; None if none.

    A value that is exactly one of ``known`` (for example a target named
    ``eu,west``) is kept whole; any other value is split on commas and each
    piece stripped. Empty pieces are dropped.
    """
    names: list[str] = []
    for value in values:
        if value in known:
            names.append(value)
        elif value.strip() in known:
            names.append(value.strip())
        else:
            names.extend(n.strip() for n in value.split(",") if n.strip())
    return names or None


_LISTED = 8
"""An unknown name's error lists this many of the valid names, then a count."""


def _names_error(kind: str, unknown: str, known: Iterable[str]) -> UsageError:
    """``unknown target 'x' (did you mean 'y'?)``, or with the valid names listed."""
    names = list(known)
    close = difflib.get_close_matches(unknown, names, n=1)
    if close:
        return UsageError(f"unknown {kind} {unknown!r} (did you mean {close[0]!r}?)")
    shown = ", ".join(names[:_LISTED]) + (
        f", ... ({len(names)} in all)" if len(names) > _LISTED else ""
    )
    return UsageError(f"unknown {kind} {unknown!r}; known: {shown or 'none'}")


def targets_named(plan: Plan, names: Iterable[str]) -> set[str]:
    """The targets that ``names`` stand for: targets, groups, ``all``, and the
    patterns of ``plan._pattern`` (``web*``, ``!admin``, ``a:b``, ``a:&b``,
    ``geo==europe``), one selection for ``apply``, ``plan`` and ``exec``.

    Raises ``UsageError`` for a name that is none of them, with the closest
    name or the valid ones, and for a pattern that is wrong."""
    return select_targets(plan, split_terms(names, {*plan.targets, *plan.groups}))


def _matched(graph: Graph, targets: Sequence[str] | None, tasks: Sequence[str] | None) -> list[int]:
    """Ids of the instances the names select by themselves, ascending."""
    plan = graph.plan
    target_set = targets_named(plan, targets) if targets is not None else None
    task_set: set[str] | None = None
    if tasks is not None:
        for name in tasks:
            if name not in plan.tasks:
                raise _names_error("task", name, plan.tasks)
        task_set = set(tasks)
    matched = [
        node.id
        for node in graph.nodes
        if (task_set is None or node.task in task_set)
        and (
            target_set is None
            or (node.target in target_set if node.target is not None else task_set is not None)
        )
    ]
    if not matched:
        raise UsageError(
            "no task instance matches the selection "
            f"(targets: {', '.join(targets or ['any'])}; tasks: {', '.join(tasks or ['any'])})"
        )
    return matched


def _how(req: Requirement) -> str:
    if req.at_least < len(req.nodes):
        return f" (quorum of {req.task}: at least {req.at_least} of {len(req.nodes)})"
    if len(req.nodes) > 1:
        return f" (all {len(req.nodes)} instances of {req.task})"
    return ""


def selection_closure(
    graph: Graph, targets: Sequence[str] | None = None, tasks: Sequence[str] | None = None
) -> tuple[frozenset[int], dict[int, str]]:
    """The selected instances, and why each one beyond the named ones is included.

    Returns ``(nodes, extras)``: ``nodes`` is what ``select`` returns (the
    named instances plus everything they need, transitively); ``extras`` maps
    each id in ``nodes`` that the names did not match to a reason such as
    ``needed by multicall (quorum of besu: at least 5 of 6)``. The instance
    named in a reason is itself named or in ``extras``. Unknown names, or a
    selection that matches nothing, raise ``UsageError``.
    """
    matched = _matched(graph, targets, tasks)
    seen = set(matched)
    extras: dict[int, str] = {}
    queue = deque(matched)
    nodes = graph.nodes
    while queue:
        node = nodes[queue.popleft()]
        for req in node.requires:
            how: str | None = None
            for d in req.nodes:
                if d not in seen:
                    seen.add(d)
                    if how is None:
                        how = f"needed by {node.key}{_how(req)}"
                    extras[d] = how
                    queue.append(d)
    return frozenset(seen), extras


def select(
    graph: Graph, targets: Sequence[str] | None = None, tasks: Sequence[str] | None = None
) -> frozenset[int]:
    """The instances matching ``targets`` and ``tasks``, plus everything they need.

    Like ``terraform -target``. ``targets`` may name targets or groups (``all``
    included); ``tasks`` names tasks. With both, an instance must match both; an
    unfanned instance matches a target filter only when its task is named in
    ``tasks``. ``None`` means no filter on that side. Unknown names, or a
    selection that matches nothing, raise ``UsageError``. ``selection_closure``
    also says why each instance beyond the named ones is included.
    """
    return selection_closure(graph, targets, tasks)[0]


def selection_lines(graph: Graph, nodes: Collection[int], extras: Mapping[int, str]) -> list[str]:
    """The ``selection`` section of ``fleetrun plan --targets/--tasks``."""
    named = len(nodes) - len(extras)
    lines = [
        f"selection: {named} named instance{'s' if named != 1 else ''}, "
        f"{len(extras)} more that they need, {len(nodes)} of {len(graph.nodes)} in all"
    ]
    named_ids = sorted(i for i in nodes if i not in extras)
    shown = ", ".join(graph.nodes[i].key for i in named_ids[:_SHOWN])
    more = f", ... {len(named_ids) - _SHOWN} more" if len(named_ids) > _SHOWN else ""
    lines.append(f"  named: {shown}{more}")
    if not extras:
        return lines
    lines.append("  also runs (apply --only would refuse them):")
    order = sorted(extras)
    width = max(display_width(graph.nodes[i].key) for i in order[:_SHOWN])
    for i in order[:_SHOWN]:
        lines.append(f"    {ljust(graph.nodes[i].key, width)}  {extras[i]}")
    if len(order) > _SHOWN:
        lines.append(f"    ... {len(order) - _SHOWN} more (--format json lists them all)")
    return lines
