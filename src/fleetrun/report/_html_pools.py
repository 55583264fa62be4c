"""The HTML report's pool charts: each pool's rate and concurrency over the run, as SVG.

One chart per ``PoolSeries`` (a pool that changed its limits or paused), on
the attempts timeline's time axis: the same left column, plot width and time
origin (``_html_timeline.time_span``), so a throttle lines up with the bars
above it. In each chart:

- the effective rate (starts per second, left axis) and concurrency (right
  axis) as step lines, the configured values (the ceilings) as dashed lines;
  the rate axis runs to the effective rates the pool held (``_held``), so an
  adaptive search near 40/s under a 300/s ceiling fills the chart: a ceiling
  above the axis is said in text beside the key instead of drawn;
- one circle per change of limits (``PoolPoint.kind == "change"``), its
  ``<title>`` the time, what changed and the engine's reason;
- each Retry-After pause as a shaded band, its ``<title>`` when and how long;
- each throttled attempt as a red tick on the time axis, its ``<title>`` the
  instance and attempt.

Names and reasons are escaped (``html.escape``) wherever they appear. The
chart is an image to assistive technology (``role="img"``), named by the
same line the text reports print (``summary_line``).

Invariant: exactly one ``circle.chg`` per change point (up to ``MAX_MARKS``;
past that only the decreases), one ``line.thr`` per throttle and one
``rect.pause`` per pause.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence

from fleetrun.report._html_timeline import (
    LABEL_W,
    PLOT_W,
    RIGHT_PAD,
    tick_label,
    tick_step,
    time_span,
)
from fleetrun.report._model import PoolPoint, PoolSeries, RunReport
from fleetrun.report._pool_series import summary_line

TOP = 10.0  # above the plot
PLOT_H = 110.0
AXIS_H = 24.0  # below the plot: throttle ticks and time labels
THROTTLE_H = 7.0  # a throttle tick reaches this far above and below the time axis
MAX_MARKS = 2000
"""Change markers drawn per pool; past that, only the changes that lowered a limit."""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _f(x: float) -> str:
    return f"{x:.1f}"


def _nice_top(peak: float, ticks: int = 4, whole: bool = False) -> tuple[float, float]:
    """An axis top at or above ``peak`` and its tick step (1, 2 or 5 x 10^k; at
    least 1 for ``whole`` numbers)."""
    if peak <= 0:
        return 1.0, 1.0
    raw = peak / ticks
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw - 1e-12)
    if whole:
        step = max(1.0, math.ceil(step))
    return step * math.ceil(peak / step - 1e-9), step


def _num(x: float) -> str:
    return f"{x:.3g}"


def _what_changed(before: PoolPoint, p: PoolPoint) -> str:
    said = []
    if p.rate != before.rate:
        old = "none" if before.rate is None else f"{_num(before.rate)}/s"
        new = "none" if p.rate is None else f"{_num(p.rate)}/s"
        said.append(f"rate {old} -> {new}")
    if p.concurrency != before.concurrency:
        old = "uncapped" if before.concurrency is None else str(before.concurrency)
        new = "uncapped" if p.concurrency is None else str(p.concurrency)
        said.append(f"concurrency {old} -> {new}")
    return ", ".join(said) or "limits unchanged"


def _lowered(before: PoolPoint, p: PoolPoint) -> bool:
    """Whether ``p`` lowered the rate or the concurrency in effect at ``before``."""
    if before.rate is not None and p.rate is not None and p.rate < before.rate:
        return True
    was, now = before.concurrency, p.concurrency
    return was is not None and now is not None and now < was


HELD_SHARE = 0.02
"""A rate the pool held for less than this share of the chart's time (the configured
rate for the instant before the first change) does not set the rate axis."""


def _held(points: Sequence[PoolPoint], end: float, shortest: float) -> list[float]:
    """The effective rates in force for at least ``shortest`` seconds, and the last one."""
    out: list[float] = []
    for k, p in enumerate(points):
        until = points[k + 1].t if k + 1 < len(points) else end
        if p.rate is not None and (until - p.t >= shortest or k == len(points) - 1):
            out.append(p.rate)
    return out or [p.rate for p in points if p.rate is not None]


def _step_path(
    points: Sequence[PoolPoint],
    value: Callable[[PoolPoint], float | None],
    x_of: Callable[[float], float],
    y_of: Callable[[float], float],
    end: float,
) -> str:
    """An SVG path of ``value`` as a step function; gaps where it is None."""
    d: list[str] = []
    cur: float | None = None
    for p in points:
        v = value(p)
        x = x_of(p.t)
        if v is None:
            cur = None
            continue
        if cur is None:
            d.append(f"M{_f(x)} {_f(y_of(v))}")
        elif v != cur:
            d.append(f"H{_f(x)}V{_f(y_of(v))}")
        cur = v
    if cur is not None:
        d.append(f"H{_f(x_of(end))}")
    return "".join(d)


def render_pool_chart(report: RunReport, s: PoolSeries) -> str:
    """The SVG chart of pool ``s`` on ``report``'s time axis."""
    t0, t1 = time_span(report)
    span = max(t1 - t0, 1e-3)
    scale = PLOT_W / span
    left, right = LABEL_W, LABEL_W + PLOT_W
    top, bottom = TOP, TOP + PLOT_H

    def x_of(t: float) -> float:
        # Series times count from the run's start; the axis from the timeline's origin.
        return min(right, max(left, left + (report.started_at + t - t0) * scale))

    rates = [p.rate for p in s.points if p.rate is not None]
    concs = [p.concurrency for p in s.points if p.concurrency is not None]
    held = _held(s.points, s.end, HELD_SHARE * span)
    r_top, r_step = _nice_top(max(held, default=0.0) * 1.05)
    c_top, c_step = _nice_top(float(max([*concs, s.concurrency or 0], default=0)) * 1.05,
                              whole=True)  # fmt: skip

    def y_rate(v: float) -> float:
        # A rate above the axis (held only for an instant) runs along the plot's top.
        return max(top, bottom - v / r_top * PLOT_H)

    def y_conc(v: float) -> float:
        return bottom - v / c_top * PLOT_H

    out: list[str] = []
    name = _e(s.pool)
    out.append(f'<text class="pname" x="8" y="{_f(top + 11)}">pool {name}</text>')
    if rates:
        out.append(f'<text class="key k-rate" x="8" y="{_f(top + 27)}">rate /s (left)</text>')
    if concs:
        out.append(f'<text class="key k-conc" x="8" y="{_f(top + 41)}">concurrency (right)</text>')
    out.append(
        f'<rect class="plot" x="{_f(left)}" y="{_f(top)}" width="{_f(PLOT_W)}" '
        f'height="{_f(PLOT_H)}"/>'
    )

    # Pauses first: the lines and marks are drawn over them.
    for pause in s.pauses:
        x1, x2 = x_of(pause.start), x_of(pause.end)
        out.append(
            f'<rect class="pause" x="{_f(x1)}" y="{_f(top)}" width="{_f(max(1.0, x2 - x1))}" '
            f'height="{_f(PLOT_H)}"><title>{"back-off" if pause.backoff else "Retry-After"} '
            f"pause from +{pause.start:.3f}s "
            f"to +{pause.end:.3f}s ({pause.end - pause.start:.3f}s)</title></rect>"
        )

    # The time axis: the timeline's ticks, labels below the throttle ticks.
    step = tick_step(span)
    for k in range(int(span / step + 1e-9) + 1):
        tx = left + k * step * scale
        out.append(
            f'<line class="grid" x1="{_f(tx)}" y1="{_f(top)}" x2="{_f(tx)}" y2="{_f(bottom)}"/>'
            f'<text class="tick" x="{_f(tx)}" y="{_f(bottom + AXIS_H - 4)}">'
            f"{_e(tick_label(k * step, step))}</text>"
        )

    # Value axes: rate on the left, concurrency on the right.
    if rates:
        for k in range(int(r_top / r_step + 1e-9) + 1):
            v = k * r_step
            out.append(
                f'<text class="lbl ax-rate" x="{_f(left - 5)}" y="{_f(y_rate(v) + 3.5)}">'
                f"{_e(_num(v))}/s</text>"
            )
    if concs:
        for k in range(int(c_top / c_step + 1e-9) + 1):
            v = k * c_step
            out.append(
                f'<text class="axr" x="{_f(right + 5)}" y="{_f(y_conc(v) + 3.5)}">{v:.0f}</text>'
            )
    if s.rate and rates and s.rate > r_top:
        out.append(
            f'<text class="key k-rate ceil-note" x="8" y="{_f(top + 55)}">'
            f"configured {_e(_num(s.rate))}/s (above)</text>"
        )
    elif s.rate and rates:
        y = y_rate(s.rate)
        out.append(
            f'<line class="ceil c-rate" x1="{_f(left)}" y1="{_f(y)}" x2="{_f(right)}" '
            f'y2="{_f(y)}"><title>configured rate {_e(_num(s.rate))}/s</title></line>'
        )
    if s.concurrency is not None and concs:
        y = y_conc(s.concurrency)
        out.append(
            f'<line class="ceil c-conc" x1="{_f(left)}" y1="{_f(y)}" x2="{_f(right)}" '
            f'y2="{_f(y)}"><title>configured concurrency {s.concurrency}</title></line>'
        )

    if concs:
        d = _step_path(s.points, lambda p: None if p.concurrency is None else float(p.concurrency),
                       x_of, y_conc, s.end)  # fmt: skip
        out.append(f'<path class="conc" d="{d}"/>')
    if rates:
        d = _step_path(s.points, lambda p: p.rate, x_of, y_rate, s.end)
        out.append(f'<path class="rate" d="{d}"/>')

    # Throttles: ticks across the time axis.
    for th in s.throttles:
        tx = x_of(th.t)
        out.append(
            f'<line class="thr" x1="{_f(tx)}" y1="{_f(bottom - THROTTLE_H)}" x2="{_f(tx)}" '
            f'y2="{_f(bottom + THROTTLE_H)}"><title>throttled: {_e(th.key)} attempt {th.n} '
            f"at +{th.t:.3f}s</title></line>"
        )

    # Change markers, on the line that moved (the rate's when both did).
    changes = [(k, p) for k, p in enumerate(s.points) if p.kind == "change"]
    if len(changes) > MAX_MARKS:
        changes = [(k, p) for k, p in changes if _lowered(s.points[k - 1], p)]
    for k, p in changes:
        before = s.points[k - 1] if k else p
        if p.rate is not None and (p.rate != before.rate or p.concurrency is None):
            cy = y_rate(p.rate)
        elif p.concurrency is not None:
            cy = y_conc(p.concurrency)
        else:
            cy = bottom
        out.append(
            f'<circle class="chg" cx="{_f(x_of(p.t))}" cy="{_f(cy)}" r="3">'
            f"<title>+{p.t:.3f}s: {_e(_what_changed(before, p))}: {_e(p.reason)}</title>"
            "</circle>"
        )

    width = LABEL_W + PLOT_W + RIGHT_PAD
    height = bottom + AXIS_H
    return (
        f'<svg class="g pc" role="img" aria-label="{_e(summary_line(s))}" '
        f'data-pool="{name}" viewBox="0 0 {width:.0f} {_f(height)}" width="{width:.0f}" '
        f'height="{_f(height)}">{"".join(out)}</svg>'
    )


