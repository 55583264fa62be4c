"""The live view: exact rendering at a fixed size, the ETA, a real run, and when it is used."""

from __future__ import annotations

import asyncio
import io
import os
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from fleetrun.engine import (
    AttemptEnded,
    AttemptStarted,
    Event,
    InstanceReused,
    InstanceSettled,
    PoolChanged,
    RunEnded,
    RunOptions,
    RunResult,
    RunStarted,
    WaveChanged,
    run_graph,
)
from fleetrun.engine.testing import graph, task
from fleetrun.executors import LocalExecutor
from fleetrun.plan import Graph, Pool, RetryPolicy
from fleetrun.report import PlainConsole
from fleetrun.report._live import LiveConsole, event_text, stamp, use_live
from fleetrun.report._live_render import LiveState, render

T = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
TARGETS = ["a", "b", "c", "d"]


def text_of(renderable: object, width: int = 100) -> str:
    con = Console(width=width, file=io.StringIO(), force_terminal=False, color_system=None)
    con.print(renderable)
    out = con.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(out, str)
    return out


def two_phases() -> Graph:
    """infra (10 s, pool api of 2) per target, then deploy (20 s) per target."""
    return graph(
        [
            task(
                "infra", "true", targets=TARGETS, phase="infrastructure", pools=["api"], estimate=10
            ),
            task("deploy", "true", targets=TARGETS, phase="deploy", needs=["infra"], estimate=20),
        ],
        pools=[Pool("api", concurrency=2)],
        phases=["infrastructure", "deploy"],
    )


def started(g: Graph, key: str, at: float, attempt: int = 1) -> AttemptStarted:
    return AttemptStarted(
        at=at, node=g.index[key], key=key, attempt=attempt, command="true", pid=1, pgid=1,
        log_path="x.log",
    )  # fmt: skip


