"""The timeline (Gantt chart) of the HTML report, drawn server-side as inline SVG.

One row per target (and one for the instances that are not fanned over a
target), one bar per attempt. Bars that overlap in time within a row go to
separate lanes of that row, so none hides another. Bars carry classes only:
the colour of their task (``t<N>``), their outcome (``o-failed`` ...) and
``crit`` when the instance is on the critical path; the stylesheet turns those
into fills, hatching and outlines. Each bar's ``data-i`` indexes the tooltip
details that the page embeds as JSON. An attempt whose instance was queued
(ready, not started) has a lighter segment of its task's colour from its
ready time to its start (``rect.queued``, its ``<title>`` the time and the
reason); lanes are packed over both, so a queued segment never hides a bar.

Bars are drawn row by row, top to bottom, and within a row in time order
(start, then lane). The chart is one tab stop (the WAI-ARIA roving tabindex):
the first bar drawn has ``tabindex="0"``, every other bar ``tabindex="-1"``,
and the page script moves focus between bars with the arrow keys, Home and
End; ``data-r`` is the bar's row for that. Each bar has an ``aria-label`` built
from its tooltip details, the same redacted values the page script shows.

Instances reused from an earlier run (a retry's succeeded work) ran in that run,
not this one: they get no row of their own; ``reused_note`` says under the chart
how many there were and from which run(s).

Invariant: exactly one ``rect.bar`` per ``AttemptRecord``, so ``data-i`` is
the attempt's index in ``report.attempts``; exactly one of them is a tab stop.
"""

from __future__ import annotations

import html
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fleetrun.report._model import AttemptRecord, RunReport
from fleetrun.report._queued import said

LABEL_W = 190.0  # left column: row labels
PLOT_W = 900.0  # the time axis
RIGHT_PAD = 40.0  # room for the pool charts' right axis: one width, one time axis
AXIS_H = 26.0  # tick labels above the rows
LANE_H = 14.0
LANE_GAP = 2.0
ROW_PAD = 3.0
PHASE_H = 10.0
MIN_BAR_W = 1.5  # a 5 ms attempt in an hour-long run still shows
MIN_QUEUED_W = 0.5  # a queued segment narrower than this is not drawn
LABEL_CHARS = 28
BOTTOM_AXIS_ROWS = 25  # more rows than this: tick labels below the chart too

_NICE_STEPS = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30,
    60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
)  # fmt: skip
# The chart's accessible name says how to move in it: it is one tab stop.
CHART_LABEL = (
    "Timeline: one bar per attempt; arrow keys move between bars, "
    "Home and End to the first and last bar of a row"
)
_OUTCOMES = frozenset({"succeeded", "failed", "retrying", "cancelled", "interrupted"})


@dataclass(frozen=True, slots=True)
class Timeline:
    """The chart's SVG markup and the tooltip details of its bars (by ``data-i``)."""

    svg: str
    details: list[list[object]]
    rows: int
    lanes: int


def time_span(report: RunReport) -> tuple[float, float]:
    """The chart's time origin and end: the run's start and its last recorded instant."""
    starts = [a.started_at for a in report.attempts]
    ends = [a.ended_at for a in report.attempts if a.ended_at is not None]
    readies = [a.ready_at for a in report.attempts if a.ready_at is not None]
    t0 = min([report.started_at, *starts, *readies])
    t1 = max([t0, *starts, *ends, *([report.ended_at] if report.ended_at is not None else [])])
    return t0, t1


def tick_step(span: float, max_ticks: int = 10) -> float:
    """The smallest round step (1/2/5 decades, then minutes and hours) giving at most
    ``max_ticks`` intervals over ``span`` seconds."""
    for step in _NICE_STEPS:
        if span / step <= max_ticks:
            return float(step)
    return 86400.0 * math.ceil(span / 86400.0 / max_ticks)


def tick_label(t: float, step: float) -> str:
    """An axis label for ``t`` seconds after the start: ``0.25s``, ``45s``, ``2m30s``, ``1h05m``."""
    if step < 1:
        decimals = max(0, -math.floor(math.log10(step) + 1e-9))
        return f"{t:.{decimals}f}s"
    whole = round(t)
    if step < 60 or whole < 60:
        return f"{whole}s"
    if whole < 3600:
        m, s = divmod(whole, 60)
        return f"{m}m" if s == 0 else f"{m}m{s:02d}s"
    h, rest = divmod(whole, 3600)
    return f"{h}h" if rest == 0 else f"{h}h{rest // 60:02d}m"


