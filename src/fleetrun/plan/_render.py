"""Views of an expanded graph for ``fleetrun plan``: text, JSON, Graphviz dot, Mermaid.

Each function returns a string; printing is the CLI's business. The text view
groups instances by task so that a 24-region plan stays one screen long; the
other views are complete, whatever the size of the graph.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from fractions import Fraction
from typing import Any

from fleetrun.durations import format_duration
from fleetrun.plan._graph import Graph
from fleetrun.plan._model import Rollout
from fleetrun.plan._rollout import allowed_failures, percent_text, wave_targets
from fleetrun.plan._simulate import MODES, simulate
from fleetrun.plan._summary import task_rows
from fleetrun.textwidth import display_width, ljust

_SHOWN = 15
"""The text view shows this many levels, rollout waves and critical-path steps at
each end of a longer list."""

_NAMES_SHOWN = 5
"""The text view names this many targets of a rollout wave (and counts the rest)."""

_WIDTH = 96
"""The text view's lines stay this short where it can shorten them."""

JSON_FORMAT = "fleetrun.plan/2"
"""The ``format`` field of the JSON view; bumped on an incompatible change."""


def makespans(graph: Graph, parallelism: int | None, rollout: bool = True) -> dict[str, float]:
    """Estimated makespan per mode at ``parallelism``, plus ``lower_bound``.

    ``rollout``: held by the plan's rollout waves, as ``apply`` runs it (no
    effect on a plan without ``rollout``).
    """
    out = {mode: simulate(graph, mode, parallelism, rollout=rollout) for mode in MODES}
    out["lower_bound"] = graph.lower_bound(parallelism)
    return out


def _size_text(size: str | int | Fraction) -> str:
    """A ``rollout.waves`` entry as the plan writes it: ``canary``, ``8``, ``100%``."""
    if isinstance(size, str):
        return size
    if isinstance(size, int):
        return str(size)
    return percent_text(size)


def max_failed_value(rollout: Rollout) -> int | str:
    """``max_failed`` as the plan writes it: a count (``2``) or a percentage (``"10%"``)."""
    m = rollout.max_failed
    if isinstance(m, Fraction):
        return percent_text(m) if rollout.max_failed_fraction else allowed_failures(rollout, 0)
    return m


def rollout_lines(graph: Graph) -> list[str]:
    """The ``rollout`` section: each wave with its targets; empty without a rollout."""
    rollout = graph.plan.rollout
    if rollout is None:
        return []
    waves = wave_targets(graph.plan)
    limit = max_failed_value(rollout)
    if rollout.max_failed_fraction:
        failed = f"max_failed {limit} of each wave"
    elif limit:
        failed = f"max_failed {limit} per wave"
    else:
        failed = "max_failed 0: any failed target halts it"
    pause = "pause: each next wave waits for fleetrun promote" if rollout.pause else "no pause"
    sizes = ", ".join(_size_text(s) for s in rollout.waves)
    fleet = sum(len(w) for w in waves)
    lines = [
        f"rollout ({_plural(len(waves), 'wave')} over {_plural(fleet, 'target')}, sizes [{sizes}])",
        f"  {failed}; {pause}",
    ]
    digits = len(str(max((len(w) for w in waves), default=0)))
    number = max(3, len(str(len(waves))))
    hidden = len(waves) - 2 * _SHOWN
    for w, targets in enumerate(waves, 1):
        if hidden > 0 and _SHOWN < w <= len(waves) - _SHOWN:
            if w == _SHOWN + 1:
                lines.append(f"  ... {hidden} more waves (--format json lists them all)")
            continue
        count = f"{len(targets):>{digits}} target{'s' if len(targets) != 1 else ' '}"
        line = f"  wave {w:<{number}} {count}  {targets[0]}"
        shown = 1
        # More names while the line (and what says how many are left) fits.
        for name in targets[1:_NAMES_SHOWN]:
            if len(line) + len(name) + 2 + len(", ... (999 more)") > _WIDTH:
                break
            line += f", {name}"
            shown += 1
        if shown < len(targets):
            line += f", ... ({len(targets) - shown} more)"
        lines.append(line)
    free = sum(1 for node in graph.nodes if node.target is None)
    if free:
        lines.append(
            f"  {_plural(free, 'instance')} of tasks not fanned over targets: not held by waves"
        )
    return lines


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def _task_counts(graph: Graph, ids: Iterable[int]) -> list[tuple[str, int]]:
    """``(task, instances)`` in plan (first id) order."""
    counts = Counter(graph.nodes[i].task for i in ids)
    order = {name: i for i, name in enumerate(graph.plan.tasks)}
    return sorted(counts.items(), key=lambda kv: order[kv[0]])


