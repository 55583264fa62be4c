"""The HTML report in headless Chromium: the chain138 example rendered by fleetrun, and
hand-built reports. The bar each key should focus is worked out here (``Chart``) from the
report's data and the bars' SVG attributes, apart from the page script.

These tests skip only when Chromium (or the playwright driver) is missing and ``CI`` is
not set; under CI a missing browser is a failure.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from fleetrun.plan import load_plan
from fleetrun.report._html import render_html
from fleetrun.state import AttemptRecord, Journal

from .test_html import HOSTILE, attempt, report

ROOT = Path(__file__).resolve().parents[2]
CHAIN138 = ROOT / "examples" / "chain138" / "plan.yaml"


class Watched:
    """A page with every console message, page error, request and dialog recorded."""

    def __init__(self, browser: Any, height: int = 900) -> None:
        self.page = browser.new_page(viewport={"width": 1280, "height": height})
        self.console: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: self.console.append((m.type, m.text)))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("dialog", self._dialog)

    def _dialog(self, dialog: Any) -> None:
        # An alert() from injected markup would land here; dismissing it keeps the page going.
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def open(self, path: Path) -> None:
        self.page.goto(path.as_uri(), wait_until="load")

    def problems(self) -> list[str]:
        bad = [f"console {t}: {m}" for t, m in self.console if t in ("error", "warning")]
        return bad + [f"page error: {e}" for e in self.errors]


def _fleetrun(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if k not in ("FAIL_REGIONS", "THROTTLE_REGIONS")}
    e["PYTHONPATH"] = str(ROOT / "src")
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "fleetrun", *args],
        env=e, capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert head[12:16] == b"IHDR"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


@pytest.fixture(scope="module")
def chain138(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[AttemptRecord]]:
    """The chain138 example applied (japaneast fails, Oracle is throttled once) and its
    HTML report written by ``fleetrun report``: the page and the journaled attempts."""
    root = tmp_path_factory.mktemp("chain138")
    state, out = root / "state", root / "report.html"
    env = {"CHAIN138_SCALE": "0.05", "THROTTLE_REGIONS": "Oracle", "FAIL_REGIONS": "japaneast"}
    res = _fleetrun("apply", str(CHAIN138), "--state-dir", str(state), env=env)
    assert res.returncode == 1, res.stdout + res.stderr  # japaneast failed, the rest ran
    with Journal(state) as j:
        run_id = j.runs()[0].id
        journaled = j.attempts(run_id)
    res = _fleetrun("report", run_id, "--state-dir", str(state), "--format", "html", "-o", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    return out, journaled


def _tab_to_bar(page: Any, limit: int = 30) -> int:
    """Press Tab until a bar of the timeline has focus; its ``data-i``.

    The chart is one tab stop, so this is the bar that holds it."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        i = page.evaluate("document.activeElement.getAttribute('data-i')")
        if i is not None:
            return int(i)
    pytest.fail(f"no bar got focus in {limit} presses of Tab")


def _focused(page: Any) -> int:
    i = page.evaluate("document.activeElement.getAttribute('data-i')")
    assert i is not None, "a bar has lost the focus"
    return int(i)


def _tip_rows(page: Any) -> dict[str, str]:
    """The tooltip's rows, label to value, as shown."""
    rows = page.locator("#fr-tip tr").evaluate_all(
        "rs => rs.map(r => [r.cells[0].textContent, r.cells[1].textContent])"
    )
    return dict(rows)


def _focused_ax(page: Any) -> dict[str, str]:
    """Chromium's own accessibility node of the focused element: role, name, description."""
    cdp = page.context.new_cdp_session(page)
    try:
        nodes = cdp.send("Accessibility.getFullAXTree")["nodes"]
    finally:
        cdp.detach()
    found = [
        n
        for n in nodes
        if n.get("role", {}).get("value") != "RootWebArea"
        and any(p["name"] == "focused" and p["value"].get("value") for p in n.get("properties", []))
    ]
    assert len(found) == 1, found
    return {k: str(found[0].get(k, {}).get("value", "")) for k in ("role", "name", "description")}