def _swatch(inner: str) -> str:
    return f'<svg class="g pc" width="22" height="12" aria-hidden="true">{inner}</svg>'


_LEGEND_ITEMS = (
    ('<line class="rate" x1="1" y1="6" x2="21" y2="6"/>',
     "rate in effect (left axis, per second)"),
    ('<line class="conc" x1="1" y1="6" x2="21" y2="6"/>', "concurrency in effect (right axis)"),
    ('<line class="ceil c-rate" x1="1" y1="6" x2="21" y2="6"/>', "configured (the ceiling)"),
    ('<circle class="chg" cx="11" cy="6" r="3"/>', "change of limits (hover for the reason)"),
    ('<line class="thr" x1="11" y1="0" x2="11" y2="12"/>', "throttled attempt"),
    ('<rect class="pause" x="1" y="1" width="20" height="10"/>', "pause (Retry-After, back-off)"),
)  # fmt: skip
LEGEND = (
    '<div class="legend" id="fr-legend-pools">'
    + "".join(f"<span>{_swatch(mark)}{words}</span>" for mark, words in _LEGEND_ITEMS)
    + "</div>"
)


def render_pools(report: RunReport) -> str:
    """The report's "Pools over time" section: a legend and one chart per pool that
    changed its limits or paused, each with its summary line; "" when none did."""
    if not report.pool_series:
        return ""
    charts = "".join(
        f'<div class="chart pool-chart">{render_pool_chart(report, s)}</div>'
        f'<p class="sub pool-line">{_e(summary_line(s))}</p>'
        for s in report.pool_series
    )
    return (
        "<h2>Pools over time <small>(the limits in effect, on the timeline's time axis)"
        f"</small></h2>{LEGEND}{charts}"
    )