def _counts_text(counts: Sequence[tuple[str, int]], indent: int = 0, width: int = 96) -> str:
    """``infra (24), monitoring``, wrapped to ``width`` with continuation lines at ``indent``."""
    lines: list[str] = []
    line = ""
    for task, n in counts:
        item = f"{task} ({n})" if n != 1 else task
        if line and indent + len(line) + len(item) + 2 > width:
            lines.append(line + ",")
            line = item
        else:
            line = f"{line}, {item}" if line else item
    lines.append(line)
    return ("\n" + " " * indent).join(lines)


def phases_of(graph: Graph) -> list[tuple[str | None, list[int]]]:
    """Node ids per declared phase in phase order; tasks without a phase last (None)."""
    by_phase: dict[str | None, list[int]] = {p: [] for p in graph.plan.phases}
    for node in graph.nodes:
        by_phase.setdefault(node.phase, []).append(node.id)
    return [(p, ids) for p, ids in by_phase.items() if ids or p is not None]


def task_lines(graph: Graph) -> list[str]:
    """The ``tasks`` section: every task, its instance count, group and needs.

    Quorums read ``at least 5 of 6 (67%)``; a task with no instances is
    marked, since ``apply`` refuses it unless it says ``allow_empty: true``.
    """
    rows = task_rows(graph)
    lines = ["tasks (instances, for_each, needs)"]
    width = max((display_width(r.task) for r in rows), default=0)
    digits = max((len(str(r.instances)) for r in rows), default=1)
    for r in rows:
        parts = [f"  {ljust(r.task, width)}  {str(r.instances).rjust(digits)}"]
        if r.for_each is not None:
            parts.append(f"for_each {r.for_each}")
        if r.needs:
            parts.append("needs " + ", ".join(r.needs))
        if r.empty:
            parts.append(
                "(allowed to be empty)"
                if r.allow_empty
                else "! no target matches: apply refuses this task"
            )
        lines.append("  ".join(parts))
    return lines


def render_text(graph: Graph, parallelism: int | None) -> str:
    """The readable overview: sizes, phases, waves, critical path, makespan estimates."""
    plan = graph.plan
    lines: list[str] = []
    where = f" ({plan.path})" if plan.path else ""
    lines.append(f"plan {plan.name}{where}")
    lines.append(
        f"  {_plural(len(plan.targets), 'target')}, {_plural(len(plan.tasks), 'task')}, "
        f"{_plural(len(graph.nodes), 'task instance')}"
    )

    phases = phases_of(graph)
    if phases:
        lines += ["", "phases"]
        width = max(display_width(p or "(no phase)") for p, _ in phases)
        for phase, ids in phases:
            name = ljust(phase or "(no phase)", width)
            counts = _counts_text(_task_counts(graph, ids), indent=width + 4)
            lines.append(f"  {name}  {counts or '-'}")

    lines += ["", *task_lines(graph)]

    levels = graph.waves  # dependency levels (not rollout waves)
    lines += ["", f"levels ({len(levels)}; a level starts when what it needs has finished)"]
    for n, level in enumerate(levels, 1):
        hidden = len(levels) - 2 * _SHOWN
        if hidden > 0 and _SHOWN < n <= len(levels) - _SHOWN:
            if n == _SHOWN + 1:
                lines.append(f"  ... {hidden} more levels (--format json lists them all)")
            continue
        lines.append(
            f"  level {n:<3} {len(level):>6} instance{'s' if len(level) != 1 else ' '}  "
            f"{_counts_text(_task_counts(graph, level), indent=30)}"
        )

    rollout = rollout_lines(graph)
    if rollout:
        lines += ["", *rollout]

    lines += ["", f"critical path ({format_duration(graph.critical_path_length, compact=True)})"]
    width = max((display_width(graph.nodes[i].key) for i in graph.critical_path), default=0)
    path = graph.critical_path
    hidden = len(path) - 2 * _SHOWN
    for n, i in enumerate(path):
        if hidden > 0 and _SHOWN <= n < len(path) - _SHOWN:
            if n == _SHOWN:
                lines.append(f"  ... {hidden} more")
            continue
        node = graph.nodes[i]
        lines.append(f"  {ljust(node.key, width)}  {format_duration(node.estimate, compact=True)}")

    spans = makespans(graph, parallelism)
    cap = f"-j {parallelism}" if parallelism else "unbounded parallelism"
    how = "from estimates"
    if plan.rollout is not None:
        how += "; the rollout as if no wave halts it"
        if plan.rollout.pause:
            how += " and each is promoted at once"
    lines += ["", f"estimated makespan at {cap} ({how})"]
    work = graph.total_work
    bound = f"critical path {format_duration(graph.critical_path_length, compact=True)}"
    if parallelism:
        bound += f", work {format_duration(work, compact=True)} / {parallelism}"
    if cluster_work := graph.cluster_work:
        workers = plan.cluster.workers
        bound += f", cluster work {format_duration(cluster_work, compact=True)} / {workers}"
    lower = format_duration(spans["lower_bound"], compact=True)
    if plan.rollout is None:
        for mode in MODES:
            lines.append(f"  {mode:<12} {format_duration(spans[mode], compact=True)}")
        lines.append(f"  {'lower bound':<12} {lower}  (max of {bound})")
    else:
        free = makespans(graph, parallelism, rollout=False)
        lines.append(f"  {'':<12} {'rollout':<9} without")
        for mode in MODES:
            held = format_duration(spans[mode], compact=True)
            lines.append(f"  {mode:<12} {held:<9} {format_duration(free[mode], compact=True)}")
        lines.append(f"  {'lower bound':<12} {lower:<9} (max of {bound})")
    return "\n".join(lines) + "\n"


