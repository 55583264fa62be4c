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

The same rule (``reuse_plan``) decides what an ``apply --targets/--tasks``
reuses of the instances its selection needs but does not name: there the
record of each instance is its latest one in any earlier run of the plan
(``JournalReader.latest_records``), and the reasons name the run each record
comes from.

A retry (or resume) also continues the rollout where the run stopped
(``waves_opened``): the targets of the waves that had opened in that run run
together, at once, as the first wave (they proved the change); the waves that
never opened keep their order and gates, so a canary that halted the rollout
still holds back the rest. ``retry --rollout`` replays every wave instead.

Outputs handed on are the exact values (``Journal.exact_outputs``), never the
redacted form that is shown: a dependent must not receive ``***``. An instance
whose outputs were kept only redacted (recorded by an older fleetrun) and hold
a masked value runs again, so that its dependents get the real value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fleetrun.plan import (
    Graph,
    MissingValueError,
    Plan,
    dep_outputs,
    dependents_closure,
    render_command,
    wave_targets,
)
from fleetrun.redact import MASK, Redactor
from fleetrun.state._records import InstanceRecord, RunRecord
from fleetrun.state._writer import command_hash

DONE_STATES = frozenset({"succeeded", "reused"})
"""Recorded states whose instances a retry reuses instead of running."""


@dataclass(frozen=True, slots=True)
class RetryPlan:
    """The outcome of ``plan_retry`` (or ``reuse_plan``).

    ``only``: node ids to run. ``reused``: node id -> outputs, for instances
    that already succeeded. ``reused_hashes``: their recorded command hashes
    (carried into the new run's record). ``reused_from``: the run whose record
    each reused instance comes from. ``reasons``: why each directly re-run
    node runs (dependents of those are not listed).
    """

    only: frozenset[int]
    reused: Mapping[int, Mapping[str, str]]
    reused_hashes: Mapping[int, str | None]
    reasons: Mapping[int, str] = field(default_factory=dict)
    reused_from: Mapping[int, str] = field(default_factory=dict)


def plan_retry(
    graph: Graph,
    previous: RunRecord,
    instances: list[InstanceRecord],
    redactor: Redactor,
    narrow: frozenset[int] | None = None,
    exact: Mapping[str, Mapping[str, str]] | None = None,
) -> RetryPlan:
    """Decide what a retry of run ``previous`` (with its ``instances`` and their
    ``exact`` outputs, by key) runs."""
    was_narrowed = bool(previous.options.get("targets") or previous.options.get("tasks"))
    return reuse_plan(
        graph,
        {i.key: i for i in instances},
        redactor,
        narrow,
        exact,
        absent=None if was_narrowed else f"not in run {previous.id}",
    )


def reuse_plan(
    graph: Graph,
    records: Mapping[str, InstanceRecord],
    redactor: Redactor,
    narrow: frozenset[int] | None = None,
    exact: Mapping[str, Mapping[str, str]] | None = None,
    *,
    absent: str | None,
) -> RetryPlan:
    """The retry rule (module docstring) over ``records``: one record per
    instance key (each from its own run: ``InstanceRecord.run_id``) and their
    ``exact`` outputs. ``absent``: the reason an instance without a record
    runs, or None to leave it out (it was left out of the run on purpose)."""
    exact = exact or {}
    recorded_outputs = {
        graph.index[k]: exact.get(k, i.outputs) for k, i in records.items() if k in graph.index
    }
    again: set[int] = set()
    reasons: dict[int, str] = {}
    done: dict[int, Mapping[str, str]] = {}
    hashes: dict[int, str | None] = {}
    for node in graph.nodes:
        rec = records.get(node.key)
        if rec is None:
            if absent is not None:
                again.add(node.id)
                reasons[node.id] = absent
            continue
        if rec.status not in DONE_STATES:
            again.add(node.id)
            reasons[node.id] = rec.status
            continue
        if node.key not in exact and any(MASK in v for v in rec.outputs.values()):
            again.add(node.id)
            reasons[node.id] = (
                f"its outputs were kept only redacted in run {rec.run_id}; "
                "it runs again so that dependents get the real values"
            )
            continue
        old_hash = rec.command_hash
        if old_hash is not None:
            try:
                command = render_command(graph, node, dep_outputs(node, recorded_outputs))
            except MissingValueError as e:
                again.add(node.id)
                reasons[node.id] = (
                    f"its command now uses {e.ref}, which run {rec.run_id} did not record"
                )
                continue
            if command_hash(redactor.redact(command)) != old_hash:
                again.add(node.id)
                reasons[node.id] = f"command changed since run {rec.run_id}"
                continue
        done[node.id] = recorded_outputs[node.id]
        hashes[node.id] = old_hash
    # A succeeded instance runs again only if its own command changed or it
    # consumes the outputs of one that runs again for that reason. One that
    # succeeded beside a failed quorum member (``at_least``) keeps its result;
    # dependents of failed instances were skipped, so they are in ``again``.
    changed = {n for n in again if _status(records, graph.nodes[n].key) in DONE_STATES}
    only = again | set(dependents_closure(graph, changed))
    if narrow is not None:
        only &= narrow
    reused = {n: o for n, o in done.items() if n not in only}
    return RetryPlan(
        only=frozenset(only),
        reused=reused,
        reused_hashes={n: hashes[n] for n in reused},
        reasons={n: r for n, r in reasons.items() if n in only},
        reused_from={n: records[graph.nodes[n].key].run_id for n in reused},
    )


def _status(by_key: Mapping[str, InstanceRecord], key: str) -> str | None:
    rec = by_key.get(key)
    return rec.status if rec is not None else None


def waves_opened(
    plan: Plan, wave_events: Iterable[Mapping[str, Any]], started_with: int = 0
) -> int:
    """How many of ``plan``'s rollout waves had opened in a run, for the run that
    continues it (``RunOptions.waves_opened``); 0 without a rollout.

    ``wave_events``: the fields of that run's ``WaveChanged`` events, in order.
    A wave counts when every one of its targets was in a wave that opened
    (targets, not wave numbers: a run that itself continued a rollout opened
    the earlier waves as one, and the plan may have changed since). With
    ``--mode phased`` every phase rolls out anew from the first wave, and only
    the latest phase's openings count: a canary that had not yet proved that
    phase still goes first. ``started_with``: the ``waves_opened`` that run
    was given; it counts when the run stopped before opening any wave, so a
    retry of a retry that died early still continues the rollout.
    """
    if plan.rollout is None:
        return 0
    waves = wave_targets(plan)
    opened: set[str] = set()
    seen = False
    for event in wave_events:
        if event.get("state") != "open":
            continue
        if event.get("wave") == 1:
            opened = set()  # the rollout (of a phase) begins anew
        seen = True
        opened.update(str(t) for t in event.get("targets") or ())
    if not seen:
        opened = {t for wave in waves[:started_with] for t in wave}
    n = 0
    for wave in waves:
        if not opened.issuperset(wave):
            break
        n += 1
    return n
