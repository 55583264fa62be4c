"""Text renderers of a ``RunReport``: terminal table, GitHub markdown, JSON, JUnit XML.

The table and the markdown show the same sections, built once as
(title, headers, rows) by ``_sections``: the run, "Sequential vs Parallel"
per phase and overall, the modes, the critical path, tasks, pools, the most
queued instances, slowest targets, notes. A speedup that queued time explains
says so beside the figure (``Span.held_back``). JSON holds everything in the
report; JUnit has one test case per instance, grouped in one test suite per
task, each with its queued time.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import Any

from fleetrun.engine import ending_text
from fleetrun.report._model import (
    REPORT_FORMAT_VERSION,
    AttemptRecord,
    InstanceRecord,
    RunReport,
    Span,
)
from fleetrun.report._pool_series import pool_lines
from fleetrun.report._queued import OTHER, format_reasons, merge, said
from fleetrun.report._text import (
    format_counts,
    format_duration,
    format_speedup,
    format_time,
    speedup,
    text_table,
)

_RATIOS = frozenset({"speedup", "efficiency", "rate"})
"""Float fields that are not times: kept to 4 decimals in JSON (the rest to ms)."""

_SKIPPED = frozenset({"skipped", "not_started", "cancelled", "running", "pending"})
"""Instance states that JUnit shows as ``<skipped>``; ``interrupted`` is an error."""

Section = tuple[str, list[str], list[list[str]]]

MOST_QUEUED = 10
"""How many instances the table and markdown list under "Most queued instances"."""


def _pct(ratio: float) -> str:
    return f"{ratio * 100:.0f}%"


def _speedup(s: Span) -> str:
    """The speedup, and what held it back when queued time says so."""
    x = format_speedup(s.speedup)
    return f"{x} \u2014 {s.held_back}" if s.held_back else x


def _span_row(s: Span) -> list[str]:
    return [
        s.name,
        str(s.instances),
        format_duration(s.task_time, fine=True),
        format_duration(s.wall, fine=True),
        _speedup(s),
        format_duration(s.critical_path, fine=True),
        format_duration(s.lower_bound, fine=True),
        _pct(s.efficiency),
    ]


def _header(r: RunReport) -> list[str]:
    of = f" ({r.kind} of {r.parent_id})" if r.parent_id else f" ({r.kind})"
    j = f", -j {r.parallelism}" if r.parallelism else ""
    return [
        f"run      {r.run_id}{of}",
        f"plan     {r.plan_name} ({r.plan_path})",
        f"status   {r.status}, mode {r.mode}{j}, started {format_time(r.started_at)}",
        f"counts   {format_counts(r.overall.counts) or '-'} (of {r.overall.instances})",
        f"measured wall {format_duration(r.overall.wall, fine=True)}, "
        f"task time {format_duration(r.overall.task_time, fine=True)}, "
        f"speedup {_speedup(r.overall)}, efficiency {_pct(r.overall.efficiency)}",
        f"queued   {format_duration(r.overall.queued, fine=True)} "
        f"({format_reasons(r.overall.queued_reasons)})",
    ]


def _sections(r: RunReport) -> list[Section]:
    """Every table of the report, in display order; empty ones are left out."""
    out: list[Section] = []
    spans = [*r.phases, r.overall]
    out.append(
        (
            "Sequential vs Parallel (measured)",
            ["PHASE", "INSTANCES", "TASK TIME", "WALL", "SPEEDUP", "CRITICAL PATH",
             "LOWER BOUND", "EFFICIENCY"],
            [_span_row(s) for s in spans],
        )
    )  # fmt: skip
    seq = next((e.makespan for e in r.estimates if e.mode == "sequential"), r.overall.task_time)
    out.append(
        (
            "Modes (makespan; estimates list-schedule the measured durations)",
            ["MODE", "MAKESPAN", "SPEEDUP VS SEQUENTIAL", "SOURCE"],
            [
                [
                    e.mode,
                    format_duration(e.makespan, fine=True),
                    format_speedup(speedup(seq, e.makespan))
                    + (
                        f" \u2014 {r.overall.held_back}"
                        if e.measured and r.overall.held_back
                        else ""
                    ),
                    "measured" if e.measured else "estimated",
                ]
                for e in r.estimates
            ],
        )
    )
    t0 = r.started_at
    out.append(
        (
            f"Critical path ({format_duration(r.overall.critical_path, fine=True)}, "
            f"{len(r.critical_path)} instances)",
            ["#", "INSTANCE", "START", "DURATION", "WAITED"],
            [
                [
                    str(k),
                    c.key,
                    f"+{format_duration(c.started_at - t0, fine=True)}",
                    format_duration(c.duration, fine=True),
                    format_duration(c.waited, fine=True),
                ]
                for k, c in enumerate(r.critical_path, 1)
            ],
        )
    )
    out.append(
        (
            "Tasks",
            ["TASK", "INSTANCES", "ATTEMPTS", "RETRIES", "THROTTLED", "FAILED", "TASK TIME",
             "MEAN", "SLOWEST", "QUEUED", "QUEUED FOR"],
            [
                [t.task, str(t.instances), str(t.attempts), str(t.retries), str(t.throttled),
                 str(t.failed), format_duration(t.task_time, fine=True),
                 format_duration(t.mean, fine=True),
                 f"{t.slowest_key} {format_duration(t.slowest, fine=True)}"
                 if t.slowest_key else "-",
                 format_duration(t.queued, fine=True), format_reasons(t.queued_reasons)]
                for t in r.tasks
            ],
        )
    )  # fmt: skip
    out.append(
        (
            "Pools",
            ["POOL", "CONCURRENCY", "RATE", "INSTANCES", "ATTEMPTS", "RETRIES", "THROTTLED",
             "PEAK IN FLIGHT", "RATE CHANGES", "QUEUED", "QUEUED FOR"],
            [
                [p.pool, str(p.concurrency) if p.concurrency is not None else "-",
                 f"{p.rate:g}/s" if p.rate is not None else "-", str(p.instances),
                 str(p.attempts), str(p.retries), str(p.throttled), str(p.peak_in_flight),
                 str(p.rate_changes), format_duration(p.queued, fine=True),
                 format_reasons(p.queued_reasons)]
                for p in r.pools
            ],
        )
    )  # fmt: skip
    queued = held(r)
    more = len(queued) - MOST_QUEUED
    out.append(
        (
            "Most queued instances (ready, held by a limit)"
            + (f"; {more} more held" if more > 0 else ""),
            ["INSTANCE", "QUEUED", "QUEUED FOR"],
            [
                [i.key, format_duration(i.queued, fine=True), format_reasons(i.queued_reasons)]
                for i in queued[:MOST_QUEUED]
            ],
        )
    )
    out.append(
        (
            "Slowest targets",
            ["TARGET", "INSTANCES", "TASK TIME", "WALL", "FAILED"],
            [
                [
                    t.target,
                    str(t.instances),
                    format_duration(t.task_time, fine=True),
                    format_duration(t.wall, fine=True),
                    str(t.failed),
                ]
                for t in r.slowest_targets
            ],
        )
    )
    return [s for s in out if s[2]]


def held(r: RunReport) -> list[InstanceRecord]:
    """The instances a limit held (a reason other than ``OTHER``), most queued first
    (ties in node order)."""
    queued = [i for i in r.instances if any(w != OTHER for w in i.queued_reasons)]
    queued.sort(key=lambda i: -i.queued)
    return queued


def render_table(report: RunReport) -> str:
    """The report as terminal text: a header, then fixed-width tables."""
    parts = ["\n".join(_header(report)) + "\n"]
    for title, headers, rows in _sections(report):
        parts.append(f"{title}\n{text_table(headers, rows)}")
    if report.pool_series:
        parts.append("Pools over time\n" + "".join(f"{p}\n" for p in pool_lines(report)))
    if report.notes:
        parts.append("Notes\n" + "".join(f"- {n}\n" for n in report.notes))
    return "\n".join(parts)


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    # Numbers right-aligned: a column is numeric when every cell starts with a digit or +.
    numeric = [
        all(row[k][:1].isdigit() or row[k][:1] == "+" for row in rows) for k in range(len(headers))
    ]
    lines = [
        "| " + " | ".join(_md_cell(h) for h in headers) + " |",
        "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
    ]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def render_markdown(report: RunReport) -> str:
    """The report as GitHub-flavoured markdown, for a runbook or a pull request."""
    head = _header(report)
    parts = [f"## fleetrun report: {_md_cell(report.plan_name)}\n"]
    parts.append("".join(f"- {_md_cell(line)}\n" for line in head))
    for title, headers, rows in _sections(report):
        parts.append(f"### {_md_cell(title)}\n\n{_md_table(headers, rows)}")
    if report.pool_series:
        lines = "".join(f"- {_md_cell(p)}\n" for p in pool_lines(report))
        parts.append(f"### Pools over time\n\n{lines}")
    if report.notes:
        parts.append("### Notes\n\n" + "".join(f"- {_md_cell(n)}\n" for n in report.notes))
    return "\n".join(parts)


def _jsonable(value: Any, name: str = "") -> Any:
    """Dataclasses as dicts of their fields, tuples as lists, floats rounded."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _jsonable(getattr(value, f.name), f.name) for f in dataclasses.fields(value)
        }
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_jsonable(v, name) for v in value]
    if isinstance(value, float):
        # Rounding each value from its exact figure keeps every number within
        # half a millisecond of the journal (sums are rounded, not re-added).
        return round(value, 4 if name in _RATIOS else 3)
    return value


