"""``render_html``: one self-contained HTML page for a run report.

The page holds everything inline: the stylesheet, the timeline as SVG, the
tooltip details as a JSON blob and a small script. It fetches nothing, and a
Content-Security-Policy that allows only the page's own script and style (by
hash) makes sure of it: ``default-src 'none'`` blocks every request, and a
script or style that is not the page's own would not run even if user data
somehow reached the markup unescaped.

User data (target and task names, reasons, notes, paths) is escaped with
``html.escape`` in markup; in the JSON blob every ``<``, ``>`` and ``&`` is
written as a ``\\u`` escape, so the blob can never close its ``<script>``.
"""

from __future__ import annotations

import base64
import colorsys
import hashlib
import html
import json
import math
import time
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources

from fleetrun.report._formats import MOST_QUEUED, held
from fleetrun.report._html_pools import render_pools
from fleetrun.report._html_timeline import render_timeline, reused_note
from fleetrun.report._model import RunReport, Span
from fleetrun.report._queued import format_reasons
from fleetrun.report._text import STATE_ORDER, format_speedup, speedup

# Colour-blind-friendly, without reds (red means failure) or greys (cancelled).
_PALETTE = (
    "#4e79a7", "#f28e2b", "#59a14f", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#a0cbe8", "#8cd17d", "#ffbe7d", "#d4a6c8", "#499894", "#f1ce63",
)  # fmt: skip
NONE = "\u2013"  # an en dash: no value
# How to reach the bars' details; the chart is one tab stop (see _html_timeline).
KEYS_HINT = (
    "Hover a bar, or Tab to the chart, for its details; there the arrow keys move between "
    "bars (Left and Right along a row, Up and Down to the nearest bar of the next row), "
    "Home and End go to the first and last bar of the row, Ctrl+Home and Ctrl+End to those "
    "of the chart, and Escape hides the details."
)


@cache
def _asset(name: str) -> str:
    return resources.files("fleetrun.report").joinpath(name).read_text(encoding="utf-8")


