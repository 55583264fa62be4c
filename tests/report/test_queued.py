"""Queued time and its reasons in every report format, from a real ``fleetrun apply``:
six instances through a pool of ``rate: 2/s`` (burst 3) and six through a pool of one slot."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from fleetrun.cli import cli
from fleetrun.engine import (
    AttemptEnded,
    AttemptStarted,
    Event,
    InstanceSettled,
    PoolChanged,
    RunEnded,
    RunStarted,
)
from fleetrun.report import build_report
from fleetrun.report._model import PoolPause, RunReport
from fleetrun.report._queued import OTHER, format_reasons, held_back, ordered, said, split
from fleetrun.state import Journal, JournalReader, JournalWriter, NewInstance

from .conftest import Recorded

REGIONS = [f"r{i}" for i in range(6)]
PLAN = f"""\
name: queued
targets: {{{", ".join(f"{r}: {{}}" for r in REGIONS)}}}
pools:
  api: {{rate: 2/s, burst: 3}}
  db: {{concurrency: 1}}
tasks:
  call:
    for_each: all
    pools: [api]
    run: "true"
  migrate:
    for_each: all
    pools: [db]
    run: sleep 0.05
"""


def _report(run: Recorded, fmt: str) -> str:
    res = CliRunner().invoke(cli, ["report", "--state-dir", str(run.state), "--format", fmt])
    assert res.exit_code == 0, res.stderr
    return res.stdout


def test_queued_time_and_reasons_in_every_format(make_run: Callable[..., Recorded]) -> None:
    run = make_run("-j", "8", text=PLAN)
    data = json.loads(_report(run, "json"))
    by_key = {i["key"]: i for i in data["instances"]}
    calls = sorted((by_key[f"call@{r}"] for r in REGIONS), key=lambda i: i["started_at"])
    # Three tokens at first, then one each 0.5 s: the later instances queued for the
    # rate, each longer than the one before.
    rated = [c for c in calls if "pool api rate" in c["queued_reasons"]]
    assert len(rated) >= 2
    assert calls[-1] in rated
    assert [c["queued"] for c in rated] == sorted(c["queued"] for c in rated)
    assert calls[-1]["queued"] >= 1.0  # 3 more tokens at 2/s: 1.5 s
    for c in calls:
        assert c["queued"] >= sum(c["queued_reasons"].values()) - 0.002
    migrates = [by_key[f"migrate@{r}"] for r in REGIONS]
    assert sum("pool db full" in m["queued_reasons"] for m in migrates) == 5

    tasks = {t["task"]: t for t in data["tasks"]}
    assert tasks["call"]["queued"] >= 2.0  # 0.5 + 1 + 1.5 s
    assert next(iter(tasks["call"]["queued_reasons"])) == "pool api rate"
    assert next(iter(tasks["migrate"]["queued_reasons"])) == "pool db full"
    pools = {p["pool"]: p for p in data["pools"]}
    assert pools["api"]["queued"] == tasks["call"]["queued"]
    assert pools["db"]["queued_reasons"] == tasks["migrate"]["queued_reasons"]
    attempts = [a for a in data["attempts"] if a["key"] == calls[-1]["key"]]
    assert attempts[0]["queued_reason"] == "pool api rate"
    assert attempts[0]["ready_at"] <= attempts[0]["started_at"]
    # The run was slow because of the rate, and the report says so.
    assert re.match(r"[0-9.]+s queued: pool api rate", data["overall"]["held_back"])
    assert data["overall"]["queued"] >= tasks["call"]["queued"]

    table = _report(run, "table")
    row = re.search(r"^overall .*$", table, re.M)
    assert row is not None
    assert "queued: pool api rate" in row.group()
    task_row = re.search(r"^call .*$", table, re.M)
    assert task_row is not None
    assert "pool api rate" in task_row.group()
    assert "Most queued instances" in table
    assert f"{calls[-1]['key']} " in table

    markdown = _report(run, "markdown")
    assert "| QUEUED | QUEUED FOR |" in markdown
    assert "queued: pool api rate" in markdown

    root = ET.fromstring(_report(run, "junit"))
    suite = root.find("./testsuite[@name='queued.call']")
    assert suite is not None
    props = [(p.get("name"), p.get("value") or "") for p in suite.iter("property")]
    assert float(dict(props)["fleetrun.queued"]) >= 2.0
    # One property per reason, most first.
    assert next(v for k, v in props if k == "fleetrun.queued_for").startswith("pool api rate: ")
    case = suite.find(f"./testcase[@name='{calls[-1]['target']}']")
    assert case is not None
    assert "queued" in (case.findtext("system-out") or "")

    page = _report(run, "html")
    assert page.count('<rect class="queued') >= 3
    assert "<title>queued " in page
    assert ": pool api rate</title>" in page
    assert "Most queued instances" in page


def test_held_back_names_only_limits_beyond_the_graph_and_j() -> None:
    rate = {"pool api rate": 40.0, "parallelism limit (-j 8)": 90.0, OTHER: 5.0}
    # 0.08x: 50 s of wall for 4 s of work; the rate explains it, -j does not.
    assert held_back(50.0, 1.0, 4.0, 8, ordered(rate)) == "40.0s queued: pool api rate"
    two = {"wave closed": 12.0, "pool api rate": 41.0}
    assert held_back(50.0, 1.0, 4.0, None, ordered(two)) == (
        "41.0s queued: pool api rate, 12.0s wave closed"
    )
    # Not low: the wall is within twice what the critical path allows.
    assert held_back(50.0, 30.0, 60.0, None, rate) == ""
    # Low, but only -j and other waits: nothing to say.
    assert held_back(50.0, 1.0, 4.0, 8, {"parallelism limit (-j 8)": 90.0, OTHER: 9.0}) == ""
    # A named reason too small to explain the wall.
    assert held_back(50.0, 1.0, 4.0, 8, {"pool db full": 2.0}) == ""
    assert format_reasons({}) == "-"
    assert format_reasons(ordered({"a": 1.0, "b": 3.0, OTHER: 0.001})) == "b 3.00s, a 1.00s"


SPLIT_PLAN = """\
name: split
targets: {t0: {}, t1: {}}
pools:
  api: {rate: 2/s}