def _boxes(page: Any) -> dict[str, Any]:
    """Viewport boxes of the focused element, the tooltip and the sticky header."""
    return dict(
        page.evaluate(
            """() => {
              const box = e => { const r = e.getBoundingClientRect();
                return {left: r.left, top: r.top, right: r.right, bottom: r.bottom,
                        width: r.width, height: r.height}; };
              return {bar: box(document.activeElement), tip: box(document.getElementById('fr-tip')),
                      header: box(document.querySelector('header.top')),
                      vw: window.innerWidth, vh: window.innerHeight};
            }"""
        )
    )


def _assert_tip_at_bar(page: Any) -> None:
    """The tooltip sits beside the focused bar (below it, or above when there is no room),
    and the bar is in view below the sticky header."""
    b = _boxes(page)
    bar, tip = b["bar"], b["tip"]
    assert b["header"]["bottom"] <= bar["top"]
    assert bar["bottom"] <= b["vh"]
    assert tip["left"] == pytest.approx(max(4, min(bar["left"], b["vw"] - 4 - tip["width"])), abs=1)
    below = tip["top"] == pytest.approx(bar["bottom"] + 6, abs=1)
    above = tip["bottom"] == pytest.approx(bar["top"] - 6, abs=1)
    assert below or above, (bar, tip)
    assert tip["top"] >= 0
    assert tip["bottom"] <= b["vh"]


@dataclass(frozen=True)
class Chart:
    """The bars as the report lays them out, worked out from its data and the SVG: one row
    per target, rows top to bottom by their bars' ``y``, each row in time order (start,
    then lane, which is ``y``). Bars are named by ``data-i``; ``start`` is seconds after
    the run's start, ``key`` and ``n`` the instance and attempt number."""

    rows: list[list[int]]
    start: dict[int, float]
    key: dict[int, str]
    n: dict[int, int]

    @classmethod
    def read(cls, page: Any) -> Chart:
        bars = page.evaluate(
            """() => {
              const d = JSON.parse(document.getElementById('fr-data').textContent).bars;
              return [...document.querySelectorAll('#fr-chart rect.bar')].map(b => {
                const i = Number(b.getAttribute('data-i'));
                return [i, d[i][0], d[i][2], d[i][3], d[i][4], Number(b.getAttribute('y'))];
              });
            }"""
        )
        by_target: dict[str | None, list[tuple[float, float, int]]] = {}
        for i, _, target, _, start, y in bars:
            by_target.setdefault(target, []).append((start, y, i))
        rows = sorted(by_target.values(), key=lambda row: min(y for _, y, _ in row))
        return cls(
            rows=[[i for _, _, i in sorted(row)] for row in rows],
            start={b[0]: b[4] for b in bars},
            key={b[0]: b[1] for b in bars},
            n={b[0]: b[3] for b in bars},
        )

    def move(self, i: int, key: str) -> int:
        """The bar that ``key`` (a playwright key name) moves the focus to from bar ``i``."""
        k = next(k for k, row in enumerate(self.rows) if i in row)
        row, n = self.rows[k], self.rows[k].index(i)
        if key in ("ArrowDown", "ArrowUp"):
            k += 1 if key == "ArrowDown" else -1
            if not 0 <= k < len(self.rows):
                return i
            # The nearest start; on a tie the earlier bar.
            there = self.rows[k]
            return min(there, key=lambda b: (abs(self.start[b] - self.start[i]), there.index(b)))
        return {
            "ArrowRight": row[min(n + 1, len(row) - 1)],
            "ArrowLeft": row[max(n - 1, 0)],
            "Home": row[0],
            "End": row[-1],
            "Control+Home": self.rows[0][0],
            "Control+End": self.rows[-1][-1],
        }[key]


