"""Views of an expanded graph for ``fleetrun plan``: text, JSON, Graphviz dot, Mermaid.

Each function returns a string; printing is the CLI's business. The text view
groups instances by task so that a 24-region plan stays one screen long; the
other views are complete, whatever the size of the graph.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from fleetrun.plan._graph import Graph
from fleetrun.plan._simulate import MODES, simulate
from fleetrun.plan._summary import task_rows

_WAVES_SHOWN = 15
"""The text view shows this many waves (and critical-path steps) at each end of a longer list."""

JSON_FORMAT = "fleetrun.plan/1"
"""The ``format`` field of the JSON view; bumped on an incompatible change."""


def fmt_duration(seconds: float) -> str:
    """``0.5s``, ``45s``, ``12m 30s``, ``2h 5m``: short and exact enough for estimates."""
    if seconds < 10:
        return f"{seconds:.3g}s"
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    if h:
        return f"{h}h {m}m" if m else f"{h}h"
    if m:
        return f"{m}m {sec}s" if sec else f"{m}m"
    return f"{sec}s"


def makespans(graph: Graph, parallelism: int | None) -> dict[str, float]:
    """Estimated makespan per mode at ``parallelism``, plus ``lower_bound``."""
    out = {mode: simulate(graph, mode, parallelism) for mode in MODES}
    out["lower_bound"] = graph.lower_bound(parallelism)
    return out


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
    width = max((len(r.task) for r in rows), default=0)
    digits = max((len(str(r.instances)) for r in rows), default=1)
    for r in rows:
        parts = [f"  {r.task.ljust(width)}  {str(r.instances).rjust(digits)}"]
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
        width = max(len(p or "(no phase)") for p, _ in phases)
        for phase, ids in phases:
            name = (phase or "(no phase)").ljust(width)
            counts = _counts_text(_task_counts(graph, ids), indent=width + 4)
            lines.append(f"  {name}  {counts or '-'}")

    lines += ["", *task_lines(graph)]

    lines += ["", f"waves ({len(graph.waves)}; a wave starts when what it needs has finished)"]
    for w, wave in enumerate(graph.waves, 1):
        hidden = len(graph.waves) - 2 * _WAVES_SHOWN
        if hidden > 0 and _WAVES_SHOWN < w <= len(graph.waves) - _WAVES_SHOWN:
            if w == _WAVES_SHOWN + 1:
                lines.append(f"  ... {hidden} more waves (--format json lists them all)")
            continue
        lines.append(
            f"  wave {w:<3} {len(wave):>6} instance{'s' if len(wave) != 1 else ' '}  "
            f"{_counts_text(_task_counts(graph, wave), indent=29)}"
        )

    lines += ["", f"critical path ({fmt_duration(graph.critical_path_length)})"]
    width = max((len(graph.nodes[i].key) for i in graph.critical_path), default=0)
    path = graph.critical_path
    hidden = len(path) - 2 * _WAVES_SHOWN
    for n, i in enumerate(path):
        if hidden > 0 and _WAVES_SHOWN <= n < len(path) - _WAVES_SHOWN:
            if n == _WAVES_SHOWN:
                lines.append(f"  ... {hidden} more")
            continue
        node = graph.nodes[i]
        lines.append(f"  {node.key.ljust(width)}  {fmt_duration(node.estimate)}")

    spans = makespans(graph, parallelism)
    cap = f"-j {parallelism}" if parallelism else "unbounded parallelism"
    lines += ["", f"estimated makespan at {cap} (from estimates)"]
    for mode in MODES:
        lines.append(f"  {mode:<12} {fmt_duration(spans[mode])}")
    work = graph.total_work
    bound = f"critical path {fmt_duration(graph.critical_path_length)}"
    if parallelism:
        bound += f", work {fmt_duration(work)} / {parallelism}"
    lines.append(f"  {'lower bound':<12} {fmt_duration(spans['lower_bound'])}  (max of {bound})")
    return "\n".join(lines) + "\n"


def _node_dicts(graph: Graph) -> Iterator[dict[str, Any]]:
    """One JSON object per node, in id order, made one at a time."""
    keys = [node.key for node in graph.nodes]
    wave_of = [0] * len(graph.nodes)
    for w, wave in enumerate(graph.waves):
        for i in wave:
            wave_of[i] = w
    for node in graph.nodes:
        yield {
            "id": node.id,
            "key": node.key,
            "task": node.task,
            "target": node.target,
            "phase": node.phase,
            "estimate": node.estimate,
            "wave": wave_of[node.id],
            "rank": graph.rank[node.id],
            "needs": [
                {"task": r.task, "nodes": [keys[d] for d in r.nodes], "at_least": r.at_least}
                for r in node.requires
            ],
        }


def _summary(graph: Graph, parallelism: int | None) -> dict[str, Any]:
    """Every field of the JSON view; ``nodes`` and ``waves`` as placeholders."""
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
        "waves": None,
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
    data["waves"] = [[graph.nodes[i].key for i in wave] for wave in graph.waves]
    return data


def render_json(
    graph: Graph, parallelism: int | None, extra: Mapping[str, Any] | None = None
) -> str:
    """The full expanded graph as JSON (``format: "fleetrun.plan/1"``), plus ``extra`` fields.

    Layout: ``plan`` {name, path, source_hash}; ``targets`` and ``tasks`` (names
    in plan order); ``instances`` {task: count}, zero for a task whose group
    matches no target; ``phases`` [{name (null: tasks without a phase), tasks:
    {task: instances}}]; ``nodes`` [{id, key, task, target (null when unfanned),
    phase, estimate (s), wave (index into ``waves``), rank (s), needs: [{task,
    nodes: [keys], at_least}]}] in id order; ``waves`` [[keys]]; ``critical_path``
    [keys]; ``critical_path_length`` and ``total_work`` (s); ``parallelism`` (null:
    unbounded); ``makespan`` {sequential, phased, dag, lower_bound} (s).

    Each node and each wave is written on one line, so that 100,000-node graphs
    stay quick to write and to ``grep``.
    """
    fields: list[str] = []
    for name, value in {**_summary(graph, parallelism), **(extra or {})}.items():
        if name == "nodes":
            items: Iterable[Any] = _node_dicts(graph)
        elif name == "waves":
            items = ([graph.nodes[i].key for i in wave] for wave in graph.waves)
        else:
            text = json.dumps(value, indent=2).replace("\n", "\n  ")
            fields.append(f"  {json.dumps(name)}: {text}")
            continue
        body = ",\n".join("    " + json.dumps(item) for item in items)
        fields.append(
            f"  {json.dumps(name)}: [\n{body}\n  ]" if body else f"  {json.dumps(name)}: []"
        )
    return "{\n" + ",\n".join(fields) + "\n}\n"


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
