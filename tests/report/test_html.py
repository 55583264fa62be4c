"""The HTML report: unit tests on hand-built reports, read back with an HTML parser.

The same pages in headless Chromium: test_html_browser.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from dataclasses import replace
from html.parser import HTMLParser
from typing import Any

import pytest

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
from fleetrun.report._text import speedup

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
        speedup=speedup(wall * 2, wall),
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
    # One tab stop: the first bar drawn; the script moves it with the arrow keys.
    assert [b["tabindex"] for b in bars] == ["0"] + ["-1"] * (len(r.attempts) - 1)
    assert [b["role"] for b in bars] == ["img"] * len(r.attempts)
    # Drawn row by row (target a, target b, the unfanned row), each row in time order.
    assert [int(b["data-i"]) for b in bars] == [0, 2, 1, 3, 4, 5]
    assert [int(b["data-r"]) for b in bars] == [0, 0, 1, 1, 2, 2]
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
    # The chart is a group (an img's children would be hidden from screen readers) whose
    # name says how to move in it; so does the hint below it.
    chart = next(a for t, a in page.tags if a.get("id") == "fr-chart")
    assert chart["role"] == "group"
    assert chart["aria-label"].startswith("Timeline: one bar per attempt; ")
    assert "arrow keys move between bars" in chart["aria-label"]
    hint = next(t for t in page.text if t.startswith("Hover a bar"))
    assert "Tab to the chart" in hint
    assert "arrow keys move between bars" in hint
    assert "Escape hides the details" in hint


def test_bars_are_drawn_in_time_order_within_a_row() -> None:
    # Attempt order is not time order here: the row of x gets its bars by start time,
    # overlapping ones (lanes) by lane; one tab stop, the first bar drawn.
    r = report(
        [
            attempt("late@x", 5.0, 6.0),
            attempt("early@x", 0.0, 4.0),
            attempt("mid@x", 2.0, 3.0),
            attempt("last@y", 6.0, 7.0),
            attempt("mid2@x", 2.0, 2.5),
        ]
    )
    bars = Page(render_html(r)).bars()
    starts = [(int(b["data-r"]), r.attempts[int(b["data-i"])].started_at) for b in bars]
    assert starts == sorted(starts)
    # x starts first (row 0); mid2 and mid start together: lanes 1 and 2, in that order.
    assert [int(b["data-i"]) for b in bars] == [1, 4, 2, 0, 3]
    assert [int(b["data-r"]) for b in bars] == [0, 0, 0, 0, 1]
    assert float(bars[1]["y"]) < float(bars[2]["y"])
    assert [b["tabindex"] for b in bars] == ["0", "-1", "-1", "-1", "-1"]


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