def report_data(report: RunReport) -> dict[str, Any]:
    """The report as JSON-ready data: ``format``, then every field of ``RunReport``."""
    data: dict[str, Any] = {"format": REPORT_FORMAT_VERSION}
    data.update(_jsonable(report))
    return data


def render_json(report: RunReport) -> str:
    """The whole report as stable, indented JSON (``format`` = ``REPORT_FORMAT_VERSION``)."""
    return json.dumps(report_data(report), indent=2, allow_nan=False) + "\n"


_XML_BAD = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml(text: str) -> str:
    """``text`` without the characters XML 1.0 cannot hold."""
    return _XML_BAD.sub("\ufffd", text)


def _secs(seconds: float) -> str:
    return f"{seconds:.3f}"


def _testcase(
    r: RunReport, i: InstanceRecord, tries: Sequence[AttemptRecord], suite: ET.Element
) -> None:
    case = ET.SubElement(
        suite,
        "testcase",
        name=_xml(i.target or i.key),
        classname=_xml(f"{r.plan_name}.{i.task}"),
        time=_secs(i.task_time),
    )
    reason = _xml(i.reason)
    if i.state == "failed":
        # The cause once, in the engine's words (``ending_text``): the reason it
        # settled with, else what its exit code says.
        why = reason or _xml(ending_text(i.exit_code))
        fail = ET.SubElement(case, "failure", message=why, type="failed")
        fail.text = f"{i.key} failed after {i.attempts} attempt(s): {why}"
    elif i.state == "interrupted":
        ET.SubElement(case, "error", message=reason or "interrupted", type="interrupted")
    elif i.state in _SKIPPED:
        ET.SubElement(case, "skipped", message=f"{i.state}: {reason}" if reason else i.state)
    lines = [f"{i.key}: {i.state}"]
    if i.state == "reused":
        lines[0] += f" (succeeded in an earlier run; reused by {r.kind} {r.run_id})"
    if i.queued > 0:
        lines.append(f"queued {_secs(i.queued)}s: {format_reasons(i.queued_reasons)}")
    for a in tries:
        what = a.outcome or "running"
        if a.retry_reason:
            what += f" ({a.retry_reason})"
        queued = ""
        if a.queued > 0:
            queued = f", queued {_secs(a.queued)}s ({said(a.queued_reasons, a.queued_reason)})"
        lines.append(f"attempt {a.n}: {what}, {_secs(a.duration)}s{queued}, log {a.log_path}")
    ET.SubElement(case, "system-out").text = _xml("\n".join(lines))


