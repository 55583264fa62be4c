"""The HTML report's phases note, the Pools table's count of limit changes and the
pool chart's rate axis."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from fleetrun.plan import AdaptiveSettings, Pool
from fleetrun.report._build import _rate_changes
from fleetrun.report._html import render_html
from fleetrun.report._html_pools import TOP, render_pool_chart
from fleetrun.report._model import ModeEstimate
from fleetrun.report._pool_series import pool_series

from .test_html import T0, Page, attempt, report
from .test_pool_chart import ev


def _text(r: object) -> str:
    return " ".join(Page(render_html(r)).text)  # type: ignore[arg-type]


def test_a_loaded_plan_without_phases_says_so() -> None:
    r = report([attempt("a@x", 0.0, 2.0)], phases=())
    text = _text(r)
    assert "No phases in this plan." in text
    assert "No phases: the plan could not be loaded" not in text
    # Without the plan's graph only the mode that ran is measured: nothing estimated.
    gone = replace(r, estimates=(ModeEstimate("dag", 2.0, measured=True),))
    assert "No phases: the plan could not be loaded." in _text(gone)


def _ev(rate: float, conc: int | None = None, paused: float = 0.0, reason: str = "x") -> dict:
    return {"pool": "api", "rate": rate, "concurrency": conc, "paused": paused, "reason": reason}


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([], {}),
        # A pause and its resume change no limit.
        ([_ev(300.0, paused=2.0), _ev(300.0, reason="resumed: after 2s")], {}),
        # Decreases, a probe and a concurrency change count; a pause among them does not.
        (
            [
                _ev(150.0, reason="throttled"),
                _ev(150.0, paused=1.0, reason="paused 1s for Retry-After"),
                _ev(150.0, reason="resumed: after 1s"),
                _ev(75.0, reason="throttled"),
                _ev(90.0, reason="probing up"),
                _ev(90.0, 4, reason="throttled"),
            ],
            {"api": 4},
        ),
        # An event that states the limits in force changes nothing.
        ([_ev(300.0, reason="restored"), _ev(40.0), _ev(40.0)], {"api": 1}),
    ],
)
def test_rate_changes_count_only_changes_of_limits(events: list, expected: dict) -> None:
    assert _rate_changes({"api": (300.0, None)}, events) == expected


def _chart(configured: float) -> str:
    """An adaptive pool that settles near 40/s under ``configured``, over a 60s run."""
    events = [
        ev(0.05, 40.0, "throttled (granted about 40/s)"),
        ev(20.0, 45.0, "probing up"),
        ev(40.0, 38.0, "throttled"),
    ]
    pool = Pool(name="api", concurrency=4, rate=configured, adaptive=AdaptiveSettings())
    (s,) = pool_series([pool], {"api": {"call"}}, events, [], T0, T0 + 60.0)
    r = report([attempt("call@a", 0.0, 60.0)], pool_series=(s,))
    return render_pool_chart(r, s)


def _rate_axis(svg: str) -> list[float]:
    return [float(v) for v in re.findall(r'class="lbl ax-rate"[^>]*>([0-9.]+)/s<', svg)]


def test_rate_axis_follows_the_effective_rates_not_a_far_ceiling() -> None:
    svg = _chart(300.0)
    axis = _rate_axis(svg)
    # The search (38 to 45/s) fills the chart: the axis ends just above it.
    assert 45.0 <= max(axis) < 100.0, axis
    # The ceiling does not fit: said in text, not drawn.
    assert 'class="ceil c-rate"' not in svg
    assert "configured 300/s (above)" in svg
    # The instant at 300/s before the first change runs along the plot's top, not above it.
    (d,) = re.findall(r'<path class="rate" d="([^"]+)"', svg)
    ys = [float(v) for pair in re.findall(r"M[0-9.]+ ([0-9.]+)|V([0-9.]+)", d) for v in pair if v]
    assert len(ys) >= 4, d  # the start and three changes
    assert min(ys) >= TOP, d


def test_a_ceiling_that_fits_is_drawn_dashed() -> None:
    svg = _chart(50.0)
    assert max(_rate_axis(svg)) < 100.0
    assert svg.count('class="ceil c-rate"') == 1
    assert "(above)" not in svg
