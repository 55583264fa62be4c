"""The HTML report: unit tests on hand-built reports, and the chain138 example
rendered by fleetrun and opened in headless Chromium.

The browser tests skip only when Chromium (or the playwright driver) is missing
and ``CI`` is not set; under CI a missing browser is a failure.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from fleetrun.plan import load_plan
from fleetrun.report._html import dur, render_html, task_colour
from fleetrun.report._html_timeline import (
    LABEL_W,
    PLOT_W,
    pack_lanes,
    tick_label,
    tick_step,
    tip_secs,
)
from fleetrun.report._model import (
    AttemptRecord,
    CriticalStep,
    InstanceRecord,
    ModeEstimate,
    PoolStats,
    RunReport,
    Span,
    TargetStats,
    TaskStats,
)
from fleetrun.state import Journal

ROOT = Path(__file__).resolve().parents[2]
CHAIN138 = ROOT / "examples" / "chain138" / "plan.yaml"
T0 = 1_700_000_000.0
HOSTILE = "<script>alert(1)</script>"

# --- building reports by hand ---


def attempt(
    key: str,
    start: float,
    end: float | None,
    *,
    n: int = 1,
    outcome: str | None = "succeeded",
    exit_code: int | None = 0,
    reason: str | None = None,
) -> AttemptRecord:
    """An attempt of ``task@target`` (or an unfanned ``task``), times relative to T0."""
    task, _, target = key.partition("@")
    return AttemptRecord(
        key=key,
        task=task,
        target=target or None,
        n=n,
        started_at=T0 + start,
        ended_at=None if end is None else T0 + end,
        outcome=outcome,
        exit_code=exit_code,
        signal=None,
        timed_out=False,
        retry_reason=reason,
        log_path=f"/state/logs/{key}.{n}.log",
    )


def span(name: str, start: float | None, end: float | None, instances: int = 1) -> Span:
    """A span with plausible figures (the renderer only formats them)."""
    wall = 0.0 if start is None or end is None else end - start
    return Span(
        name=name,
        instances=instances,
        counts={"succeeded": instances},
        started_at=None if start is None else T0 + start,
        ended_at=None if end is None else T0 + end,
        wall=wall,
        task_time=wall * 2,
        speedup=2.0 if wall else 0.0,
        critical_path=wall / 2,
        lower_bound=wall / 2,
        efficiency=0.5 if wall else 0.0,
    )


def report(
    attempts: list[AttemptRecord],
    *,
    critical: tuple[str, ...] = (),
    phases: tuple[Span, ...] | None = None,
    states: dict[str, str] | None = None,
    **over: Any,
) -> RunReport:
    """A report over ``attempts``: one instance per key, the plan's phases by default."""
    keys = list(dict.fromkeys(a.key for a in attempts))
    end = max([0.0, *((a.ended_at or a.started_at) - T0 for a in attempts)])
    instances = tuple(
        InstanceRecord(
            key=k,
            task=k.partition("@")[0],
            target=k.partition("@")[2] or None,
            phase="deploy",
            state=(states or {}).get(k, "succeeded"),
            reason="",
            attempts=sum(a.key == k for a in attempts),
            started_at=min(a.started_at for a in attempts if a.key == k),
            ended_at=max((a.ended_at or a.started_at) for a in attempts if a.key == k),
            task_time=sum(a.duration for a in attempts if a.key == k),
            exit_code=0,
            critical=k in critical,
        )
        for k in keys
    )
    by_key = {a.key: a for a in attempts}
    base = RunReport(
        run_id="20260101T000000-abcd",
        parent_id=None,
        kind="apply",
        plan_name="demo",
        plan_path="/plans/demo.yaml",
        status="succeeded",
        mode="dag",
        parallelism=8,
        started_at=T0,
        ended_at=T0 + end,
        overall=span("overall", 0.0, end, len(keys)),
        phases=(span("deploy", 0.0, end, len(keys)),) if phases is None else phases,
        estimates=(
            ModeEstimate("sequential", end * 3, measured=False),
            ModeEstimate("phased", end * 1.5, measured=False),
            ModeEstimate("dag", end, measured=True),
        ),
        critical_path=tuple(
            CriticalStep(
                key=k,
                started_at=by_key[k].started_at,
                ended_at=by_key[k].ended_at or by_key[k].started_at,
                duration=by_key[k].duration,
                waited=0.0,
            )
            for k in critical
        ),
        instances=instances,
        attempts=tuple(attempts),
        tasks=(TaskStats("infra", 2, 3, 1, 1, 0, 4.0, 2.0, "infra@a", 3.0),),
        pools=(PoolStats("api", 4, 10.0, 2, 3, 1, 1, 2, 1),),
        slowest_targets=(TargetStats("a", 2, 4.0, 4.0, 0),),
    )
    return replace(base, **over)