def _csp_hash(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def task_colour(i: int) -> str:
    """The fill of the ``i``-th task: the palette, then hues spread by the golden angle."""
    if i < len(_PALETTE):
        return _PALETTE[i]
    # Hues from 0.08 to 0.92 of the circle: reds (failure) stay out.
    hue = 0.08 + 0.84 * ((i * 0.618033988749895) % 1.0)
    r, g, b = colorsys.hls_to_rgb(hue, 0.62, 0.55)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def _tasks(report: RunReport) -> list[str]:
    """Tasks in plan order (first instance), then any only seen in attempts or stats."""
    names = [i.task for i in report.instances]
    names += [a.task for a in report.attempts] + [t.task for t in report.tasks]
    return list(dict.fromkeys(names))


# --- number formatting: every renderer's definitions, shown for people ---


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def dur(seconds: float | None) -> str:
    """``0.412s``, ``12.34s``, ``4m05.2s``, ``1h02m05s``; an en dash when unknown."""
    if seconds is None or not _finite(seconds):
        return NONE
    if seconds < 9.9995:
        return f"{seconds:.3f}s"
    if seconds < 59.995:
        return f"{seconds:.2f}s"
    tenths = round(seconds * 10)  # rounded once, so 119.97 reads 2m00.0s, not 1m60.0s
    if tenths < 36000:
        m, rest = divmod(tenths, 600)
        return f"{m}m{rest / 10:04.1f}s"
    h, rest = divmod(round(seconds), 3600)
    return f"{h}h{rest // 60:02d}m{rest % 60:02d}s"


def _pct(x: float) -> str:
    return f"{x * 100:.0f}%" if _finite(x) and x > 0 else NONE


def _when(at: float | None) -> str:
    if at is None or not _finite(at):
        return NONE
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _speedup(s: Span) -> str:
    """The speedup, and what held it back when queued time says so (markup)."""
    x = _e(format_speedup(s.speedup, times="\u00d7"))
    return f'{x} <span class="why">\u2014 {_e(s.held_back)}</span>' if s.held_back else x


def _reasons(reasons: Mapping[str, float]) -> str:
    return _e(format_reasons(reasons)) if reasons else NONE


def _table(
    head: Sequence[str],
    rows: Sequence[Sequence[str]],
    row_class: Mapping[int, str] | None = None,
) -> str:
    """A table; ``head`` names ending in ``#`` are numeric (right-aligned). Cells are markup,
    already escaped; ``row_class`` gives some rows (by index) a class."""
    num = [h.endswith("#") for h in head]
    ths = "".join(
        f'<th class="n">{_e(h[:-1])}</th>' if n else f"<th>{_e(h)}</th>"
        for h, n in zip(head, num, strict=True)
    )
    body = []
    for r, row in enumerate(rows):
        tds = "".join(
            f'<td class="n">{c}</td>' if n else f"<td>{c}</td>"
            for c, n in zip(row, num, strict=True)
        )
        cls = (row_class or {}).get(r)
        body.append(f'<tr class="{cls}">{tds}</tr>' if cls else f"<tr>{tds}</tr>")
    return f"<table><thead><tr>{ths}</tr></thead><tbody>{''.join(body)}</tbody></table>"


# --- sections ---


def _header(r: RunReport) -> str:
    o = r.overall
    j = "unbounded" if r.parallelism is None else str(r.parallelism)
    facts = [
        ("status", f'<span class="status st-{_e(r.status)}">{_e(r.status)}</span>'),
        ("mode", _e(r.mode)),
        ("-j", _e(j)),
        ("started", _e(_when(r.started_at))),
        ("wall", _e(dur(o.wall))),
        ("task time", _e(dur(o.task_time))),
        ("speedup", _speedup(o)),
        ("queued", _e(dur(o.queued))),
        ("efficiency", _e(_pct(o.efficiency))),
        ("instances", _e(o.instances)),
    ]
    dl = "".join(f"<div><dt>{k}</dt><dd>{v}</dd></div>" for k, v in facts)
    sub = [f"plan file <code>{_e(r.plan_path)}</code>", f"{_e(r.kind)} run"]
    if r.parent_id:
        sub.append(f"of run <code>{_e(r.parent_id)}</code>")
    if r.ended_at is not None:
        sub.append(f"ended {_e(_when(r.ended_at))}")
    return (
        f'<header class="top"><h1>{_e(r.plan_name)} <span class="run">{_e(r.run_id)}</span></h1>'
        f'<dl class="facts">{dl}</dl><p class="sub">{" · ".join(sub)}</p></header>'
    )


def _legend(tasks: Sequence[str], has_crit: bool) -> str:
    def swatch(cls: str, extra: str = "") -> str:
        return (
            f'<svg class="g" width="22" height="12" aria-hidden="true">'
            f'<rect class="{cls}" x="1" y="1" width="20" height="10"/>{extra}</svg>'
        )

    items = [f"<span>{swatch(f'bar t{i}')}{_e(t)}</span>" for i, t in enumerate(tasks)]
    hatch = '<rect class="hatch h-{0}" x="1" y="1" width="20" height="10"/>'
    states = [
        f"<span>{swatch('bar neutral o-failed', hatch.format('failed'))}failed</span>",
        f"<span>{swatch('bar neutral o-retrying')}attempt retried</span>",
        f"<span>{swatch('bar neutral o-cancelled', hatch.format('cancelled'))}"
        "cancelled / interrupted</span>",
        f"<span>{swatch('bar neutral o-open')}no end recorded</span>",
        f"<span>{swatch('queued neutral')}queued (ready, not started)</span>",
    ]
    if has_crit:
        states.append(f"<span>{swatch('bar neutral crit')}critical path</span>")
    return (
        f'<div class="legend" id="fr-legend-tasks">{"".join(items)}</div>'
        f'<div class="legend" id="fr-legend-states">{"".join(states)}</div>'
    )


def _counts(s: Span) -> str:
    known = [f"{s.counts[k]} {k}" for k in STATE_ORDER if s.counts.get(k)]
    known += [f"{n} {k}" for k, n in s.counts.items() if k not in STATE_ORDER and n]
    return _e(", ".join(known) or NONE)


def _span_row(s: Span) -> list[str]:
    return [
        _e(s.name),
        _e(s.instances),
        _counts(s),
        _e(dur(s.task_time)),
        _e(dur(s.wall)),
        _speedup(s),
        _e(dur(s.critical_path)),
        _e(dur(s.lower_bound)),
        _e(_pct(s.efficiency)),
    ]


def _spans(r: RunReport) -> str:
    head = ["phase", "instances#", "states", "task time#", "wall#", "speedup#",
            "critical path#", "lower bound#", "efficiency#"]  # fmt: skip
    rows = [_span_row(p) for p in r.phases]
    rows.append(_span_row(r.overall))
    note = ""
    if not r.phases:
        # Estimates of the modes that did not run come from the plan's graph: there
        # are some exactly when the plan loaded.
        loaded = any(not e.measured for e in r.estimates)
        why = "No phases in this plan." if loaded else "No phases: the plan could not be loaded."
        note = f'<p class="empty">{why}</p>'
    return (
        "<h2>Phases and overall</h2>"
        f"{_table(head, rows, {len(rows) - 1: 'total'})}{note}"
        '<p class="sub">task time: the sum of attempt durations (a sequential run); speedup = '
        "task time / wall (too short to measure under a second of either); efficiency = "
        "lower bound / wall, where lower bound = max(critical path, task time / "
        "parallelism). A speedup that instances queued for pools, rate, "
        "waves or phases explain says so beside it.</p>"
    )


def _estimates(r: RunReport) -> str:
    if not r.estimates:
        return '<h2>Modes</h2><p class="empty">No estimates (the plan could not be loaded).</p>'
    seq = next((m.makespan for m in r.estimates if m.mode == "sequential"), None)
    rows, measured = [], {}
    for n, m in enumerate(r.estimates):
        vs = _e(format_speedup(speedup(seq, m.makespan), times="\u00d7") if seq else NONE)
        if m.measured and r.overall.held_back:
            vs += f' <span class="why">\u2014 {_e(r.overall.held_back)}</span>'
        basis = "measured (this run)" if m.measured else "estimated from measured durations"
        row = [_e(m.mode), _e(dur(m.makespan)), vs, _e(basis)]
        rows.append(row)
        if m.measured:
            measured[n] = "measured"
    return "<h2>Modes: sequential vs parallel</h2>" + _table(
        ["mode", "makespan#", "speedup vs sequential#", "basis"], rows, measured
    )


def _critical(r: RunReport) -> str:
    if not r.critical_path:
        return (
            '<h2>Critical path</h2><p class="empty">No critical path (nothing ran, or the '
            "plan could not be loaded).</p>"
        )
    t0 = r.started_at
    rows = [
        [_e(n), f"<code>{_e(s.key)}</code>", _e("+" + dur(s.started_at - t0)),
         _e(dur(s.duration)), _e(dur(s.waited))]
        for n, s in enumerate(r.critical_path, 1)
    ]  # fmt: skip
    total = sum(s.duration for s in r.critical_path)
    return (
        f"<h2>Critical path <small>({len(r.critical_path)} steps, {_e(dur(total))} of work)"
        "</small></h2>" + _table(["#", "instance", "started#", "duration#", "waited#"], rows)
    )


_TASK_HEAD = ("task", "instances#", "attempts#", "retries#", "throttled#", "failed#",
              "task time#", "mean#", "slowest", "queued#", "queued for")  # fmt: skip
_POOL_HEAD = ("pool", "concurrency#", "rate#", "instances#", "attempts#", "retries#",
              "throttled#", "peak in flight#", "rate changes#", "queued#",
              "queued for")  # fmt: skip


def _work(r: RunReport) -> str:
    tasks = [
        [_e(t.task), _e(t.instances), _e(t.attempts), _e(t.retries), _e(t.throttled),
         _e(t.failed), _e(dur(t.task_time)), _e(dur(t.mean)),
         f"<code>{_e(t.slowest_key)}</code> {_e(dur(t.slowest))}" if t.slowest_key else NONE,
         _e(dur(t.queued)), _reasons(t.queued_reasons)]
        for t in r.tasks
    ]  # fmt: skip
    pools = [
        [_e(p.pool), _e(NONE if p.concurrency is None else p.concurrency),
         _e(NONE if p.rate is None else f"{p.rate:g}/s"), _e(p.instances), _e(p.attempts),
         _e(p.retries), _e(p.throttled), _e(p.peak_in_flight), _e(p.rate_changes),
         _e(dur(p.queued)), _reasons(p.queued_reasons)]
        for p in r.pools
    ]  # fmt: skip
    slow = [
        [_e(t.target), _e(t.instances), _e(dur(t.task_time)), _e(dur(t.wall)), _e(t.failed)]
        for t in r.slowest_targets
    ]
    out = ["<h2>Tasks: retries and throttling</h2>"]
    out.append(_table(_TASK_HEAD, tasks) if tasks else '<p class="empty">No tasks.</p>')
    out.append("<h2>Pools</h2>")
    out.append(_table(_POOL_HEAD, pools) if pools else '<p class="empty">No pools.</p>')
    queued = held(r)
    more = len(queued) - MOST_QUEUED
    queued = queued[:MOST_QUEUED]
    out.append(
        "<h2>Most queued instances <small>(ready, held by a limit"
        + (f"; {more} more held" if more > 0 else "")
        + ")</small></h2>"
    )
    out.append(
        _table(
            ["instance", "queued#", "queued for"],
            [
                [f"<code>{_e(i.key)}</code>", _e(dur(i.queued)), _reasons(i.queued_reasons)]
                for i in queued
            ],
        )
        if queued
        else '<p class="empty">No limit held an instance back.</p>'
    )
    out.append("<h2>Slowest targets</h2>")
    out.append(
        _table(["target", "instances#", "task time#", "wall#", "failed#"], slow)
        if slow
        else '<p class="empty">No targets.</p>'
    )
    return "".join(out)


def _problems(r: RunReport) -> str:
    bad = [i for i in r.instances if i.state not in ("succeeded", "reused")]
    if not bad:
        return ""
    rows = [
        [f"<code>{_e(i.key)}</code>", _e(i.state), _e(i.attempts),
         _e(NONE if i.exit_code is None else i.exit_code), _e(i.reason)]
        for i in bad
    ]  # fmt: skip
    return f"<h2>Instances that did not succeed ({len(bad)})</h2>" + _table(
        ["instance", "state", "attempts#", "exit code#", "reason"], rows
    )


def _json_blob(data: object) -> str:
    # Escaping <, > and & keeps "</script>" and "<!--" out of the blob; JSON.parse
    # reads the \u escapes back as the same characters.
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_html(report: RunReport) -> str:
    """Render ``report`` as one self-contained HTML document (no network fetches)."""
    tasks = _tasks(report)
    index = {t: i for i, t in enumerate(tasks)}
    css = _asset("_html.css") + "".join(
        f".t{i}{{fill:{task_colour(i)}}}" for i in range(len(tasks))
    )
    js = _asset("_html.js")
    csp = f"default-src 'none'; style-src {_csp_hash(css)}; script-src {_csp_hash(js)}"

    has_crit = bool(report.critical_path) or any(i.critical for i in report.instances)
    if report.attempts:
        tl = render_timeline(report, index)
        chart = (
            f"<h2>Timeline <small>({len(report.attempts)} attempts, {tl.rows} rows)</small></h2>"
            + _legend(tasks, has_crit)
            + f'<div class="chart">{tl.svg}</div>'
            + f'<p class="sub">{_e(KEYS_HINT)} Rows: targets in order of first start; '
            "overlapping attempts of one target share its row in lanes. Top tracks: phases.</p>"
        )
        details: list[list[object]] = tl.details
    else:
        chart = '<h2>Timeline</h2><p class="empty">No attempts were recorded: nothing ran.</p>'
        details = []
    reused = reused_note(report)
    if reused:
        chart += f'<p class="sub" id="fr-reused">{_e(reused)}</p>'
    notes = "".join(f'<p class="note">{_e(n)}</p>' for n in report.notes)
    title = _e(f"{report.plan_name} · {report.run_id} · fleetrun report")
    body = "".join(
        [
            _header(report),
            notes,
            chart,
            render_pools(report),
            _spans(report),
            _estimates(report),
            _critical(report),
            _problems(report),
            _work(report),
        ]
    )
    data = _json_blob({"run_id": report.run_id, "t0": report.started_at, "bars": details})
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(csp)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="generator" content="fleetrun">'
        f"<title>{title}</title><style>{css}</style></head>\n"
        f"<body><main>{body}</main>"
        '<div id="fr-tip" role="tooltip" hidden></div>\n'
        f'<script id="fr-data" type="application/json">{data}</script>\n'
        f"<script>{js}</script>\n</body></html>\n"
    )