def pack_lanes(intervals: Sequence[tuple[float, float]]) -> list[int]:
    """Greedy interval partitioning: a lane per interval, overlapping ones apart.

    Intervals are taken in start order; each goes to the lowest lane that is
    free at its start. Returns the lane of each interval, in input order.
    """
    order = sorted(range(len(intervals)), key=lambda i: (intervals[i][0], intervals[i][1]))
    lane_end: list[float] = []
    lanes = [0] * len(intervals)
    for i in order:
        start, end = intervals[i]
        for lane, busy_until in enumerate(lane_end):
            if busy_until <= start:
                lanes[i] = lane
                lane_end[lane] = end
                break
        else:
            lanes[i] = len(lane_end)
            lane_end.append(end)
    return lanes


def _short(name: str) -> str:
    return name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "…"


def _label(name: str, prefix: str = "") -> str:
    """A row label's markup: the name, cut short with the full name as its title."""
    short = _short(name)
    title = f"<title>{html.escape(name)}</title>" if short != name else ""
    return f"{title}{html.escape(prefix + short)}"


def _row_order(report: RunReport) -> list[str | None]:
    """Targets by first start (a waterfall); then targets that never ran, in plan order;
    the row of unfanned instances (``None``) last. A target whose instances were all
    reused from an earlier run has nothing of this run to show: no row."""
    first: dict[str | None, float] = {}
    for a in report.attempts:
        first.setdefault(a.target, a.started_at)
    ran = sorted(first, key=lambda t: (t is None, first[t], t or ""))
    idle = [i.target for i in report.instances if i.target not in first and i.state != "reused"]
    seen: set[str | None] = set(ran)
    rows: list[str | None] = [t for t in ran if t is not None]
    for t in idle:
        if t is not None and t not in seen:
            seen.add(t)
            rows.append(t)
    if None in seen or None in idle:
        rows.append(None)
    return rows


_REUSED_FROM = re.compile(r"reused from run (\S+)")
"""The run a reused instance's record names in its reason (the journal writes it so)."""


def reused_note(report: RunReport) -> str:
    """``12 instances reused from run R (not drawn: they ran there)``; several runs are
    listed with their counts, most first; ``""`` when nothing was reused. Plain text."""
    by_run: dict[str, int] = {}
    for i in report.instances:
        if i.state == "reused":
            m = _REUSED_FROM.search(i.reason)
            run = m.group(1) if m else "an earlier run"
            by_run[run] = by_run.get(run, 0) + 1
    if not by_run:
        return ""
    n = sum(by_run.values())
    what = "1 instance" if n == 1 else f"{n} instances"
    named = sorted(by_run.items(), key=lambda kv: (-kv[1], kv[0]))
    if len(named) == 1:
        ((run, _),) = named
        where = run if run == "an earlier run" else f"run {run}"
    else:
        where = "runs " + ", ".join(f"{r} ({c})" for r, c in named)
    return f"{what} reused from {where} (not drawn: they ran there)."


def _fmt(x: float) -> str:
    return f"{x:.1f}"