def _node_dicts(graph: Graph) -> Iterator[dict[str, Any]]:
    """One JSON object per node, in id order, made one at a time."""
    keys = [node.key for node in graph.nodes]
    level_of = [0] * len(graph.nodes)
    for n, level in enumerate(graph.waves):
        for i in level:
            level_of[i] = n
    for node in graph.nodes:
        yield {
            "id": node.id,
            "key": node.key,
            "task": node.task,
            "target": node.target,
            "phase": node.phase,
            "estimate": node.estimate,
            "level": level_of[node.id],
            "rank": graph.rank[node.id],
            "needs": [
                {"task": r.task, "nodes": [keys[d] for d in r.nodes], "at_least": r.at_least}
                for r in node.requires
            ],
        }


def _rollout_dict(graph: Graph, parallelism: int | None) -> dict[str, Any] | None:
    """The JSON view's ``rollout``; None without one."""
    rollout = graph.plan.rollout
    if rollout is None:
        return None
    free = makespans(graph, parallelism, rollout=False)
    return {
        "waves": [list(targets) for targets in wave_targets(graph.plan)],
        "sizes": [_size_text(s) if isinstance(s, Fraction) else s for s in rollout.waves],
        "max_failed": max_failed_value(rollout),
        "pause": rollout.pause,
        "makespan_without_rollout": {mode: free[mode] for mode in MODES},
    }


def _summary(graph: Graph, parallelism: int | None) -> dict[str, Any]:
    """Every field of the JSON view; ``nodes`` and ``levels`` as placeholders."""
    plan = graph.plan
    return {
        "format": JSON_FORMAT,
        "plan": {
            "name": plan.name,
            "path": str(plan.path) if plan.path else None,
            "source_hash": plan.source_hash,
        },
        "targets": list(plan.targets),
        "tasks": list(plan.tasks),
        "instances": {row.task: row.instances for row in task_rows(graph)},
        "phases": [
            {"name": phase, "tasks": dict(_task_counts(graph, ids))}
            for phase, ids in phases_of(graph)
        ],
        "nodes": None,
        "levels": None,
        "rollout": _rollout_dict(graph, parallelism),
        "critical_path": [graph.nodes[i].key for i in graph.critical_path],
        "critical_path_length": graph.critical_path_length,
        "total_work": graph.total_work,
        "parallelism": parallelism,
        "makespan": makespans(graph, parallelism),
    }


def graph_dict(graph: Graph, parallelism: int | None) -> dict[str, Any]:
    """The JSON view as plain data (see ``render_json`` for the layout)."""
    data = _summary(graph, parallelism)
    data["nodes"] = list(_node_dicts(graph))
    data["levels"] = [[graph.nodes[i].key for i in level] for level in graph.waves]
    return data


