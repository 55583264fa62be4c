"""Pools over time: the series built from the journal's ``PoolChanged`` events, the
HTML report's chart per pool, and the text reports' line per pool.

A real run first: an adaptive pool whose task is throttled (exit 75 with a
Retry-After) on each target's first attempt, applied and reported by the
``fleetrun`` CLI; the chart is read back with an HTML parser and counted
against the journal, then opened in headless Chromium. Then the series
builder on hand-made events, and hostile names through every renderer.
"""

from __future__ import annotations

import re
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from cli._helpers import fleetrun

from fleetrun.names import ATTEMPT_ENV
from fleetrun.plan import AdaptiveSettings, Pool
from fleetrun.report import build_report, render_html, render_markdown, render_table
from fleetrun.report._html_pools import render_pool_chart
from fleetrun.report._model import PoolPause, PoolSeries, PoolThrottle, RunReport
from fleetrun.report._pool_series import (
    MAX_STEPS,
    RESUMED,
    pool_series,
    summary_line,
)

from .conftest import Recorded, apply
from .test_html import HOSTILE, T0, attempt, report
from .test_html_browser import Watched

TARGETS = ("a", "b", "c", "d")
RATE = 50
CONC = 4


def throttled_plan() -> str:
    """Each target's first attempt is throttled with a short Retry-After; the rest succeed."""
    return f"""\
name: pool-chart
targets:
{"".join(f"  {t}: {{}}{chr(10)}" for t in TARGETS)}pools:
  api: {{rate: {RATE}/s, concurrency: {CONC}, adaptive: true}}
tasks:
  call:
    for_each: all
    pools: [api]
    run: >-
      if [ "${ATTEMPT_ENV}" = 1 ]; then echo 'Retry-After: 0.05'; exit 75; fi
"""


class Svg(HTMLParser):
    """The elements of each ``<svg data-pool=...>``: (tag, attributes, title text)."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.pools: dict[str, list[tuple[str, dict[str, str], str]]] = {}
        self.bars: list[dict[str, str]] = []
        self.svg_widths: dict[str, str] = {}
        self._pool: str | None = None
        self._stack: list[int] = []  # indexes in the pool's list of open elements
        self._in_title = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "svg" and "data-pool" in a:
            self._pool = a["data-pool"]
            self.pools[self._pool] = []
            self.svg_widths[self._pool] = a["width"]
            return
        if tag == "svg" and a.get("id") == "fr-chart":
            self.svg_widths["#fr-chart"] = a["width"]
        if tag == "rect" and "data-i" in a:
            self.bars.append(a)
        if self._pool is None:
            return
        if tag == "title":
            self._in_title = True
            return
        self.pools[self._pool].append((tag, a, ""))
        self._stack.append(len(self.pools[self._pool]) - 1)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "rect" and "data-i" in a:
            self.bars.append(a)
        if self._pool is not None:
            self.pools[self._pool].append((tag, a, ""))

    def handle_endtag(self, tag: str) -> None:
        if self._pool is None:
            return
        if tag == "svg":
            self._pool = None
        elif tag == "title":
            self._in_title = False
        elif self._stack:
            self._stack.pop()

    def handle_data(self, data: str) -> None:
        if self._pool is not None and self._in_title and self._stack:
            k = self._stack[-1]
            tag, a, title = self.pools[self._pool][k]
            self.pools[self._pool][k] = (tag, a, title + data)

    def of(self, pool: str, cls: str) -> list[tuple[dict[str, str], str]]:
        """The elements of ``pool``'s chart with class ``cls``: attributes and title."""
        return [(a, t) for _, a, t in self.pools[pool] if cls in a.get("class", "").split()]