def ended(
    g: Graph, key: str, at: float, start: float, outcome: str, code: int = 0, **kw: object
) -> AttemptEnded:
    return AttemptEnded(
        at=at, node=g.index[key], key=key, attempt=1, started_at=start, exit_code=code,
        signal=None, timed_out=False, outcome=outcome, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def settled(g: Graph, key: str, at: float, state: str, reason: str = "", n: int = 1) -> Event:
    return InstanceSettled(
        at=at, node=g.index[key], key=key, state=state, reason=reason, attempts=n  # type: ignore[arg-type]
    )  # fmt: skip


def run_started(at: float = T, parallelism: int | None = None, nodes: int = 8) -> RunStarted:
    return RunStarted(
        at=at, run_id="r1", plan_name="p", mode="dag", parallelism=parallelism, nodes=nodes
    )


def in_progress(g: Graph) -> list[Event]:
    """infra@a succeeded (took 4 s), infra@b failed so deploy@b is skipped; three running."""
    return [
        run_started(),
        started(g, "infra@a", T + 1),
        started(g, "infra@b", T + 1),
        ended(g, "infra@a", T + 5, T + 1, "succeeded"),
        settled(g, "infra@a", T + 5, "succeeded"),
        started(g, "infra@c", T + 5),
        started(g, "deploy@a", T + 5.5),
        ended(g, "infra@b", T + 6, T + 1, "failed", 3, tail=("boom",)),
        settled(g, "infra@b", T + 6, "failed"),
        settled(g, "deploy@b", T + 6, "skipped", "needs infra@b, which failed", 0),
        started(g, "infra@d", T + 6),
    ]


def fed(g: Graph, events: list[Event], parallelism: int | None = None) -> LiveConsole:
    live = LiveConsole(
        g, console=Console(file=io.StringIO(), width=100), parallelism=parallelism, only=None
    )
    for ev in events:
        live(ev)
    return live


def test_render_in_progress_exact() -> None:
    g = two_phases()
    state = fed(g, in_progress(g)).state
    # ETA: infra@a took 4 s, so infra takes 4 s; deploy, not measured yet, its
    # 20 s estimate times infra's 4 / 10: 8 s. infra@c and infra@d are past
    # 4 s (done at once), then deploy@c and deploy@d take 8 s; deploy@a has
    # 8 - 4.5 s left: 8 s.
    assert text_of(render(state, 100, 20, T + 10)) == (
        "run r1 · dag · -j unbounded · elapsed 10.0s · ETA ~8.0s (estimate)\n"
        "infrastructure ████████████████████░░░░░░░░░░░░░░░░░░░░ 1/4 done · 1 failed\n"
        "deploy         ██████████░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░ 0/4 done · 1 skipped\n"
        "pool api 2/2 in flight\n"
        "running 3\n"
        "  infra@c     5.0s\n"
        "  deploy@a    4.5s\n"
        "  infra@d     4.0s\n"
        "2 pending · 3 running · 1 succeeded · 1 failed · 1 skipped (of 8)\n"
    )


def test_running_rows_capped_to_height_with_and_more() -> None:
    g = two_phases()
    state = fed(g, in_progress(g)).state
    counts = "2 pending · 3 running · 1 succeeded · 1 failed · 1 skipped (of 8)"
    # Four lines above (run, two phases, a pool), the counts below.
    for height, rows in (
        (9, ["  infra@c     5.0s", "  deploy@a    4.5s", "  infra@d     4.0s"]),
        (8, ["  infra@c    5.0s", "  and 2 more"]),  # keys as wide as the widest shown
        (7, ["  and 3 more"]),
        (6, []),  # no room for a row: the title alone says how many run
    ):
        out = text_of(render(state, 100, height, T + 10)).splitlines()
        assert out[4:] == ["running 3", *rows, counts], height
        assert len(out) == height


def test_an_adaptive_concurrency_shows_in_force_and_no_rate_when_the_pool_has_none() -> None:
    """A pool with a concurrency and no rate: its changes carry rate 0, which
    is no rate (never "rate 0/s"); the slots shown are the concurrency in
    force, with the configured one beside it while it is lower."""
    g = graph(
        [task("t", "true", targets=["x", "y"], pools=["api"], estimate=5)],
        pools=[Pool("api", concurrency=4, adaptive=True)],
    )
    events = [
        run_started(nodes=2),
        started(g, "t@x", T),
        PoolChanged(at=T + 1, pool="api", rate=0.0, concurrency=1, reason="throttled"),
    ]
    out = text_of(render(fed(g, events).state, 100, 20, T + 2)).splitlines()
    assert out[2] == "pool api 1/1 in flight of 4"
    events.append(PoolChanged(at=T + 2, pool="api", rate=0.0, concurrency=4, reason="probing"))
    out = text_of(render(fed(g, events).state, 100, 20, T + 3)).splitlines()
    assert out[2] == "pool api 1/4 in flight"


def test_pool_rate_and_retry_attempt_shown() -> None:
    g = graph(
        [task("t", "true", targets=["x", "y"], pools=["api"], estimate=5)],
        pools=[Pool("api", concurrency=4, rate=10.0, adaptive=True)],
    )
    events = [
        run_started(nodes=2),
        started(g, "t@x", T),
        ended(g, "t@x", T + 1, T, "retrying", 75, retry_reason="exit 75", retry_delay=0.5),
        PoolChanged(at=T + 1, pool="api", rate=2.5, reason="throttled"),
        started(g, "t@x", T + 2, attempt=2),
    ]
    out = text_of(render(fed(g, events).state, 100, 20, T + 3)).splitlines()
    assert out[1] == "(no phase) ░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░ 0/2 done"
    assert out[2] == "pool api 1/4 in flight · rate 2.5/s of 10/s"
    assert out[4] == "  t@x    1.0s  (attempt 2)"
    assert out[-1] == "1 pending · 1 running (of 2)"


@pytest.mark.parametrize(
    ("events_at", "parallelism", "expected"),
    [
        # A chain a(10 s) -> b(20 s), a running for 4 s: 6 + 20.
        ("chain", None, "ETA ~26.0s (estimate)"),
        # Four independent 10 s tasks at -j 1, one running for 4 s: work 36 s / 1.
        ("fan", 1, "ETA ~36.0s (estimate)"),
        # The same at -j 4: the critical path (10 s, pending) wins over 36 / 4.
        ("fan", 4, "ETA ~10.0s (estimate)"),
        # Pool of 2 slots, four 10 s tasks, one running for 4 s: f@b runs 0-10 s
        # in the free slot, f@c 6-16 s once f@a ends, f@d 10-20 s: 20 s.
        ("pool", None, "ETA ~20.0s (estimate)"),
        # Pool rate 0.1/s and three starts to go: 30 s.
        ("rate", None, "ETA ~30.0s (estimate)"),
        # The first x took 20 s against an estimate of 10: pending x count 20 s each.
        ("measured", None, "ETA ~20.0s (estimate)"),
        # The last task (10 s) runs for 30 s: past every estimate.
        ("overdue", None, "ETA overdue (running longer than estimated)"),
        # No estimates in the plan and nothing finished: no basis for an ETA.
        ("unestimated", None, "ETA unknown until an instance finishes"),
    ],
)
def test_eta(events_at: str, parallelism: int | None, expected: str) -> None:
    if events_at == "chain":
        g = graph([task("a", "true", estimate=10), task("b", "true", needs=["a"], estimate=20)])
        events: list[Event] = [run_started(nodes=2), started(g, "a", T)]
    elif events_at == "fan":
        g = graph([task("f", "true", targets=TARGETS, estimate=10)])
        events = [run_started(nodes=4), started(g, "f@a", T)]
    elif events_at == "overdue":
        g = graph([task("a", "true", estimate=10)])
        events = [run_started(nodes=1), started(g, "a", T - 26)]
    elif events_at in ("pool", "rate"):
        pool = Pool("api", concurrency=2) if events_at == "pool" else Pool("api", rate=0.1)
        g = graph([task("f", "true", targets=TARGETS, estimate=10, pools=["api"])], pools=[pool])
        events = [run_started(nodes=4), started(g, "f@a", T)]
    elif events_at == "measured":
        g = graph([task("x", "true", targets=["p", "q"], estimate=10)])
        events = [
            run_started(nodes=2),
            started(g, "x@p", T - 16),
            ended(g, "x@p", T + 4, T - 16, "succeeded"),
            settled(g, "x@p", T + 4, "succeeded"),
        ]
    else:
        g = graph([task("u", "true", targets=TARGETS)])
        events = [run_started(nodes=4), started(g, "u@a", T)]
    head = text_of(render(fed(g, events, parallelism).state, 100, 20, T + 4)).splitlines()[0]
    assert head.endswith(" · " + expected), head


def test_render_finished_exact() -> None:
    g = two_phases()
    events = in_progress(g)
    for key, start, at in (("infra@c", 5, 8), ("deploy@a", 5.5, 9), ("infra@d", 6, 9)):
        events += [ended(g, key, T + at, T + start, "succeeded")]
        events += [settled(g, key, T + at, "succeeded")]
    for key in ("deploy@c", "deploy@d"):
        events += [started(g, key, T + 9), ended(g, key, T + 11, T + 9, "succeeded")]
        events += [settled(g, key, T + 11, "succeeded")]
    counts = {"succeeded": 6, "failed": 1, "skipped": 1}
    events.append(RunEnded(at=T + 12, run_id="r1", status="failed", counts=counts))
    live = fed(g, events)
    out = text_of(render(live.state, 100, 20, T + 99)).splitlines()
    assert out == [
        "run r1 · dag · -j unbounded · failed after 12.0s",
        "infrastructure " + "█" * 40 + " 3/4 done · 1 failed",
        "deploy         " + "█" * 40 + " 3/4 done · 1 skipped",
        "pool api 0/2 in flight",
        "6 succeeded · 1 failed · 1 skipped (of 8)",
    ]
    # The summary is PlainConsole's, from the summed attempt times, less the
    # counts line the last picture already shows (printed once, not twice).
    assert live.task_time == pytest.approx(4 + 5 + 3 + 3.5 + 3 + 2 + 2)
    result = RunResult(
        run_id="r1",
        status="failed",
        states={i: "succeeded" for i in range(6)} | {6: "failed", 7: "skipped"},
        outputs={},
        started_at=T,
        ended_at=T + 12,
    )
    assert live.summary(result, g) == "wall time 12.0s, task time 22.5s, speedup 1.9x"


def test_retry_selection_counts_only_members_and_reused() -> None:
    g = two_phases()
    only = frozenset({g.index["deploy@b"]})
    state = LiveState(g, parallelism=None, only=only)
    state.instance_settled(g.index["infra@b"], "reused")
    out = text_of(render(state, 100, 20, T)).splitlines()
    assert out[1].endswith(" 1/1 done")
    assert out[2].endswith(" 0/1 done")
    assert out[-1] == "1 pending · 1 reused (of 2)"


def test_event_lines_match_plain_console(utc: None) -> None:
    g = graph(
        [
            task("ok", "true", targets=["x"]),
            task("bad", "true", targets=["x"]),
            task("dep", "true", targets=["x"], needs=["bad"]),
        ]
    )
    events: list[Event] = [
        run_started(nodes=3),
        started(g, "ok@x", T + 1),
        started(g, "bad@x", T + 1),
        ended(g, "ok@x", T + 2.5, T + 1, "succeeded"),
        ended(g, "bad@x", T + 3, T + 1, "retrying", 75, retry_reason="exit 75", retry_delay=1.25),
        started(g, "bad@x", T + 4, attempt=2),
        AttemptEnded(
            at=T + 6,
            node=g.index["bad@x"],
            key="bad@x",
            attempt=2,
            started_at=T + 4,
            exit_code=4,
            signal=None,
            timed_out=False,
            outcome="failed",
            tail=("one", "two"),
        ),
        settled(g, "dep@x", T + 6, "skipped", "needs bad@x, which failed", 0),
        PoolChanged(at=T + 7, pool="api", rate=0.5, reason="throttled"),
        RunEnded(at=T + 8, run_id="r1", status="failed", counts={}),
    ]
    out = io.StringIO()
    plain = PlainConsole(out)
    mine: list[str] = []
    starts: dict[tuple[int, int], float] = {}
    for ev in events:
        plain(ev)
        took = 0.0
        if isinstance(ev, AttemptStarted):
            starts[(ev.node, ev.attempt)] = ev.at
        elif isinstance(ev, AttemptEnded):
            took = ev.at - starts.pop((ev.node, ev.attempt))
        lines = event_text(ev, took=took)
        if lines:
            mine += [f"{stamp(ev.at)} {lines[0]}", *lines[1:]]
    assert out.getvalue().splitlines() == mine
    assert mine[6:9] == [
        "22:13:26 failed     bad@x (exit 4) after 2.0s",
        "           | one",
        "           | two",
    ]


def test_lines_above_the_live_area(utc: None) -> None:
    g = graph([task("base", "true", targets=TARGETS), task("top", "true", targets=TARGETS)])
    out = io.StringIO()
    con = Console(file=out, width=100, height=20, force_terminal=True, color_system=None)
    live = LiveConsole(g, console=con, only=frozenset(g.index[f"top@{t}"] for t in TARGETS))
    live.start()
    live(run_started(nodes=4))
    for t in TARGETS:
        live(InstanceReused(at=T + 0.5, node=g.index[f"base@{t}"], key=f"base@{t}"))
    live(started(g, "top@a", T + 1))
    live(ended(g, "top@a", T + 2, T + 1, "failed", 9, tail=("why", "it failed")))
    live(settled(g, "top@a", T + 2, "failed"))
    live.write_text("task output\x1b[5;5H moved\nsecond line\n")
    assert "task output" not in out.getvalue()  # queued until the next redraw
    live.refresh()
    live.stop()
    text = out.getvalue()
    expected = [
        "22:13:20 reused     4 instance(s) that succeeded before: "
        "base@a, base@b, base@c and 1 more",
        "22:13:22 failed     top@a (exit 9) after 1.0s",
        "           | why",
        "           | it failed",
        "task output moved",
        "second line",
    ]
    at = [text.index(line) for line in expected]
    assert at == sorted(at)
    assert "\x1b[5;5H" not in text  # a task's cursor movement never reaches the screen
    # Starts and successes are shown live, not as lines.
    assert "started" not in text
    assert "succeeded  " not in text
    assert live.refreshes == 2  # start, and the one asked for


def test_write_text_without_live_display_prints_at_once() -> None:
    g = graph([task("t", "true")])
    out = io.StringIO()
    live = LiveConsole(g, console=Console(file=out, width=80, color_system=None))
    live.write_text("hello\n")
    assert out.getvalue() == "hello\n"


async def _run(g: Graph, run_dir: Path, subscribers: list[object]) -> RunResult:
    opts = RunOptions(run_id="live-run", run_dir=run_dir, grace=2.0)
    return await run_graph(g, opts, LocalExecutor(), subscribers)  # type: ignore[arg-type]


def test_real_run_bounded_refreshes(tmp_path: Path, utc: None) -> None:
    burst = 2000
    py = sys.executable
    g = graph(
        [
            task("ok", f"{py} -c 'import time; time.sleep(0.4)'", targets=["x", "y"]),
            task("bad", "echo first; echo 'last words'; exit 4"),
            task("dep", "true", targets=[f"t{i}" for i in range(burst)], needs=["bad"]),
            task("flaky", "exit 75", retry=RetryPolicy(attempts=2, backoff=0.01)),
        ],
        base_dir=tmp_path,
    )
    out = io.StringIO()
    con = Console(file=out, width=100, height=30, force_terminal=True, color_system=None)
    rate = 20.0
    live = LiveConsole(g, console=con, parallelism=None, refresh_per_second=rate)
    events: list[Event] = []
    began = time.monotonic()
    live.start()
    try:
        result = asyncio.run(_run(g, tmp_path / "run", [events.append, live]))
    finally:
        live.stop()
    elapsed = time.monotonic() - began
    assert result.counts == {"succeeded": 2, "failed": 2, "skipped": burst}
    assert len(events) > burst
    # Redraws: one at start, one per tick, one at the end; never one per event.
    assert 3 <= live.refreshes <= elapsed * rate + 2, (live.refreshes, elapsed)
    text = out.getvalue()
    assert "failed     bad (exit 4) after " in text
    assert "           | last words" in text
    assert "retrying   flaky in " in text
    # The burst of skips for one failure is one line, not one per instance.
    assert "skipped    dep@t" not in text
    assert text.count(f"skipped    {burst} instance(s) (dep@t") == 1
    assert text.count("more): needs bad, which failed") == 1
    # The last picture stays on screen with the final counts.
    assert f"2 succeeded · 2 failed · {burst} skipped (of {burst + 4})" in text
    assert " · failed after " in text
    assert live.summary(result, g).startswith("wall time ")
    assert f"{burst} skipped (of" not in live.summary(result, g)
    assert live.task_time >= 0.8  # two 0.4 s sleeps at least


def test_use_live_truth_table() -> None:
    master, slave = os.openpty()
    try:
        with os.fdopen(slave, "w", closefd=False) as tty:
            term = {"TERM": "xterm-256color"}
            assert use_live(tty, plain=False, environ=term) is True
            assert use_live(tty, plain=False, environ={}) is True
            assert use_live(tty, plain=True, environ=term) is False
            assert use_live(tty, plain=False, environ={**term, "CI": "true"}) is False
            assert use_live(tty, plain=False, environ={**term, "CI": ""}) is True
            assert use_live(tty, plain=False, environ={**term, "NO_COLOR": "1"}) is False
            assert use_live(tty, plain=False, environ={**term, "NO_COLOR": ""}) is False
            assert use_live(tty, plain=False, environ={"TERM": "dumb"}) is False
        assert use_live(io.StringIO(), plain=False, environ=term) is False
        closed = io.StringIO()
        closed.close()
        assert use_live(closed, plain=False, environ=term) is False
    finally:
        os.close(master)
        os.close(slave)


def test_sequential_run_and_interrupted_end() -> None:
    g = graph([task("a", "true", estimate=10), task("b", "true", estimate=10)])
    events: list[Event] = [
        RunStarted(at=T, run_id="r2", plan_name="p", mode="sequential", parallelism=None, nodes=2),
        started(g, "a", T),
    ]
    live = fed(g, events, parallelism=None)
    # Sequential runs one at a time: the two tasks' work (6 + 10 s) bounds the ETA.
    assert text_of(render(live.state, 100, 20, T + 4)).splitlines()[0] == (
        "run r2 · sequential · -j 1 · elapsed 4.0s · ETA ~16.0s (estimate)"
    )
    live(ended(g, "a", T + 5, T, "cancelled", code=-15))
    live(settled(g, "a", T + 5, "cancelled"))
    live(settled(g, "b", T + 5, "not_started", "interrupted", 0))
    live(RunEnded(at=T + 5, run_id="r2", status="interrupted", counts={}))
    assert text_of(render(live.state, 100, 20, T + 9)).splitlines() == [
        "run r2 · sequential · -j 1 · interrupted after 5.0s",
        "(no phase) " + "█" * 20 + "█" * 20 + " 0/2 done · 1 failed · 1 skipped",
        "1 cancelled · 1 not started (of 2)",
    ]


def test_context_manager_draws_and_leaves_the_last_picture() -> None:
    g = graph([task("a", "true")])
    out = io.StringIO()
    con = Console(file=out, width=80, height=10, force_terminal=True, color_system=None)
    with LiveConsole(g, console=con) as live:
        live(run_started(nodes=1))
        live(started(g, "a", T))
        live(ended(g, "a", T + 1, T, "succeeded"))
        live(settled(g, "a", T + 1, "succeeded"))
        live(RunEnded(at=T + 1, run_id="r1", status="succeeded", counts={"succeeded": 1}))
    assert live.refreshes == 2  # start, and the end of the run
    text = out.getvalue()
    assert text.endswith("1 succeeded (of 1)\n\x1b[?25h")  # then the cursor is shown again
    assert "run r1 · dag · -j unbounded · succeeded after 1.0s" in text


def test_a_halted_rollout_is_one_skipped_line_above_the_live_area(utc: None) -> None:
    targets = [f"t{i}" for i in range(46)]
    g = graph([task("deploy", "true", targets=targets)])
    out = io.StringIO()
    con = Console(file=out, width=200, height=20, force_terminal=True, color_system=None)
    live = LiveConsole(g, console=con)
    live.start()
    live(run_started(nodes=46))
    why = "rollout halted: wave 1 had 2 failed target(s), more than max_failed (0)"
    live(WaveChanged(at=T + 1, wave=2, waves=3, state="halted", targets=("t2",), reason=why))
    for t in targets[2:]:
        live(settled(g, f"deploy@{t}", T + 1, "skipped", why, 0))
    live(RunEnded(at=T + 2, run_id="r1", status="failed", counts={}))
    live.stop()
    text = out.getvalue()
    assert "skipped    deploy@" not in text
    assert text.count(f"22:13:21 skipped    44 instance(s) of waves 2-3: {why}") == 1
    assert "44 skipped" in text  # the live counters still count each instance
