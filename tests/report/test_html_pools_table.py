"""The HTML report's phases note and the Pools table's count of limit changes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fleetrun.report._build import _rate_changes
from fleetrun.report._html import render_html
from fleetrun.report._model import ModeEstimate

from .test_html import Page, attempt, report


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
