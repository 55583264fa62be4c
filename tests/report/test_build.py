"""``build_report`` against the journal of real runs: every number checked independently."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fleetrun.errors import RunNotFoundError
from fleetrun.report._build import build_report
from fleetrun.report._model import RunReport

from .conftest import CHAIN, PARALLELISM, POOL_CAP, TARGETS, Recorded

MS = 0.0005


def _report(rec: Recorded, run_id: str | None = None) -> RunReport:
    with rec.journal() as j:
        return build_report(j, run_id or rec.run_id)


def _rows(rec: Recorded, sql: str, *args: Any) -> list[sqlite3.Row]:
    conn = sqlite3.connect(rec.state / "state.db")
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def _attempt_times(rec: Recorded, run_id: str | None = None) -> dict[str, float]:
    """Per instance key: the exact sum of its attempts' (ended_at - started_at)."""
    out: dict[str, float] = {}
    for a in _rows(
        rec, "SELECT key, started_at, ended_at FROM attempts WHERE run_id=?", run_id or rec.run_id
    ):
        out[a["key"]] = out.get(a["key"], 0.0) + (a["ended_at"] - a["started_at"])
    return out


def test_times_agree_with_the_journal_to_the_millisecond(demo: Recorded) -> None:
    r = _report(demo)
    (run,) = _rows(demo, "SELECT started_at, ended_at FROM runs WHERE id=?", demo.run_id)
    assert abs(r.overall.wall - (run["ended_at"] - run["started_at"])) < MS
    per_key = _attempt_times(demo)
    assert abs(r.overall.task_time - sum(per_key.values())) < MS
    assert len(r.instances) == 12
    for i in r.instances:
        assert abs(i.task_time - per_key.get(i.key, 0.0)) < MS, i.key
    # Phases: build holds prep and fan, deploy the rest; each sums its instances.
    assert [p.name for p in r.phases] == ["build", "deploy"]
    members = {p.name: {i.key for i in r.instances if i.phase == p.name} for p in r.phases}
    assert members["build"] == {"prep", "fan@a", "fan@b", "fan@c"}
    assert len(members["deploy"]) == 8
    for p in r.phases:
        assert p.instances == len(members[p.name])
        assert abs(p.task_time - sum(per_key.get(k, 0.0) for k in members[p.name])) < MS
    assert r.overall.counts == {"succeeded": 10, "failed": 1, "skipped": 1}
    assert sum(p.instances for p in r.phases) == r.overall.instances


def test_attempts_are_journaled_ones_in_start_order(demo: Recorded) -> None:
    r = _report(demo)
    rows = _rows(
        demo, "SELECT key, n, outcome FROM attempts WHERE run_id=? ORDER BY started_at, key, n",
        demo.run_id,
    )  # fmt: skip
    assert [(a.key, a.n, a.outcome) for a in r.attempts] == [
        (x["key"], x["n"], x["outcome"]) for x in rows
    ]
    fan_b = [a for a in r.attempts if a.key == "fan@b"]
    assert [(a.n, a.outcome, a.exit_code, a.retry_reason) for a in fan_b] == [
        (1, "retrying", 75, "exit 75"),
        (2, "succeeded", 0, None),
    ]
    assert all(a.target == "b" and a.task == "fan" for a in fan_b)


def _same_speedup(shown: float | None, task_time: float, wall: float) -> bool:
    """The speedup's definition: task time / wall, not measured under a second of either."""
    if task_time < 1.0 or wall < 1.0:
        return shown is None
    return shown is not None and abs(shown - task_time / wall) < 1e-9