def _stops(page: Any) -> list[int]:
    """The bars in the tab order (``tabindex`` 0); every other bar must have -1."""
    marks = page.locator("#fr-chart rect.bar").evaluate_all(
        "bs => bs.map(b => [Number(b.getAttribute('data-i')), b.getAttribute('tabindex')])"
    )
    assert {t for _, t in marks} <= {"0", "-1"}
    assert page.locator('#fr-chart [tabindex="0"]:not(rect.bar)').count() == 0
    return [i for i, t in marks if t == "0"]


def _add_neighbours(page: Any) -> None:
    """Buttons just before and after the chart: the chart is the page's only tab stop, and
    past it the focus would leave the page for the browser's own controls."""
    page.evaluate(
        """() => {
          const chart = document.querySelector('div.chart');
          for (const [id, where] of [['before', 'beforebegin'], ['after', 'afterend']]) {
            const b = document.createElement('button');
            b.id = id;
            b.textContent = id;
            chart.insertAdjacentElement(where, b);
          }
        }"""
    )


def _active_id(page: Any) -> str:
    return str(page.evaluate("document.activeElement.id"))


def _view(page: Any, i: int) -> str:
    """Whether bar ``i`` shows in full below the sticky header and its scroll padding
    ("in"), is at least partly under the header or past the bottom ("out"), or between."""
    return str(
        page.evaluate(
            """i => {
              const r = document.querySelector(`#fr-chart rect.bar[data-i="${i}"]`)
                .getBoundingClientRect();
              const head = document.querySelector('header.top').getBoundingClientRect().bottom;
              const pad = parseFloat(getComputedStyle(document.documentElement).scrollPaddingTop);
              if (r.top < head || r.bottom > window.innerHeight) { return 'out'; }
              return r.top >= pad && r.bottom <= window.innerHeight ? 'in' : 'edge';
            }""",
            i,
        )
    )


def _move(page: Any, chart: Chart, key: str) -> tuple[int, bool]:
    """Press ``key`` on the focused bar and check where the focus went: the bar ``chart``
    expects, the one tab stop now, its tooltip beside it, and the page scrolled only if
    that bar was out of view. The bar, and whether the page scrolled."""
    want = chart.move(_focused(page), key)
    view, scroll_y = _view(page, want), page.evaluate("window.scrollY")
    page.keyboard.press(key)
    assert _focused(page) == want, key
    assert _stops(page) == [want]
    assert page.locator("#fr-tip").is_visible()
    rows = _tip_rows(page)
    assert (rows["instance"], rows["attempt"]) == (chart.key[want], str(chart.n[want]))
    scrolled = page.evaluate("window.scrollY") != scroll_y
    if view == "in":
        assert not scrolled, key  # the key itself never scrolls the page
    elif view == "out":
        assert scrolled, key
    _assert_tip_at_bar(page)  # in view below the sticky header, the tooltip beside it
    return want, scrolled


def test_chain138_report_opens_in_chromium(
    browser: Any, chain138: tuple[Path, list[AttemptRecord]], tmp_path: Path
) -> None:
    out, journaled = chain138
    w = Watched(browser)
    w.open(out)
    assert w.problems() == []
    assert w.requests == [out.as_uri()]
    assert w.dialogs == []
    bars = w.page.locator("#fr-chart rect.bar")
    assert bars.count() == len(journaled) > 100
    assert w.page.locator("#fr-chart rect.bar.o-retrying").count() == 1  # oracle, throttled once
    assert w.page.locator("#fr-chart rect.bar.o-failed").count() == 1  # infra@japaneast
    assert w.page.locator("#fr-chart rect.bar.crit").count() >= 3
    assert w.page.locator("#fr-legend-tasks > span").count() == len(load_plan(CHAIN138).tasks)
    # Hover shows the bar's details.
    first = w.page.locator('#fr-chart rect.bar[data-i="0"]')
    first.hover()
    tip = w.page.locator("#fr-tip")
    assert tip.is_visible()
    assert journaled[0].key in tip.inner_text()
    w.page.locator("#fr-chart rect.bar.o-retrying").hover()
    assert "retry reason" in tip.inner_text()
    assert "oracle" in tip.inner_text()
    shot = tmp_path / "report.png"
    w.page.screenshot(path=str(shot), full_page=True)
    width, height = _png_size(shot)
    assert width == 1280
    assert height > 1500
    assert shot.stat().st_size > 50_000
    assert w.problems() == []