def render_timeline(report: RunReport, task_index: Mapping[str, int]) -> Timeline:
    """Draw the chart of ``report``; ``task_index`` maps each task to its colour class."""
    t0, t1 = time_span(report)
    span = max(t1 - t0, 1e-3)
    scale = PLOT_W / span

    def x_of(t: float) -> float:
        return LABEL_W + (t - t0) * scale

    crit = {s.key for s in report.critical_path} | {i.key for i in report.instances if i.critical}
    rows = _row_order(report)
    by_row: dict[str | None, list[int]] = {t: [] for t in rows}
    for idx, a in enumerate(report.attempts):
        by_row.setdefault(a.target, []).append(idx)

    out: list[str] = []
    y = AXIS_H + 4.0

    # Phases: a thin track each, above the targets (in dag mode they overlap).
    phases = 0
    for p in report.phases:
        if p.started_at is None:  # nothing in it ran
            continue
        phases += 1
        end = p.ended_at if p.ended_at is not None else t1
        x = x_of(p.started_at)
        w = max(MIN_BAR_W, (end - p.started_at) * scale)
        name = html.escape(p.name)
        out.append(
            f'<text class="lbl ph" x="{LABEL_W - 8:.0f}" y="{_fmt(y + PHASE_H - 1)}">'
            f"{_label(p.name, 'phase · ')}</text>"
            f'<rect class="phase" x="{_fmt(x)}" y="{_fmt(y)}" width="{_fmt(w)}" '
            f'height="{PHASE_H:.0f}"><title>phase {name}: from +{p.started_at - t0:.3f}s'
            f" for {end - p.started_at:.3f}s</title></rect>"
        )
        y += PHASE_H + 3
    if phases:
        y += 6

    # Tooltip details by data-i, which is the attempt's index: attempt order, not row order.
    details = [_detail(a, t0, a.key in crit) for a in report.attempts]
    bars: list[str] = []
    queued: list[str] = []
    centers: dict[str, tuple[float, float, float]] = {}  # key -> (y mid, x start, x end)
    total_lanes = 0
    for r, target in enumerate(rows):
        idxs = by_row.get(target, [])
        spans = [_bar_span(report.attempts[i], t1) for i in idxs]
        lanes = pack_lanes(
            [_queued_span(report.attempts[i], s) for i, s in zip(idxs, spans, strict=True)]
        )
        n_lanes = max(lanes, default=0) + 1
        total_lanes += n_lanes
        row_h = n_lanes * (LANE_H + LANE_GAP) - LANE_GAP + 2 * ROW_PAD
        if r % 2 == 0:
            out.append(
                f'<rect class="band" x="0" y="{_fmt(y)}" width="{LABEL_W + PLOT_W + RIGHT_PAD:.0f}"'
                f' height="{_fmt(row_h)}"/>'
            )
        label = "(not fanned over a target)" if target is None else target
        cls = "lbl nt" if target is None else "lbl"
        out.append(
            f'<text class="{cls}" x="{LABEL_W - 8:.0f}" y="{_fmt(y + ROW_PAD + LANE_H - 3)}">'
            f"{_label(label)}</text>"
        )
        # Time order within the row, so the next bar drawn is the next one to the right:
        # by start as the tooltip shows it (to the millisecond), then lane (lanes are
        # packed with queued segments, so an earlier start may sit in a higher lane).
        drawn = sorted(
            zip(idxs, spans, lanes, strict=True), key=lambda b: (round(b[1][0] - t0, 3), b[2])
        )
        for i, (start, end), lane in drawn:
            a = report.attempts[i]
            by = y + ROW_PAD + lane * (LANE_H + LANE_GAP)
            bx, bw = x_of(start), max(MIN_BAR_W, (end - start) * scale)
            # Both edges rounded as drawn, so the right edge lands where a mark at the
            # attempt's end (the pool chart's throttle tick) lands.
            bw = round(bx + bw, 1) - round(bx, 1)
            outcome = a.outcome if a.outcome in _OUTCOMES else "open"
            colour = f"t{task_index.get(a.task, 0)}"
            classes = f"bar {colour} o-{outcome}"
            if a.queued > 0 and a.queued * scale >= MIN_QUEUED_W:
                qx = x_of(start - a.queued)
                why = html.escape(
                    f"queued {a.queued:.3f}s: {said(a.queued_reasons, a.queued_reason)}"
                )
                queued.append(
                    f'<rect class="queued {colour}" x="{_fmt(qx)}" y="{_fmt(by)}" '
                    f'width="{_fmt(bx - qx)}" height="{LANE_H:.0f}"><title>{why}</title></rect>'
                )
            if a.key in crit:
                classes += " crit"
            # The chart's single tab stop is its first bar until the script moves it.
            tabindex = "-1" if bars else "0"
            bars.append(
                f'<rect class="{classes}" data-i="{i}" data-r="{r}" tabindex="{tabindex}" '
                f'role="img" aria-label="{html.escape(bar_name(details[i]))}" x="{_fmt(bx)}" '
                f'y="{_fmt(by)}" width="{_fmt(bw)}" height="{LANE_H:.0f}"/>'
            )
            if outcome in ("failed", "cancelled", "interrupted"):
                # Hatching on top of the task colour, so the task stays recognisable.
                bars.append(
                    f'<rect class="hatch h-{outcome}" x="{_fmt(bx)}" y="{_fmt(by)}" '
                    f'width="{_fmt(bw)}" height="{LANE_H:.0f}"/>'
                )
            mid = by + LANE_H / 2
            prev = centers.get(a.key)
            centers[a.key] = (mid, prev[1] if prev else bx, bx + bw)
        y += row_h

    # Critical path: a dashed line from each step's end to the next step's start.
    links = []
    steps = [centers[s.key] for s in report.critical_path if s.key in centers]
    for (y1, _, x1), (y2, x2, _) in itertools.pairwise(steps):
        links.append(f"M{_fmt(x1)} {_fmt(y1)}L{_fmt(max(x1, x2))} {_fmt(y2)}")
    link_svg = f'<path class="cp-link" d="{" ".join(links)}"/>' if links else ""

    # A tall chart repeats the tick labels below its last row.
    bottom_axis = len(rows) > BOTTOM_AXIS_ROWS
    grid_end = y + 4
    height = grid_end + (AXIS_H - 4 if bottom_axis else 4)
    step = tick_step(span)
    ticks = []
    n_ticks = int(span / step + 1e-9)
    for k in range(n_ticks + 1):
        tx = x_of(t0 + k * step)
        lbl = html.escape(tick_label(k * step, step))
        ticks.append(
            f'<line class="grid" x1="{_fmt(tx)}" y1="{AXIS_H - 4:.0f}" x2="{_fmt(tx)}" '
            f'y2="{_fmt(grid_end)}"/><text class="tick" x="{_fmt(tx)}" y="{AXIS_H - 9:.0f}">'
            f"{lbl}</text>"
        )
        if bottom_axis:
            ticks.append(
                f'<text class="tick" x="{_fmt(tx)}" y="{_fmt(grid_end + 14)}">{lbl}</text>'
            )
    width = LABEL_W + PLOT_W + RIGHT_PAD
    # A group, not an img: an img's children are presentational, and the bars must stay
    # in the accessibility tree with their own names.
    svg = (
        f'<svg id="fr-chart" class="g" role="group" '
        f'aria-label="{CHART_LABEL}" viewBox="0 0 {width:.0f} {_fmt(height)}" '
        f'width="{width:.0f}" height="{_fmt(height)}">'
        f'{_DEFS}{"".join(out)}{"".join(ticks)}<g class="queue">{"".join(queued)}</g>'
        f'<g class="bars">{"".join(bars)}</g>'
        f"{link_svg}</svg>"
    )
    return Timeline(svg=svg, details=details, rows=len(rows), lanes=total_lanes)