@pytest.fixture(scope="module")
def throttled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Recorded, str]:
    """The throttled plan applied, and its HTML report as ``fleetrun report`` writes it."""
    rec = apply(tmp_path_factory.mktemp("pool-chart"), text=throttled_plan(), expect=0)
    out = rec.plan.parent / "report.html"
    res = fleetrun(
        "report", rec.run_id, "--state-dir", str(rec.state), "--format", "html", "-o", str(out)
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return rec, out.read_text(encoding="utf-8")


def _journaled(rec: Recorded) -> tuple[list[dict[str, Any]], list[Any], RunReport]:
    with rec.journal() as j:
        return (
            j.event_data(rec.run_id, "PoolChanged"),
            j.attempts(rec.run_id),
            build_report(j, rec.run_id),
        )


def test_throttled_pool_is_drawn_as_the_journal_has_it(throttled: tuple[Recorded, str]) -> None:
    rec, page = throttled
    events, attempts, built = _journaled(rec)
    throttles = [a for a in attempts if a.throttled]
    assert sorted(a.key for a in throttles) == [f"call@{t}" for t in TARGETS]
    changes = [e for e in events if not e["paused"] and not e["reason"].startswith(RESUMED)]
    resumes = [e for e in events if e["reason"].startswith(RESUMED)]
    assert changes, "a throttle of an adaptive pool changes its limits"
    assert resumes, "a Retry-After pauses the pool, and the pause ends"

    svg = Svg(page)
    assert list(svg.pools) == ["api"]
    # One width and one time axis with the attempts timeline above.
    assert svg.svg_widths["api"] == svg.svg_widths["#fr-chart"]
    ticks = svg.of("api", "thr")
    assert len(ticks) == len(throttles) == len(TARGETS)
    marks = svg.of("api", "chg")
    assert len(marks) == len(changes)
    # Each band begins at a pause the journal has (pauses that overlap are one band).
    bands = svg.of("api", "pause")
    paused = {round(e["at"] - built.started_at, 3): e["paused"] for e in events if e["paused"]}
    assert 1 <= len(bands) == len(built.pool_series[0].pauses) <= len(paused)
    for _, title in bands:
        m = re.fullmatch(
            r"Retry-After pause from \+([0-9.]+)s to \+([0-9.]+)s \(([0-9.]+)s\)", title
        )
        assert m is not None, title
        assert float(m[1]) in paused
        assert float(m[2]) >= float(m[1])
    # Each change mark's title carries the engine's reason, in journal order.
    for (_, title), ev in zip(marks, changes, strict=True):
        assert title.endswith(ev["reason"])
    # Each throttle tick sits at its attempt's end: inside that attempt's bar.
    bar_of = {b["aria-label"].split(", ")[0] + "#" + b["aria-label"].split(", ")[1]: b
              for b in svg.bars}  # fmt: skip
    for a, title in ticks:
        m = re.fullmatch(r"throttled: (\S+) attempt (\d+) at \+[0-9.]+s", title)
        assert m is not None, title
        bar = bar_of[f"{m[1]}#attempt {m[2]}"]
        x, left, width = float(a["x1"]), float(bar["x"]), float(bar["width"])
        # Coordinates are written to 0.1 px: within one rounding step of the bar.
        assert left - 0.15 <= x <= left + width + 0.15
    # The rate line starts at the configured rate; the ceilings are drawn.
    rate_path = svg.of("api", "rate")[0][0]["d"]
    assert rate_path.startswith("M")
    # The concurrency ceiling is a dashed line; the rate ceiling too when it fits
    # the axis (which follows the rates the pool held), else a note says it.
    ceilings = [title for _, title in svg.of("api", "ceil")]
    assert any(t.startswith("configured concurrency") for t in ceilings)
    assert any(t.startswith("configured rate") for t in ceilings) or "(above)</text>" in page
    assert [p.kind for p in built.pool_series[0].points].count("change") == len(changes)


def test_text_reports_tell_each_pool_in_one_line(throttled: tuple[Recorded, str]) -> None:
    rec, _ = throttled
    events, _, built = _journaled(rec)
    pauses = len(built.pool_series[0].pauses)
    rates = [float(RATE)]
    for e in events:
        if e["rate"] != rates[-1]:
            rates.append(e["rate"])
    table = render_table(built)
    lines = table.split("Pools over time\n", 1)[1].split("\n\n")[0].splitlines()
    assert len(lines) == 1
    line = lines[0]
    assert line.startswith(f"pool api: rate {RATE}/s")
    if len(rates) <= MAX_STEPS:
        assert line.split(", concurrency")[0].count(" -> ") == len(rates) - 1
    assert f"; {len(TARGETS)} throttles, {pauses} pause" in line
    assert f"concurrency {CONC}" in line
    md = render_markdown(built)
    assert f"### Pools over time\n\n- {line}\n" in md
    # The JSON report holds the series as the chart draws it.
    res = fleetrun("report", rec.run_id, "--state-dir", str(rec.state), "--format", "json")
    assert res.returncode == 0, res.stderr
    assert '"pool_series"' in res.stdout
    assert '"kind": "change"' in res.stdout


def test_pool_chart_opens_cleanly_in_chromium(
    throttled: tuple[Recorded, str], browser: Any, tmp_path: Path
) -> None:
    _, page = throttled
    out = tmp_path / "report.html"
    out.write_text(page, encoding="utf-8")
    w = Watched(browser)
    w.open(out)
    assert w.problems() == []
    assert w.requests == [out.as_uri()]
    chart = w.page.locator('svg[data-pool="api"]')
    assert chart.is_visible()
    # The same time axis: the plot starts where the timeline's first tick does.
    tl_tick = w.page.locator("#fr-chart line.grid").first.bounding_box()
    pool_tick = chart.locator("line.grid").first.bounding_box()
    assert tl_tick is not None
    assert pool_tick is not None
    assert abs(tl_tick["x"] - pool_tick["x"]) < 1.0
    assert (
        chart.get_attribute("aria-label", timeout=5000)
        == w.page.locator("p.pool-line").first.inner_text()
    )


# --- the series builder on hand-made events ---


def ev(at: float, rate: float, reason: str, conc: int | None = 4, paused: float = 0.0) -> Any:
    """The fields of one journaled ``PoolChanged`` of pool ``api``, ``at`` after T0."""
    return {"at": T0 + at, "pool": "api", "rate": rate, "reason": reason,
            "concurrency": conc, "paused": paused}  # fmt: skip


POOL = Pool(name="api", concurrency=64, rate=200.0, adaptive=AdaptiveSettings())


def test_series_steps_pauses_and_throttles_from_hand_made_events() -> None:
    events = [
        ev(1.0, 200.0, "paused 2s for Retry-After", conc=8, paused=2.0),
        ev(1.0, 100.0, "throttled (after 0.5s of sending at 200/s, Retry-After 2s)", conc=8),
        ev(2.0, 100.0, "paused 3s for Retry-After", conc=8, paused=3.0),  # extends the pause
        ev(5.0, 100.0, f"{RESUMED} the Retry-After pause is over", conc=8),
        ev(6.0, 38.8, "throttled (granted about 40/s, Retry-After 1s)", conc=8),
        ev(6.0, 38.8, "paused 1s for Retry-After", conc=8, paused=1.0),  # never resumed
        ev(6.5, 38.8, "slow start: concurrency 8 -> 16, no throttle for 1s", conc=16),
        {"at": "soon", "pool": "api", "rate": 1.0, "reason": "malformed"},
        {"at": T0 + 7, "pool": "api", "rate": 1.0, "concurrency": True, "reason": "malformed"},
        ev(3.0, 5.0, "a pool the plan does not have") | {"pool": "gone"},
    ]
    attempts = [
        attempt("call@a", 0.5, 1.0, outcome="retrying", exit_code=75),
        attempt("call@b", 5.5, 6.0, outcome="retrying", exit_code=75),
        attempt("other@a", 0.5, 1.0, outcome="retrying", exit_code=75),  # not in the pool
        attempt("call@c", 5.5, 6.2),
    ]
    attempts = [replace(a, throttled=a.exit_code == 75) for a in attempts]
    (s,) = pool_series(
        [POOL, Pool(name="quiet", concurrency=2)], {"api": {"call"}}, events, attempts,
        T0, T0 + 10.0, lambda text: text.replace("Retry-After 1s", "Retry-After [1s]"),
    )  # fmt: skip
    assert (s.pool, s.rate, s.concurrency, s.adaptive, s.end) == ("api", 200.0, 64, True, 10.0)
    assert [p.kind for p in s.points] == [
        "start", "pause", "change", "pause", "resume", "change", "pause", "change",
    ]  # fmt: skip
    # The configured limits hold until the engine announces a change.
    assert (s.points[0].t, s.points[0].rate, s.points[0].concurrency) == (0.0, 200.0, 64)
    assert [p.rate for p in s.points] == [200.0, 200.0, 100.0, 100.0, 100.0, 38.8, 38.8, 38.8]
    assert [(round(p.start, 3), round(p.end, 3)) for p in s.pauses] == [(1.0, 5.0), (6.0, 7.0)]
    assert s.paused == pytest.approx(5.0)
    assert s.throttles == (PoolThrottle(1.0, "call@a", 1), PoolThrottle(6.0, "call@b", 1))
    assert summary_line(s) == (
        "pool api: rate 200/s -> 100 -> 38.8 (granted about 40/s), concurrency 64 -> 8 -> 16; "
        "2 throttles, 2 pauses (5.0s)"
    )


def test_pause_left_open_ends_at_the_run_end_and_no_rate_is_none() -> None:
    events = [ev(1.0, 0.0, "paused 30s for Retry-After", conc=3, paused=30.0),
              ev(1.5, 0.0, "throttled (3 admitted in flight)", conc=3)]  # fmt: skip
    pool = Pool(name="api", concurrency=6, adaptive=AdaptiveSettings(initial=16))
    (s,) = pool_series([pool], {}, events, [], T0, T0 + 4.0)
    assert [p.rate for p in s.points] == [None, None, None]
    assert [p.concurrency for p in s.points] == [6, 3, 3]
    assert s.pauses == (PoolPause(1.0, 4.0),)
    # A late resume does not lengthen a pause; a pause after one ran out is another.
    events = [
        ev(1.0, 0.0, "paused 0.5s for Retry-After", conc=3, paused=0.5),
        ev(2.0, 0.0, "paused 0.5s for Retry-After", conc=3, paused=0.5),
        ev(3.0, 0.0, f"{RESUMED} the Retry-After pause is over", conc=3),
    ]
    (late,) = pool_series([pool], {}, events, [], T0, T0 + 4.0)
    assert late.pauses == (PoolPause(1.0, 1.5), PoolPause(2.0, 2.5))
    assert summary_line(s) == "pool api: concurrency 6 -> 3; 0 throttles, 1 pause (3.0s)"
    assert pool_series([pool], {}, [], [], T0, T0 + 4.0) == ()


def test_many_steps_are_shortened_in_the_line_but_all_drawn() -> None:
    rates = [200.0 - k for k in range(1, 15)]
    events = [ev(0.5 * k, r, f"probing up: {k}", conc=8) for k, r in enumerate(rates, 1)]
    (s,) = pool_series([POOL], {"api": set()}, events, [], T0, T0 + 10.0)
    line = summary_line(s)
    assert line.startswith("pool api: rate 200/s -> 199 -> 198 -> 197 -> ... (8 more) -> ")
    assert line.split(", concurrency")[0].endswith("-> 188 -> 187 -> 186")
    r = report([attempt("call@a", 0.0, 10.0)], pool_series=(s,))
    chart = Svg(render_pool_chart(r, s))
    assert len(chart.of("api", "chg")) == len(rates)
    assert chart.of("api", "rate")[0][0]["d"].count("V") == len(rates)


def test_hostile_names_and_reasons_are_text_everywhere() -> None:
    reason = '</title><script>alert(1)</script>\x1b[2J<img src=x onerror="alert(2)">'
    s = PoolSeries(
        pool=HOSTILE + "\x07",
        rate=10.0,
        concurrency=None,
        adaptive=True,
        points=pool_series(
            [Pool(name="api", rate=10.0, adaptive=AdaptiveSettings())],
            {"api": {"infra"}},
            [ev(0.5, 5.0, reason, conc=None)],
            [],
            T0,
            T0 + 2.0,
        )[0].points,
        throttles=(PoolThrottle(0.4, f"infra@{HOSTILE}", 1),),
        pauses=(PoolPause(0.5, 1.0),),
        end=2.0,
    )
    r = report([attempt(f"infra@{HOSTILE}", 0.0, 2.0)], pool_series=(s,))
    page = render_html(r)
    assert "<script>alert" not in page
    assert "<img" not in page
    parsed = Svg(page)
    (pool,) = parsed.pools
    assert pool == HOSTILE + "\x07"
    ((_, title),) = parsed.of(pool, "chg")
    assert title.endswith(reason)
    ((_, tick),) = parsed.of(pool, "thr")
    assert f"infra@{HOSTILE}" in tick
    assert f"\npool {HOSTILE}\\x07: rate 10/s -> 5; 1 throttle, 1 pause (0.5s)\n" in render_table(r)
    assert "\x07" not in render_markdown(r)
