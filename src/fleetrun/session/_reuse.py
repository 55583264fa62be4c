"""What an ``apply --targets/--tasks`` runs of what its selection needs but does not
name: only what has no usable record.

A selection runs every instance it names. What those need (``selection_closure``:
the same region's infrastructure, a quorum of every region's validators, the
contracts) is reused where the plan's earlier runs left a usable record of it,
by the rule ``retry`` uses (``state.reuse_plan``): its record succeeded (or was
reused), its command renders the same with the outputs recorded for what it
needs, and its exact outputs are on record. The rest runs, and is listed.

Each instance's record is its latest one among the plan's runs in which it ran
or was reused; a run that never started it (skipped, not started) leaves the
earlier record standing. Records from several runs are read as one history:
an instance whose record succeeded but which needs something that has no
usable record now (fewer than its ``at_least`` of a requirement) counts as
skipped, as a run would have skipped it, so it runs again too; a quorum still
met keeps its result, as in a retry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from fleetrun.plan import Graph
from fleetrun.redact import Redactor
from fleetrun.session._views import start_order
from fleetrun.state import DONE_STATES, InstanceRecord, Journal, RetryPlan, reuse_plan

NO_RECORD = "no run of this plan has it on record"
"""Why a needed instance that no earlier run of the plan holds runs."""


def selection_reuse(
    graph: Graph,
    journal: Journal,
    plan_path: str,
    redactor: Redactor,
    narrow: frozenset[int],
    needs: Mapping[int, str],
) -> RetryPlan:
    """What a selection runs and reuses: ``narrow`` is every selected instance,
    ``needs`` those of them it does not name (id -> why it is needed). The
    plan's records are those of the runs recorded under ``plan_path``.

    ``only`` holds the named instances and the needed ones without a usable
    record; ``reasons`` says, for each of the latter, why it is needed and why
    its record is not used; ``reused_from`` names the run of each reused one.
    """
    records, blocked = _one_history(graph, journal.latest_records(plan_path))
    exact: dict[str, Mapping[str, str]] = {}
    for run_id in {r.run_id for r in records.values()}:
        for key, outputs in journal.exact_outputs(run_id).items():
            if key in records and records[key].run_id == run_id:
                exact[key] = outputs
    decided = reuse_plan(graph, records, redactor, narrow, exact, absent=NO_RECORD)
    named = narrow - needs.keys()
    only = frozenset(named | (decided.only & needs.keys()))
    reused = {i: o for i, o in decided.reused.items() if i in needs and i not in only}
    reasons: dict[int, str] = {}
    for i in sorted(only & needs.keys()):
        rec = records.get(graph.nodes[i].key)
        if i in blocked:
            why = blocked[i]
        elif rec is not None and rec.status not in DONE_STATES:
            why = f"{rec.status} in run {rec.run_id}"
        else:
            why = decided.reasons.get(i, "it needs an instance whose command changed")
        reasons[i] = f"{needs[i]}; {why}"
    return RetryPlan(
        only=only,
        reused=reused,
        reused_hashes={i: decided.reused_hashes[i] for i in reused},
        reasons=reasons,
        reused_from={i: decided.reused_from[i] for i in reused},
    )


def _one_history(
    graph: Graph, latest: Mapping[str, InstanceRecord]
) -> tuple[dict[str, InstanceRecord], dict[int, str]]:
    """``latest`` (key -> record, each from its own run) read as one run would
    have left them: a succeeded record whose requirement is no longer met by
    succeeded records becomes ``skipped``. Returns the records and, for each
    node made skipped, what it needs that has no usable record."""
    records = dict(latest)
    blocked: dict[int, str] = {}

    def done(node: int) -> bool:
        rec = records.get(graph.nodes[node].key)
        return rec is not None and rec.status in DONE_STATES

    for i in start_order(graph, None):  # what a node needs comes before it
        rec = records.get(graph.nodes[i].key)
        if rec is None or rec.status not in DONE_STATES:
            continue
        for req in graph.nodes[i].requires:
            if sum(1 for d in req.nodes if done(d)) < req.at_least:
                missing = next(graph.nodes[d].key for d in req.nodes if not done(d))
                records[rec.key] = dataclasses.replace(rec, status="skipped")
                blocked[i] = f"it needs {missing}, which has no usable record"
                break
    return records, blocked