def test_timeline_from_the_keyboard(
    browser: Any, chain138: tuple[Path, list[AttemptRecord]]
) -> None:
    out, journaled = chain138
    w = Watched(browser, height=700)  # short: moving down the chart scrolls the page
    w.open(out)
    page, tip = w.page, w.page.locator("#fr-tip")
    page.mouse.move(5, 5)  # the pointer rests on the header, away from every bar
    bars = page.locator("#fr-chart rect.bar")
    order = [int(i) for i in bars.evaluate_all("bs => bs.map(b => b.getAttribute('data-i'))")]
    crit = set(
        page.locator("#fr-chart rect.bar.crit").evaluate_all(
            "bs => bs.map(b => Number(b.getAttribute('data-i')))"
        )
    )
    chart = Chart.read(page)
    assert sorted(order) == list(range(len(journaled)))
    assert len(order) > 100
    assert len(crit) >= 3
    # Drawn row by row, each row in time order: the order the keys walk.
    assert [i for row in chart.rows for i in row] == order
    assert len(chart.rows) > 20
    assert max(len(row) for row in chart.rows) >= 3
    # One tab stop before any key is pressed: the first bar drawn.
    assert _stops(page) == [order[0]]

    def bar(i: int) -> Any:
        return page.locator(f'#fr-chart rect.bar[data-i="{i}"]')

    def check(i: int) -> None:
        # The tooltip and the accessible name of bar i, against the journal.
        a = journaled[i]
        assert not a.timed_out
        took = round(a.ended_at - a.started_at, 3)
        assert 0 <= took < 60
        d = f"{took:.3f}s"
        assert tip.is_visible()
        rows = _tip_rows(page)
        assert (rows["instance"], rows["attempt"], rows["duration"], rows["outcome"]) == (
            a.key, str(a.n), d, a.outcome,
        )  # fmt: skip
        name = f"{a.key}, attempt {a.n}, {a.outcome}, {d}"
        if a.queued_reason is not None and a.queued > 0:
            # The engine's reason, and the time from ready to start.
            queued = round(a.queued, 3)
            name += f", queued {queued:.3f}s for {a.queued_reason}"
            assert rows["queued"] == f"{queued:.3f}s before it started: {a.queued_reason}"
        if i in crit:
            name += ", critical path"
        assert bar(i).get_attribute("aria-label") == name
        ax = _focused_ax(page)
        assert (ax["role"], ax["name"]) == ("image", name)
        # Screen readers also get the tooltip's details as the bar's description.
        assert f"instance {a.key}" in ax["description"]
        assert f"duration {d}" in ax["description"]
        _assert_tip_at_bar(page)
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline == "solid"

    # Tab into the chart lands on its first bar; nothing in the chart comes before it.
    _add_neighbours(page)
    assert _tab_to_bar(page) == order[0]
    check(order[0])
    page.keyboard.press("Shift+Tab")
    assert _active_id(page) == "before"
    assert tip.is_hidden()
    page.keyboard.press("Tab")
    assert _focused(page) == order[0]
    # One more Tab leaves the chart: it is a single tab stop, not one per bar.
    page.keyboard.press("Tab")
    assert _active_id(page) == "after"
    assert tip.is_hidden()
    page.keyboard.press("Shift+Tab")
    assert _focused(page) == order[0]

    # Along the widest row near the top, and back; at its ends the focus stays.
    row = next(r for r in chart.rows if len(r) >= 3)
    while _focused(page) not in row:
        _move(page, chart, "ArrowDown")
    walked = [_move(page, chart, "Home")[0]]
    for key in ("ArrowRight", "ArrowRight", "ArrowLeft", "End", "ArrowRight", "Home",
                "ArrowLeft"):  # fmt: skip
        walked.append(_move(page, chart, key)[0])
    assert walked == [row[0], row[1], row[2], row[1], row[-1], row[-1], row[0], row[0]]
    check(row[0])
    # Escape hides the tooltip; the bar keeps the focus, and the next move shows its bar's.
    page.keyboard.press("Escape")
    assert tip.is_hidden()
    assert _focused(page) == row[0]
    _move(page, chart, "ArrowRight")
    check(row[1])

    # Down through every row, past the fold, to the last row and against its end,
    # from a bar of this row whose way down meets a row where the nearest start is
    # not the row's first bar. The report's times come from a real run, so which
    # bar that is depends on how busy the machine was.
    first_of = {i: r[0] for r in chart.rows for i in r}

    def down_from(i: int) -> list[int]:
        path = []
        for _ in range(len(chart.rows)):
            i = chart.move(i, "ArrowDown")
            path.append(i)
        return path

    start = next((b for b in row if any(first_of[i] != i for i in down_from(b))), row[1])
    while _focused(page) != start:
        _move(
            page,
            chart,
            "ArrowRight" if row.index(start) > row.index(_focused(page)) else "ArrowLeft",
        )
    seen, scrolled = [], []
    for _ in range(len(chart.rows)):
        i, moved = _move(page, chart, "ArrowDown")
        seen.append(i)
        scrolled.append(moved)
    assert chart.rows[-1].count(seen[-1]) == 1
    assert seen[-1] == seen[-2]  # the last row: Down stays, and the page did not scroll
    assert not scrolled[-1]
    assert any(scrolled)
    # The nearest start is not always the row's first bar: the walk is more than Home.
    assert any(first_of[i] != i for i in seen)
    far = seen[-1]
    assert page.evaluate("window.scrollY") > 0
    check(far)
    # Up to a bar that scrolling left under the sticky header: the focus brings it out.
    bar(far).evaluate(
        "b => window.scrollBy(0, b.getBoundingClientRect().top"
        " - document.querySelector('header.top').getBoundingClientRect().bottom - 3)"
    )
    up = chart.move(far, "ArrowUp")
    assert _view(page, up) == "out"
    assert _move(page, chart, "ArrowUp") == (up, True)
    check(up)

    # Tab leaves the chart; Shift+Tab comes back to the bar focused last.
    page.keyboard.press("Tab")
    assert _active_id(page) == "after"
    assert tip.is_hidden()
    assert _stops(page) == [up]
    page.keyboard.press("Shift+Tab")
    assert _focused(page) == up
    check(up)
    # The ends of the chart.
    assert _move(page, chart, "Control+End")[0] == order[-1]
    assert _move(page, chart, "Control+Home") == (order[0], True)
    check(order[0])
    _move(page, chart, "ArrowDown")
    # The focus ring moved with the focus.
    assert bar(order[0]).evaluate("b => getComputedStyle(b).outlineStyle") == "none"

    # The pointer on another bar shows that bar; off the chart, the focused bar's returns.
    focused = _focused(page)
    other = next(
        i
        for i in order[1:]
        if i != focused and _view(page, i) == "in" and chart.move(i, "ArrowRight") != i
    )
    bar(other).hover()
    assert _tip_rows(page)["instance"] == journaled[other].key
    page.mouse.move(5, 5)
    assert _tip_rows(page)["instance"] == journaled[focused].key
    _assert_tip_at_bar(page)
    # Blur hides it, and the description goes with the focus; the tab stop stays.
    page.evaluate("document.activeElement.blur()")
    assert tip.is_hidden()
    assert bar(focused).get_attribute("aria-describedby") is None
    assert _stops(page) == [focused]

    # A click focuses a bar too, and makes it the tab stop, but that is the pointer's: the
    # tooltip follows the pointer and goes when it leaves the chart; no focus ring.
    bar(other).click()
    assert _focused(page) == other
    assert _stops(page) == [other]
    box, tip_box = bar(other).bounding_box(), tip.bounding_box()
    assert tip_box["x"] == pytest.approx(box["x"] + box["width"] / 2 + 14, abs=1)  # clicked there
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "none"
    page.mouse.move(5, 5)
    assert tip.is_hidden()
    # The keys go on from the clicked bar, and that is the keyboard's again.
    check(_move(page, chart, "ArrowRight")[0])

    assert w.problems() == []
    assert w.requests == [out.as_uri()]
    assert w.dialogs == []