def test_critical_path_is_the_chain_with_consistent_ratios(demo: Recorded) -> None:
    r = _report(demo)
    assert [c.key for c in r.critical_path] == list(CHAIN)
    per_key = _attempt_times(demo)
    chain = sum(per_key[k] for k in CHAIN)
    assert abs(r.overall.critical_path - chain) < MS
    assert {i.key for i in r.instances if i.critical} == set(CHAIN)
    # Each step starts after the one before it ended; waited is measured from that end.
    for before, step in zip(r.critical_path, r.critical_path[1:], strict=False):
        assert step.started_at >= before.ended_at
        assert abs(step.waited - (step.started_at - before.ended_at)) < 1e-9
        assert step.waited >= 0
    # Definitions, computed independently.
    o = r.overall
    lower = max(chain, sum(per_key.values()) / PARALLELISM)
    assert abs(o.lower_bound - lower) < MS
    assert _same_speedup(o.speedup, o.task_time, o.wall)
    assert abs(o.efficiency - o.lower_bound / o.wall) < 1e-9
    assert 0 < o.efficiency <= 1.0
    for p in r.phases:
        assert p.wall > 0
        assert _same_speedup(p.speedup, p.task_time, p.wall)
        assert abs(p.efficiency - p.lower_bound / p.wall) < 1e-9
        assert p.critical_path <= p.wall + MS
    build = r.phases[0]
    assert abs(build.critical_path - per_key["prep"]) < MS  # prep outlasts fan@b's two tries
    deploy = r.phases[1]
    assert abs(deploy.critical_path - per_key["mid"] - per_key["final"]) < MS


def test_estimates_dag_run(demo: Recorded) -> None:
    r = _report(demo)
    est = {e.mode: e for e in r.estimates}
    assert list(est) == ["sequential", "phased", "dag"]
    assert [m for m, e in est.items() if e.measured] == ["dag"]
    assert est["dag"].makespan == r.overall.wall
    assert abs(est["sequential"].makespan - r.overall.task_time) < 1e-9
    # phased: at least each phase's own critical path, one after the other.
    assert est["phased"].makespan >= sum(p.critical_path for p in r.phases) - MS


def test_estimates_phased_run(phased: Recorded) -> None:
    r = _report(phased)
    est = {e.mode: e for e in r.estimates}
    assert [m for m, e in est.items() if e.measured] == ["phased"]
    assert est["phased"].makespan == r.overall.wall
    assert abs(est["sequential"].makespan - r.overall.task_time) < 1e-9
    assert est["dag"].makespan <= est["phased"].makespan
    assert est["dag"].makespan >= r.overall.critical_path - MS


def test_retries_and_throttling_per_task_and_pool(demo: Recorded) -> None:
    r = _report(demo)
    tasks = {t.task: t for t in r.tasks}
    assert list(tasks) == ["prep", "fan", "mid", "final", "check", "notify"]
    fan = tasks["fan"]
    assert (fan.instances, fan.attempts, fan.retries, fan.throttled, fan.failed) == (3, 4, 1, 1, 0)
    assert fan.slowest_key == "fan@b"  # two attempts of the same sleep
    check = tasks["check"]
    assert (check.instances, check.attempts, check.retries, check.failed) == (3, 3, 0, 1)
    assert tasks["notify"].attempts == 2  # notify@c was skipped
    assert all(t.retries == 0 for name, t in tasks.items() if name != "fan")
    (pool,) = r.pools
    assert (pool.pool, pool.concurrency, pool.rate) == ("api", POOL_CAP, None)
    assert (pool.instances, pool.attempts, pool.retries, pool.throttled) == (3, 4, 1, 1)
    assert pool.rate_changes == 0
    # Independently: the most fan attempts open at once, from the journal.
    marks = sorted(
        (t, d)
        for a in _rows(
            demo, "SELECT * FROM attempts WHERE run_id=? AND key LIKE 'fan@%'", demo.run_id
        )
        for t, d in ((a["started_at"], 1), (a["ended_at"], -1))
    )
    peak = running = 0
    for _, d in marks:
        running += d
        peak = max(peak, running)
    assert pool.peak_in_flight == peak
    assert 1 <= pool.peak_in_flight <= POOL_CAP


def test_slowest_targets(demo: Recorded) -> None:
    r = _report(demo)
    per_key = _attempt_times(demo)
    assert {t.target for t in r.slowest_targets} == set(TARGETS)
    times = [t.task_time for t in r.slowest_targets]
    assert times == sorted(times, reverse=True)
    for t in r.slowest_targets:
        want = sum(v for k, v in per_key.items() if k.endswith("@" + t.target))
        assert abs(t.task_time - want) < MS
        assert t.instances == 3
        assert t.failed == (1 if t.target == "c" else 0)
        assert t.wall >= t.task_time / 3 - MS