def sample() -> RunReport:
    """Two targets and an unfanned task; a retry, a failure, a critical path."""
    return report(
        [
            attempt("infra@a", 0.0, 1.0, outcome="retrying", exit_code=75, reason="exit 75"),
            attempt("infra@b", 0.0, 2.0),
            attempt("infra@a", 3.0, 4.0, n=2),
            attempt("k8s@b", 2.0, 5.0, outcome="failed", exit_code=1),
            attempt("deploy", 4.0, 6.0),
            attempt("verify", 4.5, 5.5),
        ],
        critical=("infra@a", "deploy"),
        states={"k8s@b": "failed"},
    )


# --- reading the page back ---


class Page(HTMLParser):
    """Every element with its attributes, the text of each <script>, and all text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.scripts: list[tuple[dict[str, str], str]] = []
        self.text: list[str] = []
        self._script: dict[str, str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        if tag == "script":
            self._script = a
            self.scripts.append((a, ""))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._script = None

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            attrs, body = self.scripts[-1]
            self.scripts[-1] = (attrs, body + data)
        else:
            self.text.append(data)

    def bars(self) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == "rect" and "bar" in a.get("class", "").split()
                and "data-i" in a]  # fmt: skip

    def data(self) -> dict[str, Any]:
        blob = [body for a, body in self.scripts if a.get("id") == "fr-data"]
        assert len(blob) == 1
        parsed: dict[str, Any] = json.loads(blob[0])
        return parsed


# --- unit tests ---


def test_one_bar_per_attempt_positioned_by_time() -> None:
    r = sample()
    page = Page(render_html(r))
    bars = page.bars()
    assert sorted(int(b["data-i"]) for b in bars) == list(range(len(r.attempts)))
    span_s = 6.0  # first start to last end
    for b in bars:
        a = r.attempts[int(b["data-i"])]
        assert float(b["x"]) == pytest.approx(
            LABEL_W + (a.started_at - T0) / span_s * PLOT_W, abs=0.06
        )
        assert float(b["width"]) == pytest.approx(a.duration / span_s * PLOT_W, abs=0.06)
        classes = b["class"].split()
        assert f"o-{a.outcome}" in classes
    # Tooltip details are the attempts', in attempt order.
    details = page.data()["bars"]
    assert [(d[0], d[3], d[4], d[5], d[6], d[7], d[10]) for d in details] == [
        (a.key, a.n, round(a.started_at - T0, 3), round(a.duration, 3), a.outcome, a.exit_code,
         a.retry_reason)
        for a in r.attempts
    ]  # fmt: skip


def test_rows_per_target_and_lanes_for_overlaps() -> None:
    r = sample()
    page = Page(render_html(r))
    y = {int(b["data-i"]): float(b["y"]) for b in page.bars()}
    # infra@a attempts 1 and 2 share target a's row and lane; b's row is below a's.
    assert y[0] == y[2]
    assert y[1] > y[0]
    assert y[3] == y[1]  # k8s@b follows infra@b: same lane
    # deploy and verify overlap in the unfanned row: two lanes, below every target.
    assert y[5] > y[4] > y[3]
    labels = [t for t in page.text if t.strip()]
    assert labels.index("a") < labels.index("b") < labels.index("(not fanned over a target)")
    assert pack_lanes([(0, 2), (1, 3), (2, 4), (2.5, 5), (5, 6)]) == [0, 1, 0, 2, 0]
    assert pack_lanes([]) == []


def test_targets_that_never_ran_get_empty_rows() -> None:
    r = sample()
    idle = replace(r.instances[0], key="infra@c", target="c", state="skipped", attempts=0)
    r = replace(r, instances=(*r.instances, idle))
    chart = Page(render_html(r).split('<div class="chart">', 1)[1].split("</svg>", 1)[0])
    ticks_or_tips = re.compile(r"[\d.]+s|phase \w+: .*")
    labels = [t for t in chart.text if t.strip() and not ticks_or_tips.fullmatch(t)]
    assert labels == ["phase · deploy", "a", "b", "c", "(not fanned over a target)"]
    assert len(chart.bars()) == len(r.attempts)


def test_task_colours_and_states_are_marked() -> None:
    r = sample()
    page = Page(render_html(r))
    cls = {int(b["data-i"]): b["class"].split() for b in page.bars()}
    # Tasks in plan order: infra t0, k8s t1, deploy t2, verify t3.
    assert [next(c for c in cls[i] if re.fullmatch(r"t\d+", c)) for i in range(6)] == [
        "t0", "t0", "t0", "t1", "t2", "t3",
    ]  # fmt: skip
    assert "o-retrying" in cls[0]
    assert "o-failed" in cls[3]
    html = render_html(r)
    chart = Page(html.split('<div class="chart">', 1)[1].split("</svg>", 1)[0])
    hatches = [a["class"] for t, a in chart.tags if t == "rect" and "hatch" in a.get("class", "")]
    assert hatches == ["hatch h-failed"]  # k8s@b's bar only
    assert [html.count(f".t{i}{{fill:") for i in range(5)] == [1, 1, 1, 1, 0]
    assert ".t0{fill:#4e79a7}" in html


def test_critical_path_is_outlined_and_linked() -> None:
    r = sample()
    html = render_html(r)
    page = Page(html)
    crit = sorted(int(b["data-i"]) for b in page.bars() if "crit" in b["class"].split())
    assert crit == [0, 2, 4]  # both attempts of infra@a, and deploy
    links = [a["d"] for t, a in page.tags if t == "path" and a.get("class") == "cp-link"]
    assert len(links) == 1
    assert links[0].count("M") == 1
    assert "critical path" in page.text
    assert "infra@a" in page.text
    assert "deploy" in page.text


def test_open_attempt_runs_to_the_end_of_the_chart() -> None:
    r = report([attempt("a@x", 0.0, 4.0), attempt("b@x", 1.0, None, outcome=None, exit_code=None)])
    r = replace(r, ended_at=None)
    page = Page(render_html(r))
    bars = {int(b["data-i"]): b for b in page.bars()}
    assert "o-open" in bars[1]["class"]
    assert float(bars[1]["x"]) + float(bars[1]["width"]) == pytest.approx(LABEL_W + PLOT_W, abs=0.1)
    assert page.data()["bars"][1][5] is None


def test_hostile_names_are_inert() -> None:
    evil_reason = '"><img src=x onerror=alert(2)></script><script>alert(3)</script><!--'
    r = report(
        [
            attempt(f"infra@{HOSTILE}", 0.0, 1.0, outcome="retrying", reason=evil_reason),
            attempt(f"infra@{HOSTILE}", 1.5, 2.0, n=2),
            attempt("</style><b>x</b>", 0.5, 1.0),
            attempt(f"long@{HOSTILE * 3}", 0.2, 0.4),  # a label cut short, named in full
        ],
        critical=(f"infra@{HOSTILE}",),
        plan_name="</title><script>alert(4)</script>",
        notes=("note <i>with</i> & markup",),
        slowest_targets=(TargetStats(HOSTILE, 1, 1.0, 1.0, 0),),
    )
    html = render_html(r)
    page = Page(html)
    # Only the page's own two scripts; no element or attribute came from user data.
    assert html.lower().count("<script") == 2
    assert html.lower().count("</script") == 2
    assert [a for a, _ in page.scripts] == [{"id": "fr-data", "type": "application/json"}, {}]
    assert {t for t, _ in page.tags} <= {
        "html", "head", "meta", "title", "style", "body", "main", "header", "h1", "h2", "span",
        "dl", "div", "dt", "dd", "p", "code", "small", "svg", "defs", "pattern", "rect", "path",
        "text", "line", "g", "table", "thead", "tbody", "tr", "th", "td", "script",
    }  # fmt: skip
    assert not [k for _, a in page.tags for k in a if k.startswith("on")]
    assert html.count("<b>") == 0
    assert html.count("<i>") == 0
    assert "</style><b>" not in html
    # The text is shown as text, and the JSON blob holds it unchanged.
    text = "".join(page.text)
    assert HOSTILE in text
    assert "note <i>with</i> & markup" in text
    assert page.data()["bars"][0][2] == HOSTILE
    assert page.data()["bars"][3][2] == HOSTILE * 3
    assert HOSTILE * 3 in page.text  # the <title> of its shortened row label
    assert page.data()["bars"][0][10] == evil_reason
    # The JSON never closes its element or opens a comment.
    blob = html.split('<script id="fr-data" type="application/json">', 1)[1].split("</script>")[0]
    assert "<" not in blob
    assert ">" not in blob


def test_bars_are_focusable_and_named() -> None:
    r = sample()
    page = Page(render_html(r))
    bars = page.bars()
    assert [b["tabindex"] for b in bars] == ["0"] * len(r.attempts)
    assert [b["role"] for b in bars] == ["img"] * len(r.attempts)
    # Tab follows the order rows are drawn: target a, target b, then the unfanned row.
    assert [int(b["data-i"]) for b in bars] == [0, 2, 1, 3, 4, 5]
    assert {int(b["data-i"]): b["aria-label"] for b in bars} == {
        0: "infra@a, attempt 1, retrying, 1.000s, critical path",
        1: "infra@b, attempt 1, succeeded, 2.000s",
        2: "infra@a, attempt 2, succeeded, 1.000s, critical path",
        3: "k8s@b, attempt 1, failed, 3.000s",
        4: "deploy, attempt 1, succeeded, 2.000s, critical path",
        5: "verify, attempt 1, succeeded, 1.000s",
    }
    # Nothing else is in the tab order: not the hatching, the legend or the chart itself.
    assert len([a for _, a in page.tags if "tabindex" in a]) == len(r.attempts)
    # The chart is a group: an img's children would be hidden from screen readers.
    chart = next(a for t, a in page.tags if a.get("id") == "fr-chart")
    assert (chart["role"], chart["aria-label"]) == ("group", "Timeline: one bar per attempt")


def test_bar_names_of_open_and_timed_out_attempts() -> None:
    timed_out = replace(
        attempt("b@y", 0.5, 75.25, outcome="failed", exit_code=None), timed_out=True
    )
    r = report([attempt("a@x", 1.0, None, outcome=None, exit_code=None), timed_out])
    r = replace(r, ended_at=None)
    names = {int(b["data-i"]): b["aria-label"] for b in Page(render_html(r)).bars()}
    assert names == {
        0: "a@x, attempt 1, no end recorded, still running when the run ended",
        1: "b@y, attempt 1, failed (timed out), 1m14.8s",
    }


def test_bar_durations_read_as_the_tooltip_writes_them() -> None:
    # The page script's secs(): milliseconds below a minute, Math.round's halves up.
    cases = (0.0, 0.0123, 12.345, 59.9996, 60.0, 119.97, 245.25, 3599.96, 3725.0, None)
    assert [tip_secs(None if x is None else round(x, 3)) for x in cases] == [
        "0.000s", "0.012s", "12.345s", "1m00.0s", "1m00.0s", "2m00.0s", "4m05.3s",
        "1h00m", "1h02m", "still running when the run ended",
    ]  # fmt: skip


def test_hostile_names_are_escaped_in_bar_names() -> None:
    quote = 'q" onfocus="alert(5)'
    r = report(
        [
            attempt(f"infra@{HOSTILE}", 0.0, 1.0, outcome="retrying", reason=HOSTILE),
            attempt(f"infra@{quote}", 0.5, 1.5),
        ],
        critical=(f"infra@{HOSTILE}",),
    )
    html = render_html(r)
    page = Page(html)
    assert [b["aria-label"] for b in page.bars()] == [
        f"infra@{HOSTILE}, attempt 1, retrying, 1.000s, critical path",
        f"infra@{quote}, attempt 1, succeeded, 1.000s",
    ]
    assert not [k for _, a in page.tags for k in a if k.startswith("on")]
    # In the markup the names are only ever escaped: entities in markup, \u escapes in JSON.
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    in_json = "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e"
    assert HOSTILE not in html
    assert html.count("alert(1)") == html.count(escaped) + html.count(in_json)
    assert f'aria-label="infra@{escaped}, attempt 1, retrying, 1.000s, critical path"' in html
    assert 'aria-label="infra@q&quot; onfocus=&quot;alert(5), attempt 1' in html
    assert html.lower().count("<script") == 2


def test_fetches_nothing() -> None:
    html = render_html(sample())
    page = Page(html)
    fetching = {"src", "href", "xlink:href", "srcset", "action", "formaction", "poster",
                "background", "data", "manifest"}  # fmt: skip
    assert [(t, k) for t, a in page.tags for k in a if k in fetching] == []
    assert "link" not in {t for t, _ in page.tags}
    for pattern in (
        r"https?:",
        r"@import",
        r"url\((?!#)",
        r"//[\w.-]+\.\w",
        r"\bimport\(",
        r"fetch\(",
    ):
        assert not re.search(pattern, html, re.IGNORECASE), pattern
    # The policy blocks any request, and allows exactly the page's own script and style.
    csp = next(
        a["content"] for t, a in page.tags if a.get("http-equiv") == "Content-Security-Policy"
    )
    script = next(body for a, body in page.scripts if not a)
    style = html.split("<style>", 1)[1].split("</style>", 1)[0]
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in csp
    assert csp.startswith("default-src 'none';")


def test_empty_report_without_plan() -> None:
    r = report([], phases=(), estimates=(), tasks=(), pools=(), slowest_targets=())
    r = replace(r, overall=span("overall", None, None, 0), notes=("the plan could not be loaded",))
    html = render_html(r)
    page = Page(html)
    assert page.bars() == []
    assert not [a for _, a in page.tags if a.get("id") == "fr-chart"]
    assert page.data()["bars"] == []
    text = " ".join(page.text)
    for phrase in ("nothing ran", "No phases", "No estimates", "No critical path", "No tasks",
                   "No pools", "the plan could not be loaded"):  # fmt: skip
        assert phrase in text, phrase


def test_attempts_without_plan_graph() -> None:
    r = report([attempt("a@x", 0.0, 1.0), attempt("b@y", 0.5, 2.0)], phases=(), estimates=())
    page = Page(render_html(r))
    assert len(page.bars()) == 2
    assert not [a for t, a in page.tags if a.get("class") in ("phase", "cp-link")]
    assert not [b for b in page.bars() if "crit" in b["class"]]


def test_two_thousand_bars_render_quickly_and_compactly() -> None:
    attempts = [
        attempt(f"t{i % 7}@region-{i % 100:03d}", (i // 100) * 1.0, (i // 100) * 1.0 + 0.8)
        for i in range(2000)
    ]
    r = report(attempts, critical=tuple(a.key for a in attempts[:20:7]))
    started = time.perf_counter()
    html = render_html(r)
    took = time.perf_counter() - started
    assert len(Page(html).bars()) == 2000
    assert took < 5.0  # about 0.05 s; a bound that only catches a quadratic blow-up
    assert len(html) < 1_500_000


@pytest.mark.parametrize(
    ("span_s", "step", "labels"),
    [
        (0.5, 0.05, ["0.00s", "0.05s", "0.50s"]),
        (7.2, 1.0, ["0s", "1s", "7s"]),
        (95.0, 10.0, ["0s", "10s", "90s"]),
        (1500.0, 300.0, ["0s", "5m", "25m"]),
        (4000.0, 600.0, ["0s", "10m", "1h"]),
        (40000.0, 7200.0, ["0s", "2h", "10h"]),
    ],
)
def test_axis_ticks(span_s: float, step: float, labels: list[str]) -> None:
    assert tick_step(span_s) == step
    ks = [0, 1, int(span_s / step + 1e-9)]
    assert [tick_label(k * step, step) for k in ks] == labels


def test_durations() -> None:
    cases = (0.0123, 9.9999, 12.345, 59.999, 119.97, 245.2, 3599.97, 3725.0, None, float("nan"))
    assert [dur(x) for x in cases] == [
        "0.012s", "10.00s", "12.35s", "1m00.0s", "2m00.0s", "4m05.2s", "1h00m00s", "1h02m05s",
        "\u2013", "\u2013",
    ]  # fmt: skip
    assert len({task_colour(i) for i in range(40)}) == 40


# --- end to end: fleetrun, then Chromium ---


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.path.exists("/usr/bin/chromium"):
        found = "/usr/bin/chromium"
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (CI installs Debian's chromium package)")
        pytest.skip("chromium is not installed")
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium driven by playwright (the system browser, nothing downloaded)."""
    path = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("playwright is not installed (it is in the test extra)")
        pytest.skip("playwright is not installed")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=["--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


class Watched:
    """A page with every console message, page error, request and dialog recorded."""

    def __init__(self, browser: Any) -> None:
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
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
def chain138(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """The chain138 example applied (japaneast fails, Oracle is throttled once) and its
    HTML report written by ``fleetrun report``: the page and the journaled attempts."""
    root = tmp_path_factory.mktemp("chain138")
    state, out = root / "state", root / "report.html"
    env = {"CHAIN138_SCALE": "0.05", "THROTTLE_REGIONS": "Oracle", "FAIL_REGIONS": "japaneast"}
    res = _fleetrun("apply", str(CHAIN138), "--state-dir", str(state), env=env)
    assert res.returncode == 1, res.stdout + res.stderr  # japaneast failed, the rest ran
    with Journal(state) as j:
        run_id = j.runs()[0]["id"]
        journaled = j.attempts(run_id)
    res = _fleetrun("report", run_id, "--state-dir", str(state), "--format", "html", "-o", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    return out, journaled


def _tab_to_bar(page: Any, limit: int = 30) -> int:
    """Press Tab until a bar of the timeline has focus; its ``data-i``."""
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


def test_chain138_report_opens_in_chromium(
    browser: Any, chain138: tuple[Path, list[dict[str, Any]]], tmp_path: Path
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
    assert journaled[0]["key"] in tip.inner_text()
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
    browser: Any, chain138: tuple[Path, list[dict[str, Any]]]
) -> None:
    out, journaled = chain138
    w = Watched(browser)
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
    assert sorted(order) == list(range(len(journaled)))
    assert len(order) > 100
    assert len(crit) >= 3
    # The first bar drawn below the fold (the rows are drawn top to bottom).
    tops = bars.evaluate_all("bs => bs.map(b => b.getBoundingClientRect().top)")
    far = next(k for k, top in enumerate(tops) if top > page.viewport_size["height"])
    assert 2 < far < len(order) - 3

    def check(i: int) -> None:
        # The tooltip and the accessible name of bar i, against the journal.
        a = journaled[i]
        assert not a["timed_out"]
        took = round(a["ended_at"] - a["started_at"], 3)
        assert 0 <= took < 60
        d = f"{took:.3f}s"
        assert tip.is_visible()
        rows = _tip_rows(page)
        assert (rows["instance"], rows["attempt"], rows["duration"], rows["outcome"]) == (
            a["key"], str(a["n"]), d, a["outcome"],
        )  # fmt: skip
        name = f"{a['key']}, attempt {a['n']}, {a['outcome']}, {d}"
        if i in crit:
            name += ", critical path"
        assert bars.nth(order.index(i)).get_attribute("aria-label") == name
        ax = _focused_ax(page)
        assert (ax["role"], ax["name"]) == ("image", name)
        # Screen readers also get the tooltip's details as the bar's description.
        assert f"instance {a['key']}" in ax["description"]
        assert f"duration {d}" in ax["description"]
        _assert_tip_at_bar(page)
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline == "solid"

    # The first Tab stop in the chart is the first bar drawn; Tab walks them in that order.
    assert _tab_to_bar(page) == order[0]
    check(order[0])
    # Nothing in the chart comes before its first bar (not the chart itself either).
    page.keyboard.press("Shift+Tab")
    assert tip.is_hidden()
    assert (
        page.evaluate("document.getElementById('fr-chart').contains(document.activeElement)")
        is False
    )
    page.keyboard.press("Tab")
    assert _focused(page) == order[0]
    page.keyboard.press("Tab")
    assert _focused(page) == order[1]
    check(order[1])
    # Escape hides the tooltip; the bar keeps the focus.
    page.keyboard.press("Escape")
    assert tip.is_hidden()
    assert _focused(page) == order[1]
    page.keyboard.press("Shift+Tab")
    assert _focused(page) == order[0]
    check(order[0])
    # Far down the chart: the page scrolls the bar into view below the sticky header.
    for _ in range(far):
        page.keyboard.press("Tab")
    assert _focused(page) == order[far]
    assert page.evaluate("window.scrollY") > 0
    check(order[far])
    # Back up to a bar that scrolling left under the sticky header: focus brings it out.
    bars.nth(far - 1).evaluate("b => window.scrollBy(0, b.getBoundingClientRect().top - 40)")
    page.keyboard.press("Shift+Tab")
    assert _focused(page) == order[far - 1]
    check(order[far - 1])
    page.keyboard.press("Tab")
    assert _focused(page) == order[far]
    assert (
        page.evaluate("getComputedStyle(document.querySelector('#fr-chart rect.bar')).outlineStyle")
        == "none"
    )

    # The pointer on another bar shows that bar; off the chart, the focused bar's returns.
    other = bars.nth(far + 2)
    other.hover()
    assert _tip_rows(page)["instance"] == journaled[order[far + 2]]["key"]
    page.mouse.move(5, 5)
    assert _tip_rows(page)["instance"] == journaled[order[far]]["key"]
    _assert_tip_at_bar(page)
    # Blur hides it, and the description goes with the focus.
    page.evaluate("document.activeElement.blur()")
    assert tip.is_hidden()
    assert bars.nth(far).get_attribute("aria-describedby") is None

    # A click focuses a bar too, but that is the pointer's: the tooltip follows the pointer
    # and goes when it leaves the chart, and no focus ring is drawn.
    first = bars.nth(0)
    first.click()
    assert _focused(page) == order[0]
    box, tip_box = first.bounding_box(), tip.bounding_box()
    assert tip_box["x"] == pytest.approx(box["x"] + box["width"] / 2 + 14, abs=1)  # clicked there
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "none"
    page.mouse.move(5, 5)
    assert tip.is_hidden()

    assert w.problems() == []
    assert w.requests == [out.as_uri()]
    assert w.dialogs == []


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
    for _ in took:
        name = w.page.evaluate("document.activeElement.getAttribute('aria-label')")
        seen[i] = (name.split(", ")[3], _tip_rows(w.page)["duration"])
        w.page.keyboard.press("Tab")
        i = int(w.page.evaluate("document.activeElement.getAttribute('data-i') || -1"))
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