def test_arrow_keys_follow_rows_and_start_times(browser: Any, tmp_path: Path) -> None:
    # Rows a, b, c (never ran: empty) and the unfanned one; attempt order is not time order.
    r = report(
        [
            attempt("s1@a", 0.0, 1.0),
            attempt("s2@a", 2.0, 3.0),
            attempt("s4@a", 6.0, 7.0),
            attempt("s3@a", 4.0, 5.0),
            attempt("long@b", 0.5, 5.0),
            attempt("short@b", 5.5, 6.0),
            attempt("deploy", 1.0, 2.0),
            attempt("verify", 4.5, 4.8),
            attempt("final", 6.5, 7.0),
        ]
    )
    idle = replace(r.instances[0], key="s1@c", target="c", state="skipped", attempts=0)
    r = replace(r, instances=(*r.instances, idle))
    out = tmp_path / "rows.html"
    out.write_text(render_html(r), encoding="utf-8")
    w = Watched(browser)
    w.open(out)
    page = w.page
    chart = Chart.read(page)
    assert [[chart.key[i] for i in row] for row in chart.rows] == [
        ["s1@a", "s2@a", "s3@a", "s4@a"], ["long@b", "short@b"], ["deploy", "verify", "final"],
    ]  # fmt: skip
    assert page.locator("#fr-chart text.lbl", has_text="c").count() == 1  # the empty row
    assert _stops(page) == [chart.rows[0][0]]
    _add_neighbours(page)
    assert _tab_to_bar(page) == chart.rows[0][0]
    keys = ("ArrowRight", "ArrowRight", "ArrowDown", "ArrowDown", "ArrowDown", "ArrowUp",
            "ArrowUp", "ArrowLeft", "Home", "ArrowLeft", "End", "ArrowRight", "Control+End",
            "Home", "ArrowUp", "Control+Home", "ArrowUp", "ArrowDown")  # fmt: skip
    walked = [chart.key[_move(page, chart, key)[0]] for key in keys]
    # The model's answers, spelled out: Down from s3 (starts at 4) goes to short (5.5, not
    # 0.5), then past the empty row to verify (4.5; final, at 6.5, is as near: the earlier
    # wins); Up from verify to short, then to s4 (6, nearer 5.5 than s3's 4).
    assert walked == [
        "s2@a", "s3@a", "short@b", "verify", "verify", "short@b", "s4@a", "s3@a", "s1@a",
        "s1@a", "s4@a", "s4@a", "final", "deploy", "long@b", "s1@a", "s1@a", "long@b",
    ]  # fmt: skip
    # Keys the chart does not handle do nothing to it.
    page.keyboard.press("Shift+ArrowRight")
    assert _focused(page) == chart.rows[1][0]
    assert _stops(page) == [chart.rows[1][0]]
    # Tab out, Shift+Tab back in: the bar focused last.
    page.keyboard.press("Tab")
    assert _active_id(page) == "after"
    page.keyboard.press("Shift+Tab")
    assert _focused(page) == chart.rows[1][0]
    assert _tip_rows(page)["instance"] == "long@b"
    assert w.problems() == []
    assert w.requests == [out.as_uri()]


