"""One speedup rule for every view: task time / wall, not measured under a second."""

from __future__ import annotations

import re

import pytest

from fleetrun.report._formats import render_json, render_markdown, render_table
from fleetrun.report._html import render_html
from fleetrun.report._model import RunReport
from fleetrun.report._text import TOO_SHORT, format_speedup, speedup

from .test_html import Page, attempt, report


@pytest.mark.parametrize(
    ("task_time", "wall", "expected"),
    [
        (0.04, 0.2, None),  # a tiny run: 0.2x would say nothing about the work
        (3.0, 0.9, None),
        (0.5, 4.0, None),
        (0.0, 0.0, None),
        (1.0, 1.0, 1.0),
        (30.0, 12.0, 2.5),
        (1.0, 4.0, 0.25),  # a measured slowdown is shown as it is
    ],
)
def test_speedup_rule(task_time: float, wall: float, expected: float | None) -> None:
    assert speedup(task_time, wall) == expected


def test_format_speedup() -> None:
    assert format_speedup(None) == TOO_SHORT == "too short to measure"
    assert format_speedup(2.5) == "2.50x"
    assert format_speedup(2.5, places=1) == "2.5x"
    assert format_speedup(2.5, times="\u00d7") == "2.50\u00d7"


def _short() -> tuple[RunReport, RunReport]:
    """A run of two 0.1s attempts (every span under a second), and a 10s one."""
    short = report([attempt("a@x", 0.0, 0.1), attempt("a@y", 0.05, 0.15)])
    long = report([attempt("a@x", 0.0, 10.0), attempt("a@y", 0.0, 10.0)])
    return short, long


def test_every_format_says_too_short_for_a_tiny_run() -> None:
    short, long = _short()
    assert short.overall.speedup is None
    html = " ".join(Page(render_html(short)).text)
    assert "0.00\u00d7" not in html
    # The header's fact, the phase row, the overall row and the rule under the table.
    assert html.count(TOO_SHORT) >= 4
    for text in (render_table(short), render_markdown(short)):
        assert f"speedup {TOO_SHORT}" in text or f"| {TOO_SHORT} |" in text, text
        assert "0.00x" not in text
    assert '"speedup": null' in render_json(short)
    # A run long enough is measured the same way everywhere.
    html = " ".join(Page(render_html(long)).text)
    assert "2.00\u00d7" in html
    assert html.count(TOO_SHORT) == 1  # only where the table explains the rule
    assert "speedup 2.00x" in render_table(long)


def test_mode_speedups_follow_the_same_rule() -> None:
    short, _ = _short()
    modes = render_table(short).split("Modes", 1)[1].split("\n\n", 1)[0]
    assert TOO_SHORT in modes
    assert not re.search(r"\d\.\d\dx", modes), modes