def _junit_properties(r: RunReport) -> list[tuple[str, str]]:
    """What every suite says about the run: its id, plan, mode, status, and the notes."""
    props = [
        ("fleetrun.run", r.run_id),
        ("fleetrun.plan", r.plan_path),
        ("fleetrun.mode", r.mode),
        ("fleetrun.status", r.status),
    ]
    if r.parent_id:
        props.append(("fleetrun.parent", r.parent_id))
    props += [("fleetrun.note", n) for n in r.notes]
    return props


def render_junit(report: RunReport) -> str:
    """JUnit XML: one ``<testsuite>`` per task, one ``<testcase>`` per instance.

    A failed instance has a ``<failure>`` with its exit code and reason; one
    skipped, not started or cancelled has ``<skipped>``; an interrupted one an
    ``<error>``. ``<system-out>`` lists each attempt and its log file; each
    suite's ``<properties>`` name the run, the plan, and the report's notes.
    Queued time is not a test's time: a test case's ``<system-out>`` says how
    long it queued and why, and each suite's properties hold its task's
    ``fleetrun.queued`` (seconds) and one ``fleetrun.queued_for`` per reason
    (``pool api rate: 1.250``).
    """
    tries: dict[str, list[AttemptRecord]] = {}
    for a in report.attempts:
        tries.setdefault(a.key, []).append(a)
    by_task: dict[str, list[InstanceRecord]] = {}
    for i in report.instances:
        by_task.setdefault(i.task, []).append(i)
    root = ET.Element(
        "testsuites",
        name=_xml(f"fleetrun {report.plan_name} {report.run_id}"),
        tests=str(len(report.instances)),
        failures=str(sum(i.state == "failed" for i in report.instances)),
        errors=str(sum(i.state == "interrupted" for i in report.instances)),
        time=_secs(report.overall.wall),
    )
    for task, members in by_task.items():
        starts = [i.started_at for i in members if i.started_at is not None]
        suite = ET.SubElement(
            root,
            "testsuite",
            name=_xml(f"{report.plan_name}.{task}"),
            tests=str(len(members)),
            failures=str(sum(i.state == "failed" for i in members)),
            errors=str(sum(i.state == "interrupted" for i in members)),
            skipped=str(sum(i.state in _SKIPPED for i in members)),
            time=_secs(sum(i.task_time for i in members)),
            timestamp=time.strftime(
                "%Y-%m-%dT%H:%M:%S", time.gmtime(min(starts) if starts else report.started_at)
            ),
        )
        props = ET.SubElement(suite, "properties")
        queued = [("fleetrun.queued", _secs(sum(i.queued for i in members)))]
        queued += [
            ("fleetrun.queued_for", f"{why}: {_secs(secs)}")
            for why, secs in merge(i.queued_reasons for i in members).items()
        ]
        for name, value in [*_junit_properties(report), *queued]:
            ET.SubElement(props, "property", name=name, value=_xml(value))
        for i in members:
            _testcase(report, i, tries.get(i.key, []), suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, "unicode") + "\n"
