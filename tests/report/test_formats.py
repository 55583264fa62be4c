"""The renderers over a real run's report: JSON numbers, table layout, markdown, JUnit."""

from __future__ import annotations

import dataclasses
import json
import re
import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema

from fleetrun.report._build import build_report
from fleetrun.report._formats import render_json, render_junit, render_markdown, render_table
from fleetrun.report._model import (
    REPORT_FORMAT_VERSION,
    AttemptRecord,
    InstanceRecord,
    RunReport,
    Span,
)

from .conftest import CHAIN, Recorded

MS = 0.0005
XSD = Path(__file__).parent / "data" / "junit.xsd"


@pytest.fixture(scope="module")
def report(demo: Recorded) -> RunReport:
    with demo.journal() as j:
        return build_report(j, demo.run_id)


def _journal_times(rec: Recorded) -> tuple[float, dict[str, float]]:
    conn = sqlite3.connect(rec.state / "state.db")
    try:
        (wall,) = conn.execute(
            "SELECT ended_at - started_at FROM runs WHERE id=?", (rec.run_id,)
        ).fetchone()
        per_key: dict[str, float] = {}
        for key, dur in conn.execute(
            "SELECT key, ended_at - started_at FROM attempts WHERE run_id=?", (rec.run_id,)
        ):
            per_key[key] = per_key.get(key, 0.0) + dur
    finally:
        conn.close()
    return wall, per_key


def test_json_numbers_agree_with_the_journal(demo: Recorded, report: RunReport) -> None:
    data = json.loads(render_json(report))
    wall, per_key = _journal_times(demo)
    assert abs(data["overall"]["wall"] - wall) < MS
    assert abs(data["overall"]["task_time"] - sum(per_key.values())) < MS
    for i in data["instances"]:
        assert abs(i["task_time"] - per_key.get(i["key"], 0.0)) < MS, i["key"]
    for p in data["phases"]:
        keys = [i["key"] for i in data["instances"] if i["phase"] == p["name"]]
        assert len(keys) == p["instances"]
        assert abs(p["task_time"] - sum(per_key.get(k, 0.0) for k in keys)) < MS
    # Times are kept to the millisecond; ratios to 4 decimals.
    assert data["overall"]["wall"] == round(data["overall"]["wall"], 3)
    shown = report.overall.speedup
    assert data["overall"]["speedup"] == (None if shown is None else round(shown, 4))


def test_json_layout_is_the_dataclass_fields(report: RunReport) -> None:
    text = render_json(report)
    assert text == render_json(report)  # stable
    data = json.loads(text)
    names = [f.name for f in dataclasses.fields(RunReport)]
    assert list(data) == ["format", *names]
    assert data["format"] == REPORT_FORMAT_VERSION
    assert list(data["overall"]) == [f.name for f in dataclasses.fields(Span)]
    assert list(data["instances"][0]) == [f.name for f in dataclasses.fields(InstanceRecord)]
    assert list(data["attempts"][0]) == [f.name for f in dataclasses.fields(AttemptRecord)]
    assert [c["key"] for c in data["critical_path"]] == list(CHAIN)
    assert [(e["mode"], e["measured"]) for e in data["estimates"]] == [
        ("sequential", False), ("phased", False), ("dag", True),
    ]  # fmt: skip
    assert data["pools"][0]["peak_in_flight"] == report.pools[0].peak_in_flight


def _table_block(text: str, title: str) -> list[str]:
    lines = text.splitlines()
    start = next(k for k, line in enumerate(lines) if line.startswith(title))
    block = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        block.append(line)
    return block


def test_table_has_fixed_width_columns_and_the_numbers(report: RunReport) -> None:
    text = render_table(report)
    block = _table_block(text, "Sequential vs Parallel")
    header = block[0]
    assert header.split("  ")[0] == "PHASE"
    starts = [m.start() for m in re.finditer(r"(?:^|(?<=  ))\S", header)]
    assert len(starts) == 8
    rows = {line.split()[0]: line for line in block[1:]}
    assert list(rows) == ["build", "deploy", "overall"]
    for line in rows.values():
        for s in starts[1:]:
            assert line[s - 2 : s] == "  ", (line, s)
            assert line[s] != " ", (line, s)
    # Cells by column (a speedup too short to measure holds spaces).
    line = rows["overall"]
    overall = [
        line[a:b].strip() for a, b in zip([0, *starts[1:]], [*starts[1:], None], strict=True)
    ]
    assert overall[1] == "12"
    o = report.overall
    speedup = "too short to measure" if o.speedup is None else f"{o.speedup:.2f}x"
    assert overall[4] == speedup
    assert overall[7] == f"{o.efficiency * 100:.0f}%"
    path = _table_block(text, "Critical path")
    assert [line.split()[1] for line in path[1:]] == list(CHAIN)
    tasks = {line.split()[0]: line.split() for line in _table_block(text, "Tasks")[1:]}
    assert tasks["fan"][1:6] == ["3", "4", "1", "1", "0"]
    pools = _table_block(text, "Pools")
    assert pools[1].split()[:8] == ["api", "2", "-", "3", "4", "1", "1", "2"]
    modes = {line.split()[0]: line.split() for line in _table_block(text, "Modes")[1:]}
    assert modes["dag"][-1] == "measured"
    assert modes["phased"][-1] == "estimated"
    assert [line.split()[0] for line in _table_block(text, "Slowest targets")[1:]] == [
        t.target for t in report.slowest_targets
    ]


