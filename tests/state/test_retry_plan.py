"""What a retry runs again and what it reuses (``plan_retry``), on a real expanded graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fleetrun.plan import (
    Graph,
    Need,
    Plan,
    Target,
    Task,
    Template,
    dep_outputs,
    expand,
    render_command,
)
from fleetrun.redact import Redactor
from fleetrun.state import InstanceRecord, RunRecord, command_hash, plan_retry

REGIONS = ("a", "b", "c")


def _graph(k8s_run: str = "k8s {{ target.name }} {{ tasks.infra.outputs.cluster }}") -> Graph:
    tasks = {
        "infra": Task("infra", Template.parse("infra {{ target.name }}"), for_each="all",
                      targets=REGIONS),
        "k8s": Task("k8s", Template.parse(k8s_run), for_each="all", targets=REGIONS,
                    needs=(Need("infra"),)),
        "contract": Task("contract", Template.parse("deploy"),
                         needs=(Need("k8s", mode="quorum", at_least=2),)),
        "verify": Task("verify", Template.parse("verify {{ tasks.contract.outputs.addr }}"),
                       needs=(Need("contract"),)),
    }  # fmt: skip
    plan = Plan(
        name="p", path=Path("/p.yaml"), base_dir=Path("/"), source_hash="h", env={},
        secrets=frozenset(), secret_values=frozenset(), vars={},
        targets={r: Target(r) for r in REGIONS}, groups={}, pools={}, phases=(), tasks=tasks,
    )  # fmt: skip
    return expand(plan)


def _record(graph: Graph, states: dict[str, str]) -> list[InstanceRecord]:
    """Instances as the journal would hold them after a run with ``states``."""
    outputs: dict[int, dict[str, str]] = {}
    rows = []
    for node in graph.nodes:
        state = states.get(node.key, "succeeded")
        out = {}
        if state == "succeeded":
            out = {"cluster": f"c-{node.target}"} if node.task == "infra" else {}
            out = {"addr": "0xAB"} if node.task == "contract" else out
        outputs[node.id] = out
        h = None
        if state in ("succeeded", "failed"):
            h = command_hash(render_command(graph, node, dep_outputs(node, outputs)))
        rows.append(
            InstanceRecord(
                run_id="r1", key=node.key, node=node.id, task=node.task, target=node.target,
                status=state, command_hash=h, exit_code=None, outputs=out, reason="",
                attempts=0, started_at=None, ended_at=None,
            )
        )  # fmt: skip
    return rows


def _run(run_id: str, options: dict[str, Any]) -> RunRecord:
    return RunRecord(
        id=run_id, parent_id=None, plan_path="/p.yaml", plan_name="p", plan_hash="h",
        plan_snapshot="", mode="dag", kind="apply", options=options, started_at=0.0,
        ended_at=1.0, status="failed", counts={}, user="u", host="h", pid=1, pid_start=None,
    )  # fmt: skip


PREV = _run("r1", {"targets": None, "tasks": None})


def _keys(graph: Graph, ids: Any) -> list[str]:
    return sorted(graph.nodes[i].key for i in ids)


def test_failed_region_and_its_skipped_dependents_run_again() -> None:
    g = _graph()
    rec = _record(g, {"infra@b": "failed", "k8s@b": "skipped"})
    rp = plan_retry(g, PREV, rec, Redactor())
    assert _keys(g, rp.only) == ["infra@b", "k8s@b"]
    # The contract succeeded on its quorum: kept, with its outputs, like the rest.
    assert _keys(g, rp.reused) == ["contract", "infra@a", "infra@c", "k8s@a", "k8s@c", "verify"]
    assert rp.reused[g.index["contract"]] == {"addr": "0xAB"}
    assert rp.reasons == {g.index["infra@b"]: "failed", g.index["k8s@b"]: "skipped"}


def test_changed_command_reruns_it_and_its_dependents() -> None:
    old = _graph()
    rec = _record(old, {})
    new = _graph("k8s --new {{ target.name }} {{ tasks.infra.outputs.cluster }}")
    rp = plan_retry(new, PREV, rec, Redactor())
    # Every k8s changed; the contract and verify consume them, so they run too.
    assert _keys(new, rp.only) == ["contract", "k8s@a", "k8s@b", "k8s@c", "verify"]
    assert rp.reasons[new.index["k8s@a"]] == "command changed since run r1"
    assert _keys(new, rp.reused) == ["infra@a", "infra@b", "infra@c"]


def test_nothing_to_do_and_narrowing() -> None:
    g = _graph()
    assert plan_retry(g, PREV, _record(g, {}), Redactor()).only == frozenset()
    rec = _record(g, {"infra@a": "interrupted", "k8s@a": "not_started", "infra@c": "failed",
                      "k8s@c": "skipped"})  # fmt: skip
    narrow = frozenset({g.index["infra@c"], g.index["k8s@c"]})
    rp = plan_retry(g, PREV, rec, Redactor(), narrow)
    assert _keys(g, rp.only) == ["infra@c", "k8s@c"]
    assert g.index["infra@a"] not in rp.reused  # neither run nor reused: left out


def test_instances_missing_from_a_narrowed_run_stay_out() -> None:
    g = _graph()
    rec = [r for r in _record(g, {}) if r.key != "verify"]
    assert _keys(g, plan_retry(g, PREV, rec, Redactor()).only) == ["verify"]
    narrowed = _run("r1", {"targets": ["a"], "tasks": None})
    assert plan_retry(g, narrowed, rec, Redactor()).only == frozenset()