def test_bar_names_match_their_tooltips_in_chromium(browser: Any, tmp_path: Path) -> None:
    # Durations where the page script's rounding matters, one target each.
    took = (0.0123, 12.345, 59.9996, 119.97, 245.25, 3725.0, None)
    r = report(
        [
            attempt(f"t@r{k}", 0.0, None if x is None else x,
                    outcome=None if x is None else "succeeded")
            for k, x in enumerate(took)
        ]
    )  # fmt: skip
    r = replace(r, ended_at=None)
    out = tmp_path / "durations.html"
    out.write_text(render_html(r), encoding="utf-8")
    w = Watched(browser)
    w.open(out)
    seen: dict[int, tuple[str, str]] = {}
    i = _tab_to_bar(w.page)
    for _ in took:  # a row per target: Down walks them all
        name = w.page.evaluate("document.activeElement.getAttribute('aria-label')")
        seen[i] = (name.split(", ")[3], _tip_rows(w.page)["duration"])
        w.page.keyboard.press("ArrowDown")
        i = _focused(w.page)
    expected = ["0.012s", "12.345s", "1m00.0s", "2m00.0s", "4m05.3s", "1h02m",
                "still running when the run ended"]  # fmt: skip
    assert seen == {k: (e, e) for k, e in enumerate(expected)}
    assert w.problems() == []


