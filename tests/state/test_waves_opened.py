"""How many rollout waves a retry continues from (``waves_opened``), and why a
succeeded instance whose command now lacks a value runs again."""

from __future__ import annotations

import json
from typing import Any

from fleetrun.plan import expand, load_plan_text, wave_targets
from fleetrun.redact import Redactor
from fleetrun.state import (
    InstanceRecord,
    Journal,
    RunRecord,
    command_hash,
    plan_retry,
    waves_opened,
)

from .conftest import begin

PLAN = """\
name: p
targets: {r0: {}, r1: {}, r2: {}, r3: {}, r4: {}, r5: {}}
groups:
  canary: [r1]
rollout:
  waves: [canary, 2, "100%"]
tasks:
  infra:
    for_each: all
    run: infra {{ target.name }}
  k8s:
    for_each: all
    needs: [infra]
    run: k8s {{ target.name }} {{ tasks.infra.outputs.cluster }}
"""

PLAN_NO_ROLLOUT = PLAN.split("rollout:")[0] + PLAN.split('"100%"]\n')[1]


def _opened(wave: int, targets: tuple[str, ...]) -> dict[str, Any]:
    return {"wave": wave, "waves": 3, "state": "open", "targets": list(targets)}


def test_the_plan_splits_as_the_tests_assume() -> None:
    assert wave_targets(load_plan_text(PLAN)) == [("r1",), ("r0", "r2"), ("r3", "r4", "r5")]


def test_counts_the_waves_whose_targets_all_opened() -> None:
    plan = load_plan_text(PLAN)
    w = wave_targets(plan)
    assert waves_opened(plan, []) == 0
    assert waves_opened(plan, [_opened(1, w[0])]) == 1
    halted = {"wave": 2, "waves": 3, "state": "halted", "targets": list(w[1])}
    assert waves_opened(plan, [_opened(1, w[0]), halted]) == 1
    waiting = {"wave": 2, "waves": 3, "state": "waiting", "targets": list(w[1])}
    assert waves_opened(plan, [_opened(1, w[0]), waiting]) == 1
    assert waves_opened(plan, [_opened(1, w[0]), _opened(2, w[1])]) == 2
    assert waves_opened(plan, [_opened(1, w[0]), _opened(2, w[1]), _opened(3, w[2])]) == 3
    assert waves_opened(load_plan_text(PLAN_NO_ROLLOUT), [_opened(1, w[0])]) == 0


def test_a_retry_of_a_retry_carries_the_openings_through() -> None:
    plan = load_plan_text(PLAN)
    w = wave_targets(plan)
    # A retry that started with 2 waves opened ran them as its one first wave,
    # then opened the third.
    merged = w[0] + w[1]
    assert waves_opened(plan, [_opened(1, merged)], started_with=2) == 2
    assert waves_opened(plan, [_opened(1, merged), _opened(2, w[2])], started_with=2) == 3
    # It died before opening any wave: what it was started with still counts.
    assert waves_opened(plan, [], started_with=2) == 2


def test_phased_counts_the_latest_phase_only() -> None:
    plan = load_plan_text(PLAN)
    w = wave_targets(plan)
    events = [_opened(1, w[0]), _opened(2, w[1]), _opened(3, w[2]), _opened(1, w[0])]
    # The second phase had opened only the canary: the canary goes first again.
    assert waves_opened(plan, events) == 1


def test_a_target_added_to_a_wave_since_keeps_it_closed() -> None:
    plan = load_plan_text(PLAN)
    assert waves_opened(plan, [_opened(1, ("r1",)), _opened(2, ("r0",))]) == 1


def test_the_journal_reads_the_openings_of_a_run(journal: Journal) -> None:
    plan = load_plan_text(PLAN)
    w = wave_targets(plan)
    begin(journal, "r1", ["infra@r1"])
    c = journal.conn
    for seq, (wave, targets) in enumerate([(1, w[0]), (2, w[1])], start=1):
        data = json.dumps(_opened(wave, targets))
        c.execute("INSERT INTO events VALUES ('r1', ?, ?, 'WaveChanged', ?)", (seq, seq, data))
    assert journal.waves_opened(journal.run("r1"), plan) == 2


def _record(run_id: str, key: str, status: str, h: str | None, out: dict[str, str]) -> Any:
    task, target = key.split("@")
    return InstanceRecord(
        run_id=run_id, key=key, node=0, task=task, target=target, status=status,
        command_hash=h, exit_code=None, outputs=out, reason="", attempts=1,
        started_at=None, ended_at=None,
    )  # fmt: skip


def test_a_command_that_now_uses_an_output_not_recorded_runs_again() -> None:
    graph = expand(load_plan_text(PLAN))
    recs = []
    for node in graph.nodes:
        if node.task == "infra":
            recs.append(_record("r1", node.key, "succeeded", command_hash(f"infra {node.target}"),
                                {"endpoint": "e"}))  # fmt: skip
        else:
            recs.append(_record("r1", node.key, "succeeded", "old", {}))
    prev = RunRecord(
        id="r1", parent_id=None, plan_path="/p.yaml", plan_name="p", plan_hash="h",
        plan_snapshot="", mode="dag", kind="apply", options={}, started_at=0.0,
        ended_at=1.0, status="succeeded", counts={}, user="u", host="h", pid=1, pid_start=None,
    )  # fmt: skip
    rp = plan_retry(graph, prev, recs, Redactor())
    k8s = {graph.index[f"k8s@r{i}"] for i in range(6)}
    assert rp.only == frozenset(k8s)
    assert {rp.reasons[i] for i in k8s} == {
        "its command now uses tasks.infra.outputs.cluster, which run r1 did not record"
    }
