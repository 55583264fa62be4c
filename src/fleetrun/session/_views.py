"""What a session tells before a run: the start order of a dry run, why instances re-run."""

from __future__ import annotations

import heapq
from collections.abc import Mapping

from fleetrun.plan import Graph, Placeholders, dep_outputs, render_command
from fleetrun.redact import Redactor


def start_order(graph: Graph, nodes: frozenset[int] | None) -> list[int]:
    """A topological order of ``nodes`` that starts the critical path first
    (highest rank, then plan order): the order the engine's ready heap gives
    when nothing else holds a node back."""
    chosen = set(range(len(graph.nodes))) if nodes is None else set(nodes)
    waiting = {
        i: sum(1 for r in graph.nodes[i].requires for d in r.nodes if d in chosen) for i in chosen
    }
    ready = [(-graph.rank[i], i) for i, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        _, i = heapq.heappop(ready)
        order.append(i)
        for j in graph.dependents[i]:
            if j in waiting:
                waiting[j] -= sum(1 for r in graph.nodes[j].requires for d in r.nodes if d == i)
                if waiting[j] == 0:
                    heapq.heappush(ready, (-graph.rank[j], j))
    return order


def dry_run_lines(
    graph: Graph, nodes: frozenset[int] | None, reused: Mapping[int, Mapping[str, str]]
) -> list[str]:
    """``key: command`` per instance in start order, outputs not yet known as placeholders."""
    redactor = Redactor(graph.plan.secret_values)
    lines = []
    for i in start_order(graph, nodes):
        node = graph.nodes[i]
        cmd = render_command(graph, node, Placeholders(dep_outputs(node, reused)))
        lines.append(f"{node.key}: {redactor.redact(cmd)}")
    return lines


def reason_lines(graph: Graph, reasons: Mapping[int, str], shown: int = 8) -> list[str]:
    """``re-run KEYS: REASON`` lines, one per reason, long lists shortened."""
    by_reason: dict[str, list[str]] = {}
    for node_id in sorted(reasons):
        by_reason.setdefault(reasons[node_id], []).append(graph.nodes[node_id].key)
    lines = []
    for reason, keys in by_reason.items():
        more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
        lines.append(f"re-run {', '.join(keys[:shown])}{more}: {reason}")
    return lines