tasks:
  call:
    for_each: all
    pools: [api]
    run: "true"
"""


def _journal_with_a_pause(state: Path) -> RunReport:
    """A run whose pool ``api`` paused for Retry-After from 1 s to 2 s. ``call@t0``
    was ready at 0 s and started at 3 s, journaled as held by the pause (the
    engine names the whole wait once); ``call@t1`` waited 0.5 s to 3.5 s for a
    full pool."""
    t0 = 1_800_000_000.0
    journal = Journal(state)
    try:
        journal.begin_run(
            run_id="r1", parent_id=None, plan_path=str(state / "gone.yaml"), plan_name="split",
            plan_hash="h", plan_snapshot=SPLIT_PLAN, mode="dag", kind="apply",
            options={"parallelism": None}, started_at=t0,
            instances=[NewInstance(key=f"call@t{i}", node=i, task="call", target=f"t{i}")
                       for i in range(2)],
        )  # fmt: skip
        writer = JournalWriter(journal.db_path, "r1")
        writer.start()
        events: list[Event] = [
            RunStarted(at=t0, run_id="r1", plan_name="split", mode="dag", parallelism=None,
                       nodes=2),
            PoolChanged(at=t0 + 1, pool="api", rate=2.0, reason="paused 1s for Retry-After",
                        paused=1.0),
            PoolChanged(at=t0 + 2, pool="api", rate=2.0,
                        reason="resumed: the Retry-After pause is over"),
        ]  # fmt: skip
        for node, (ready, start, why) in enumerate(
            [(0.0, 3.0, "pool api paused for Retry-After"), (0.5, 3.5, "pool api full")]
        ):
            key = f"call@t{node}"
            events += [
                AttemptStarted(at=t0 + start, node=node, key=key, attempt=1, command="true",
                               pid=None, pgid=None, log_path=key, ready_at=t0 + ready,
                               queued_reason=why),
                AttemptEnded(at=t0 + start + 0.25, node=node, key=key, attempt=1,
                             started_at=t0 + start, exit_code=0, signal=None, timed_out=False,
                             outcome="succeeded"),
                InstanceSettled(at=t0 + start + 0.25, node=node, key=key, state="succeeded",
                                attempts=1),
            ]  # fmt: skip
        events.append(RunEnded(at=t0 + 4, run_id="r1", status="succeeded", counts={}))
        for ev in events:
            writer(ev)
        writer.close()
    finally:
        journal.close()
    with JournalReader(state) as reader:
        return build_report(reader, "r1")


def test_a_wait_through_a_pause_and_the_rate_counts_each_part(tmp_path: Path) -> None:
    report = _journal_with_a_pause(tmp_path / "state")
    split = {"pool api rate": 2.0, "pool api paused for Retry-After": 1.0}
    paced, full = report.instances
    assert paced.queued == pytest.approx(3.0)
    assert list(paced.queued_reasons) == list(split)  # most first
    assert paced.queued_reasons == pytest.approx(split)
    # A wait for a full pool stays whole, pause or not.
    assert full.queued_reasons == pytest.approx({"pool api full": 3.0})
    both = {**split, "pool api full": 3.0}
    (task,) = report.tasks
    (pool,) = report.pools
    for reasons in (task.queued_reasons, pool.queued_reasons, report.overall.queued_reasons):
        assert reasons == pytest.approx(both)
    # The attempt keeps the engine's word, beside its divided wait.
    attempt = report.attempts[0]
    assert attempt.queued_reason == "pool api paused for Retry-After"
    assert attempt.queued_reasons == pytest.approx(split)
    assert said(attempt.queued_reasons, attempt.queued_reason) == (
        "pool api rate 2.00s, pool api paused for Retry-After 1.00s"
    )

    res = CliRunner().invoke(cli, ["report", "--state-dir", str(tmp_path / "state")])
    assert res.exit_code == 0, res.stderr
    row = re.search(r"^call@t0 .*$", res.stdout, re.M)
    assert row is not None
    assert row.group().split(None, 2)[2] == (
        "pool api rate 2.00s, pool api paused for Retry-After 1.00s"
    )


def test_split_divides_only_paced_waits_at_their_own_pools_pauses() -> None:
    pauses = {"api": (PoolPause(10.0, 11.0), PoolPause(12.0, 14.0))}
    # A rate wait that began inside one pause and ended inside the next.
    assert split("pool api rate", 10.5, 13.0, pauses) == pytest.approx(
        {"pool api paused for Retry-After": 1.5, "pool api rate": 1.0}
    )
    # Another pool's pauses, another reason, or no ready time: as journaled.
    assert split("pool db rate", 10.0, 14.0, pauses) == {"pool db rate": 4.0}
    assert split("wave closed", 10.0, 14.0, pauses) == {"wave closed": 4.0}
    assert split(None, 10.0, 14.0, pauses) == {OTHER: 4.0}
    assert split("pool api rate", None, 14.0, pauses) == {}
    # A pause that held the whole wait.
    assert split("pool api paused for Retry-After", 12.5, 13.5, pauses) == {
        "pool api paused for Retry-After": 1.0
    }


def test_split_names_a_back_off_pause_as_the_pools_own() -> None:
    """A pause the pool took by itself (the provider gave no Retry-After) is not
    named a Retry-After pause."""
    pauses = {"api": (PoolPause(10.0, 11.0, backoff=True), PoolPause(12.0, 14.0))}
    assert split("pool api rate", 10.5, 13.0, pauses) == pytest.approx(
        {
            "pool api paused (back-off)": 0.5,
            "pool api paused for Retry-After": 1.0,
            "pool api rate": 1.0,
        }
    )
    assert split("pool api paused (back-off)", 10.2, 10.8, pauses) == pytest.approx(
        {"pool api paused (back-off)": 0.6}
    )


def test_pause_spans_tell_a_back_off_from_a_retry_after() -> None:
    from fleetrun.engine import BACKOFF_WHY
    from fleetrun.report._pool_series import pause_spans

    def ev(at: float, paused: float, reason: str) -> dict[str, object]:
        return {"pool": "api", "at": at, "rate": 5.0, "concurrency": None,
                "paused": paused, "reason": reason}  # fmt: skip

    spans = pause_spans(
        [
            ev(10.0, 1.0, f"paused 1s {BACKOFF_WHY}"),
            ev(11.0, 0.0, "resumed: the Retry-After pause is over"),
            ev(12.0, 2.0, "paused 2s for Retry-After"),
            ev(12.5, 2.0, f"paused 2s {BACKOFF_WHY}"),  # one span with the one above
        ],
        end_at=20.0,
    )
    assert spans["api"] == (PoolPause(10.0, 11.0, True), PoolPause(12.0, 14.5, False))