def test_retry_run_shows_reused_instances_with_no_time(
    retried: tuple[Recorded, Recorded],
) -> None:
    first, second = retried
    r = _report(second)
    assert (r.kind, r.parent_id, r.status) == ("retry", first.run_id, "succeeded")
    states = {i.key: i.state for i in r.instances}
    assert states["check@c"] == "succeeded"
    assert states["notify@c"] == "succeeded"
    reused = [i for i in r.instances if i.state == "reused"]
    assert len(reused) == 10
    assert all(i.task_time == 0 and i.attempts == 0 and i.started_at is None for i in reused)
    per_key = _attempt_times(second, second.run_id)
    assert set(per_key) == {"check@c", "notify@c"}
    assert abs(r.overall.task_time - sum(per_key.values())) < MS
    assert [c.key for c in r.critical_path] == ["check@c", "notify@c"]
    assert {e.mode: e.measured for e in r.estimates} == {
        "sequential": False, "phased": False, "dag": True,
    }  # fmt: skip


def test_report_without_a_loadable_plan_has_notes_not_graph_parts(
    make_run: Callable[..., Recorded],
) -> None:
    fleet = "a: {}\nb: {}\n"
    text = (
        "name: fleeted\ntargets: fleet.yaml\nphases: [one]\ntasks:\n"
        "  t:\n    phase: one\n    for_each: all\n    run: 'true'\n"
    )
    rec = make_run(text=text, files={"fleet.yaml": fleet})
    good = _report(rec)
    assert [p.name for p in good.phases] == ["one"]
    assert good.notes == ()
    # The plan changed: the graph comes from the snapshot, with a note.
    rec.plan.write_text(text.replace("name: fleeted", "name: renamed"))
    changed = _report(rec)
    assert [p.name for p in changed.phases] == ["one"]
    assert any("changed since this run" in n for n in changed.notes)
    # The plan no longer loads at all: the snapshot still does.
    rec.plan.write_text("name: [unclosed\n")
    broken = _report(rec)
    assert [p.name for p in broken.phases] == ["one"]
    assert any("no longer loads" in n for n in broken.notes)
    # The plan and its fleet file are gone: no graph, still every measured number.
    rec.plan.unlink()
    (rec.plan.parent / "fleet.yaml").unlink()
    bare = _report(rec)
    assert any("is gone" in n for n in bare.notes)
    assert any("could not be loaded" in n for n in bare.notes)
    assert bare.phases == ()
    assert bare.critical_path == ()
    assert bare.pools == ()
    assert [(e.mode, e.measured) for e in bare.estimates] == [("dag", True)]
    assert abs(bare.overall.task_time - good.overall.task_time) < 1e-9
    assert [t.task for t in bare.tasks] == ["t"]
    assert bare.tasks[0].instances == 2


def test_unknown_run_raises(demo: Recorded) -> None:
    with demo.journal() as j, pytest.raises(RunNotFoundError, match="fleetrun history"):
        build_report(j, "no-such-run")


def test_throttled_retries_are_counted_from_the_journal(demo: Recorded, tmp_path: Path) -> None:
    # The engine's decision, as journaled, not the retry reason: a copy of the
    # demo's journal whose throttle flag is cleared reports none.
    copy = tmp_path / "state"
    shutil.copytree(demo.state, copy)
    conn = sqlite3.connect(copy / "state.db")
    with conn:
        conn.execute("UPDATE attempts SET throttled=0")
    reasons = [r[0] for r in conn.execute("SELECT retry_reason FROM attempts WHERE throttled=0")]
    conn.close()
    assert "exit 75" in reasons
    r = _report(Recorded(copy, demo.run_id, demo.plan))
    tasks = {t.task: t for t in r.tasks}
    assert (tasks["fan"].retries, tasks["fan"].throttled) == (1, 0)
    assert [a.throttled for a in r.attempts if a.retry_reason] == [False]
    assert [a.throttled for a in _report(demo).attempts if a.retry_reason] == [True]


def test_a_sequential_run_is_bounded_as_minus_j_1(make_run: Callable[..., Recorded]) -> None:
    # Without -j, sequential mode still runs one instance at a time: the lower
    # bound is all the task time, as at -j 1, not the critical path.
    rec = make_run("--mode", "sequential")
    r = _report(rec)
    o = r.overall
    assert abs(o.lower_bound - sum(_attempt_times(rec).values())) < MS
    assert o.lower_bound > o.critical_path
    assert abs(o.efficiency - o.lower_bound / o.wall) < 1e-9
    assert 0 < o.efficiency <= 1.0