def test_hostile_report_is_inert_in_chromium(browser: Any, tmp_path: Path) -> None:
    r = report(
        [
            attempt(f"infra@{HOSTILE}", 0.0, 1.0, outcome="retrying",
                    reason="</script><script>alert(2)</script>"),
            attempt(f"infra@{HOSTILE}", 1.5, 2.0, n=2),
        ],
        critical=(f"infra@{HOSTILE}",),
        plan_name='<img src=x onerror="alert(3)">',
    )  # fmt: skip
    out = tmp_path / "hostile.html"
    out.write_text(render_html(r), encoding="utf-8")
    w = Watched(browser)
    w.open(out)
    assert w.dialogs == []
    assert w.problems() == []
    assert w.requests == [out.as_uri()]
    assert w.page.locator("img").count() == 0
    assert w.page.locator("script").count() == 2
    assert w.page.locator("#fr-chart text.lbl:not(.ph)").first.text_content() == HOSTILE
    assert w.page.locator("h1").inner_text().startswith('<img src=x onerror="alert(3)">')
    w.page.locator('#fr-chart rect.bar[data-i="0"]').hover()
    assert "</script><script>alert(2)</script>" in w.page.locator("#fr-tip").inner_text()
    # From the keyboard: the name and the tooltip show the names as text.
    w.page.mouse.move(5, 5)
    assert _tab_to_bar(w.page) == 0
    w.page.keyboard.press("End")
    assert (_focused(w.page), _tip_rows(w.page)["attempt"]) == (1, "2")
    w.page.keyboard.press("Home")
    name = f"infra@{HOSTILE}, attempt 1, retrying, 1.000s, critical path"
    assert _focused_ax(w.page)["name"] == name
    rows = _tip_rows(w.page)
    assert (rows["target"], rows["retry reason"]) == (HOSTILE, "</script><script>alert(2)</script>")
    assert w.page.locator("#fr-tip *").evaluate_all("es => es.map(e => e.tagName)") == [
        "TABLE",
        *["TR", "TH", "TD"] * len(rows),
    ]
    w.page.keyboard.press("Escape")
    assert w.page.locator("#fr-tip").is_hidden()
    assert w.dialogs == []
    assert w.problems() == []


def test_empty_report_opens_cleanly_in_chromium(browser: Any, tmp_path: Path) -> None:
    r = report([], phases=(), estimates=(), tasks=(), pools=(), slowest_targets=())
    out = tmp_path / "empty.html"
    out.write_text(render_html(r), encoding="utf-8")
    w = Watched(browser)
    w.open(out)
    assert w.problems() == []
    assert w.requests == [out.as_uri()]
    assert w.page.locator("#fr-chart").count() == 0
    assert "nothing ran" in w.page.locator("main").inner_text()
