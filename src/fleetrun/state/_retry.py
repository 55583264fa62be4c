"""What a retry (or resume) runs again, and what it reuses, from an earlier run.

Rules, for each instance of the current graph:

- recorded as ``succeeded`` or ``reused`` and its command renders the same as
  then (same hash, rendered with the outputs its dependencies recorded): reused,
  with its recorded outputs, never started again;
- recorded in any other state (failed, skipped, cancelled, not_started,
  interrupted): run again;
- succeeded but its command changed since (the plan was edited): run again,
  and the reason says so;
- not recorded at all (a task added to the plan since): run, unless the earlier
  run was itself narrowed with ``--targets``/``--tasks`` (then it was left out on
  purpose);
- everything depending on an instance that runs again because its command
  changed runs again too (its inputs may change); dependents of failed
  instances were skipped, so they run again by the second rule, while an
  instance that succeeded on a quorum despite a failed member is kept.

``--targets``/``--tasks`` then narrow the set that runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from fleetrun.plan import Graph, dependents_closure
from fleetrun.redact import Redactor
from fleetrun.state._records import InstanceRecord, RunRecord
from fleetrun.state._writer import command_hash

DONE_STATES = frozenset({"succeeded", "reused"})
"""Recorded states whose instances a retry reuses instead of running."""


@dataclass(frozen=True, slots=True)
class RetryPlan:
    """The outcome of ``plan_retry``.

    ``only``: node ids to run. ``reused``: node id -> outputs, for instances
    that already succeeded. ``reused_hashes``: their recorded command hashes
    (carried into the new run's record). ``reasons``: why each directly
    re-run node runs (dependents of those are not listed).
    """

    only: frozenset[int]
    reused: Mapping[int, Mapping[str, str]]
    reused_hashes: Mapping[int, str | None]
    reasons: Mapping[int, str] = field(default_factory=dict)


def render_command(
    graph: Graph, node_id: int, outputs_by_node: Mapping[int, Mapping[str, str]]
) -> str:
    """A node's command as the engine renders it, with its dependencies' outputs.

    Raises ``KeyError`` when an output the command uses is not available.
    """
    node = graph.nodes[node_id]
    outputs: dict[str, Mapping[str, str]] = {}
    for req in node.requires:
        if req.single:
            outputs[req.task] = outputs_by_node.get(req.nodes[0], {})
    task = graph.task_of(node)
    return task.run.render(graph.target_of(node), graph.plan.vars, outputs)


def plan_retry(
    graph: Graph,
    previous: RunRecord,
    instances: list[InstanceRecord],
    redactor: Redactor,
    narrow: frozenset[int] | None = None,
) -> RetryPlan:
    """Decide what a retry of run ``previous`` (with its ``instances``) runs."""
    by_key = {i.key: i for i in instances}
    was_narrowed = bool(previous.options.get("targets") or previous.options.get("tasks"))
    recorded_outputs = {graph.index[k]: i.outputs for k, i in by_key.items() if k in graph.index}
    again: set[int] = set()
    reasons: dict[int, str] = {}
    done: dict[int, Mapping[str, str]] = {}
    hashes: dict[int, str | None] = {}
    for node in graph.nodes:
        rec = by_key.get(node.key)
        if rec is None:
            if not was_narrowed:
                again.add(node.id)
                reasons[node.id] = f"not in run {previous.id}"
            continue
        if rec.status not in DONE_STATES:
            again.add(node.id)
            reasons[node.id] = rec.status
            continue
        old_hash = rec.command_hash
        if old_hash is not None:
            try:
                new = command_hash(
                    redactor.redact(render_command(graph, node.id, recorded_outputs))
                )
            except KeyError as e:
                new = f"missing output {e}"
            if new != old_hash:
                again.add(node.id)
                reasons[node.id] = f"command changed since run {previous.id}"
                continue
        done[node.id] = rec.outputs
        hashes[node.id] = old_hash
    # A succeeded instance runs again only if its own command changed or it
    # consumes the outputs of one that runs again for that reason. One that
    # succeeded beside a failed quorum member (``at_least``) keeps its result;
    # dependents of failed instances were skipped, so they are in ``again``.
    changed = {n for n in again if _status(by_key, graph.nodes[n].key) in DONE_STATES}
    only = again | set(dependents_closure(graph, changed))
    if narrow is not None:
        only &= narrow
    reused = {n: o for n, o in done.items() if n not in only}
    return RetryPlan(
        only=frozenset(only),
        reused=reused,
        reused_hashes={n: hashes[n] for n in reused},
        reasons={n: r for n, r in reasons.items() if n in only},
    )


def _status(by_key: Mapping[str, InstanceRecord], key: str) -> str | None:
    rec = by_key.get(key)
    return rec.status if rec is not None else None