def _bar_span(a: AttemptRecord, t_end: float) -> tuple[float, float]:
    # An attempt without a recorded end (the run was killed) runs to the chart's end.
    end = a.ended_at if a.ended_at is not None else t_end
    return a.started_at, max(a.started_at, end)


def _queued_span(a: AttemptRecord, bar: tuple[float, float]) -> tuple[float, float]:
    """The time a bar and its queued segment take in their lane."""
    return bar[0] - a.queued, bar[1]


def _detail(a: AttemptRecord, t0: float, critical: bool) -> list[object]:
    """The tooltip fields of one bar, in the order the page script (and ``bar_name``)
    reads them."""
    return [
        a.key,
        a.task,
        a.target,
        a.n,
        round(a.started_at - t0, 3),
        None if a.ended_at is None else round(a.duration, 3),
        a.outcome,
        a.exit_code,
        a.signal,
        a.timed_out,
        a.retry_reason,
        critical,
        a.log_path,
        round(a.queued, 3),
        # A limit held it: what, its wait divided at its pool's pauses (else no reason).
        said(a.queued_reasons, a.queued_reason) if a.queued > 0 and a.queued_reason else None,
    ]


def tip_secs(seconds: float | None) -> str:
    """A duration as the page script's ``secs()`` writes it in the tooltip.

    ``0.412s``, ``12.345s``, ``4m05.2s``, ``1h02m``; a bar's name reads the same as
    its tooltip. ``seconds`` is the detail's value, already rounded to milliseconds.
    """
    if seconds is None:
        return "still running when the run ended"
    if seconds < 60:
        return f"{seconds:.3f}s"
    tenths = math.floor(seconds * 10 + 0.5)  # Math.round: halves go up
    m, rest = divmod(tenths, 600)
    if m < 60:
        return f"{m}m{rest / 10:04.1f}s"
    return f"{m // 60}h{m % 60:02d}m"


def bar_name(detail: Sequence[object]) -> str:
    """A bar's accessible name from its tooltip details (see ``_detail``): instance,
    attempt, outcome, duration, the time it was queued and why (when a limit held
    it) and, when it is on it, the critical path.

    Plain text: the caller escapes it for the attribute.
    """
    key, n, took, outcome, timed_out, critical = (
        detail[0], detail[3], detail[5], detail[6], detail[9], detail[11],
    )  # fmt: skip
    said = str(outcome) if outcome else "no end recorded"
    if timed_out:
        said += " (timed out)"
    duration = tip_secs(took if isinstance(took, int | float) else None)
    parts = [str(key), f"attempt {n}", said, duration]
    queued, why = detail[13], detail[14]
    if why and isinstance(queued, int | float):
        parts.append(f"queued {tip_secs(queued)} for {why}")
    if critical:
        parts.append("critical path")
    return ", ".join(parts)


# Hatch patterns are referenced by fragment (url(#...)): nothing is fetched.
_DEFS = (
    "<defs>"
    '<pattern id="hatch-failed" width="6" height="6" patternUnits="userSpaceOnUse" '
    'patternTransform="rotate(45)"><rect width="2.5" height="6" fill="#8b0000" '
    'fill-opacity="0.75"/></pattern>'
    '<pattern id="hatch-cancelled" width="5" height="5" patternUnits="userSpaceOnUse">'
    '<path d="M0 0L5 5M5 0L0 5" stroke="#333" stroke-width="1" stroke-opacity="0.6"/>'
    "</pattern>"
    "</defs>"
)