def test_markdown_tables_are_well_formed(report: RunReport) -> None:
    text = render_markdown(report)
    tables: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("|"):
            if not tables or not tables[-1]:
                tables.append([])
            tables[-1].append(line)
        elif tables and tables[-1]:
            tables.append([])
    tables = [t for t in tables if t]
    # spans, modes, critical path, tasks, pools, most queued, targets
    assert len(tables) == 7
    for t in tables:
        widths = {line.count(" | ") for line in t[:1] + t[2:]}
        assert len(widths) == 1, t
        assert re.fullmatch(r"\|(-{3}:?\|)+|\|((---|---:)\|)+", t[1]), t[1]
    assert "| overall | 12 |" in text
    assert "### Critical path" in text
    assert [line.split(" | ")[1] for line in tables[2][2:]] == list(CHAIN)
    # The pool of 2 held one of the three fan instances back.
    assert tables[5][0] == "| INSTANCE | QUEUED | QUEUED FOR |"
    assert any(line.startswith("| fan@") and "pool api full" in line for line in tables[5][2:])


def test_junit_validates_and_counts_match(report: RunReport) -> None:
    xml = render_junit(report)
    xmlschema.XMLSchema(str(XSD)).validate(xml)
    root = ET.fromstring(xml)
    cases = root.findall("./testsuite/testcase")
    assert len(cases) == len(report.instances) == int(root.get("tests", "0"))
    assert int(root.get("failures", "-1")) == 1
    assert len(root.findall(".//failure")) == 1
    assert len(root.findall(".//skipped")) == 1
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert list(suites) == [f"report-demo.{t.task}" for t in report.tasks]
    check = suites["report-demo.check"]
    assert (check.get("tests"), check.get("failures"), check.get("skipped")) == ("3", "1", "0")
    by_name = {c.get("name"): c for c in check.findall("testcase")}
    failure = by_name["c"].find("failure")
    assert failure is not None
    assert failure.get("message") == "exit 1"  # the cause once, in the engine's words
    assert failure.text == "check@c failed after 1 attempt(s): exit 1"
    assert by_name["c"].get("classname") == "report-demo.check"
    notify_c = {c.get("name"): c for c in suites["report-demo.notify"]}["c"]
    skipped = notify_c.find("skipped")
    assert skipped is not None
    assert "needs check@c" in (skipped.get("message") or "")
    times = {i.key: i.task_time for i in report.instances}
    fan_b = {c.get("name"): c for c in suites["report-demo.fan"]}["b"]
    assert float(fan_b.get("time", "-1")) == pytest.approx(times["fan@b"], abs=MS)
    out = fan_b.findtext("system-out") or ""
    logs = [a.log_path for a in report.attempts if a.key == "fan@b"]
    assert len(logs) == 2
    assert all(p in out for p in logs)
    assert "retrying (exit 75)" in out


def test_junit_of_a_retry_run(retried: tuple[Recorded, Recorded]) -> None:
    _, second = retried
    with second.journal() as j:
        r = build_report(j, second.run_id)
    xml = render_junit(r)
    xmlschema.XMLSchema(str(XSD)).validate(xml)
    root = ET.fromstring(xml)
    assert root.get("failures") == "0"
    assert not root.findall(".//skipped")
    reused = [c for c in root.iter("testcase") if "reused" in (c.findtext("system-out") or "")]
    assert len(reused) == 10
    assert all(c.get("time") == "0.000" for c in reused)


def test_junit_every_state_and_hostile_text_stays_valid(report: RunReport) -> None:
    states = ["interrupted", "cancelled", "not_started", "running", "reused"]
    changed = [
        dataclasses.replace(i, state=s, reason=f"<&> \x1b[31m\x00 {s} ]]>") if s else i
        for i, s in zip(report.instances, [*states, *[None] * 20], strict=False)
    ]
    r = dataclasses.replace(report, instances=tuple(changed), notes=("a note with <xml> & \x07",))
    xml = render_junit(r)
    xmlschema.XMLSchema(str(XSD)).validate(xml)
    root = ET.fromstring(xml)
    assert len(root.findall(".//error")) == 1  # interrupted
    assert root.get("errors") == "1"
    # cancelled, not_started, running, and the skipped notify@c
    assert len(root.findall(".//skipped")) == 4
    assert len(root.findall(".//failure")) == 1
    notes = {p.get("value") for p in root.iter("property") if p.get("name") == "fleetrun.note"}
    assert notes == {"a note with <xml> & \ufffd"}
    messages = [e.get("message") or "" for e in root.iter("skipped")]
    assert any("<&> \ufffd[31m\ufffd cancelled ]]>" in m for m in messages)