def render_json(
    graph: Graph, parallelism: int | None, extra: Mapping[str, Any] | None = None
) -> str:
    """The full expanded graph as JSON (``format: "fleetrun.plan/2"``), plus ``extra`` fields.

    Layout: ``plan`` {name, path, source_hash}; ``targets`` and ``tasks`` (names
    in plan order); ``instances`` {task: count}, zero for a task whose group
    matches no target; ``phases`` [{name (null: tasks without a phase), tasks:
    {task: instances}}]; ``nodes`` [{id, key, task, target (null when unfanned),
    phase, estimate (s), level (index into ``levels``), rank (s), needs: [{task,
    nodes: [keys], at_least}]}] in id order; ``levels`` [[keys]] (dependency
    levels: a node's level is one more than its latest requirement's);
    ``rollout`` (null without one) {waves: [[target names]], sizes (as the plan
    writes them), max_failed (a count, or a percentage string), pause,
    makespan_without_rollout: {sequential, phased, dag} (s)}; ``critical_path``
    [keys]; ``critical_path_length`` and ``total_work`` (s); ``parallelism`` (null:
    unbounded); ``makespan`` {sequential, phased, dag, lower_bound} (s), held by
    the rollout's waves when the plan has one.

    Each node, each level and each rollout wave is written on one line, so that
    100,000-node graphs stay quick to write and to ``grep``.

    (``fleetrun.plan/1`` called the levels ``waves`` and a node's level ``wave``,
    and had no ``rollout``.)
    """
    fields: list[str] = []
    for name, value in {**_summary(graph, parallelism), **(extra or {})}.items():
        if name == "nodes":
            items: Iterable[Any] = _node_dicts(graph)
        elif name == "levels":
            items = ([graph.nodes[i].key for i in level] for level in graph.waves)
        elif name == "rollout" and value is not None:
            fields.append(f"  {json.dumps(name)}: {_rollout_json(value)}")
            continue
        else:
            text = json.dumps(value, indent=2).replace("\n", "\n  ")
            fields.append(f"  {json.dumps(name)}: {text}")
            continue
        body = ",\n".join("    " + json.dumps(item) for item in items)
        fields.append(
            f"  {json.dumps(name)}: [\n{body}\n  ]" if body else f"  {json.dumps(name)}: []"
        )
    return "{\n" + ",\n".join(fields) + "\n}\n"


def _rollout_json(rollout: Mapping[str, Any]) -> str:
    """The ``rollout`` object at the JSON view's second level, one wave a line."""
    parts: list[str] = []
    for key, value in rollout.items():
        if key == "waves":
            body = ",\n".join("      " + json.dumps(wave) for wave in value)
            text = f"[\n{body}\n    ]" if body else "[]"
        else:
            text = json.dumps(value, indent=2).replace("\n", "\n    ")
        parts.append(f"    {json.dumps(key)}: {text}")
    return "{\n" + ",\n".join(parts) + "\n  }"


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_dot(graph: Graph) -> str:
    """Graphviz: one box per instance, clustered by phase; an arrow from each
    needed instance to its dependent, dashed for quorum needs."""
    out = [f"digraph {_dot_quote(graph.plan.name)} {{", "  rankdir=LR;", "  node [shape=box];"]
    for c, (phase, ids) in enumerate(phases_of(graph)):
        if not ids:
            continue
        indent = "  "
        if phase is not None:
            out.append(f"  subgraph cluster_{c} {{")
            out.append(f"    label={_dot_quote(phase)};")
            indent = "    "
        out += [f"{indent}n{i} [label={_dot_quote(graph.nodes[i].key)}];" for i in ids]
        if phase is not None:
            out.append("  }")
    for node in graph.nodes:
        for req in node.requires:
            style = " [style=dashed]" if req.at_least < len(req.nodes) else ""
            out += [f"  n{d} -> n{node.id}{style};" for d in req.nodes]
    out.append("}")
    return "\n".join(out) + "\n"


def _mermaid_label(text: str) -> str:
    return '"' + text.replace('"', "#quot;") + '"'


def render_mermaid(graph: Graph) -> str:
    """Mermaid flowchart: the same graph as ``render_dot`` (phases as subgraphs,
    quorum needs as dotted arrows)."""
    out = ["flowchart LR"]
    for c, (phase, ids) in enumerate(phases_of(graph)):
        if not ids:
            continue
        indent = "  "
        if phase is not None:
            out.append(f"  subgraph phase{c}[{_mermaid_label(phase)}]")
            indent = "    "
        out += [f"{indent}n{i}[{_mermaid_label(graph.nodes[i].key)}]" for i in ids]
        if phase is not None:
            out.append("  end")
    for node in graph.nodes:
        for req in node.requires:
            arrow = "-.->" if req.at_least < len(req.nodes) else "-->"
            out += [f"  n{d} {arrow} n{node.id}" for d in req.nodes]
    return "\n".join(out) + "\n"
