"""PlainConsole at fixed inputs: the exact lines and the summary, with TZ pinned to UTC."""

from __future__ import annotations

import io

import pytest

from fleetrun.engine import (
    AttemptEnded,
    AttemptStarted,
    Event,
    InstanceReused,
    InstanceSettled,
    PoolChanged,
    RunEnded,
    RunResult,
    RunStarted,
    WaveChanged,
)
from fleetrun.engine.testing import graph, task
from fleetrun.plan import Graph
from fleetrun.report import PlainConsole

T = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


pytestmark = pytest.mark.usefixtures("utc")


def demo() -> Graph:
    return graph(
        [
            task("base", "true", targets=["a", "b", "c", "d"]),
            task("ok", "true", targets=["x"]),
            task("bad", "true", targets=["x"]),
            task("slow", "true", targets=["x"]),
            task("hung", "true", targets=["x"]),
            task("dep", "true", targets=["x"], needs=["bad"]),
        ]
    )


def start(g: Graph, key: str, at: float, attempt: int = 1) -> AttemptStarted:
    return AttemptStarted(
        at=at,
        node=g.index[key],
        key=key,
        attempt=attempt,
        command="true",
        pid=10,
        pgid=10,
        log_path="x.log",
    )


def end(g: Graph, key: str, at: float, start_at: float, **kw: object) -> AttemptEnded:
    fields: dict[str, object] = {
        "attempt": 1,
        "exit_code": 0,
        "signal": None,
        "timed_out": False,
        "outcome": "succeeded",
    }
    fields.update(kw)
    return AttemptEnded(at=at, node=g.index[key], key=key, started_at=start_at, **fields)  # type: ignore[arg-type]


def settle(g: Graph, key: str, at: float, state: str, reason: str = "", n: int = 1) -> Event:
    return InstanceSettled(
        at=at,
        node=g.index[key],
        key=key,
        state=state,  # type: ignore[arg-type]
        reason=reason,
        attempts=n,
    )


def lines_for(events: list[Event], tail_lines: int = 5) -> tuple[PlainConsole, list[str]]:
    out = io.StringIO()
    console = PlainConsole(out, tail_lines=tail_lines)
    for ev in events:
        console(ev)
    return console, out.getvalue().splitlines()


def test_every_kind_of_line_exactly() -> None:
    g = demo()
    tail = tuple(f"log line {k}" for k in range(1, 8))
    events: list[Event] = [
        RunStarted(at=T, run_id="r1", plan_name="demo", mode="dag", parallelism=4, nodes=5),
        *[InstanceReused(at=T + 0.5, node=g.index[f"base@{t}"], key=f"base@{t}") for t in "abcd"],
        start(g, "ok@x", T + 1),
        start(g, "bad@x", T + 1),
        end(g, "ok@x", T + 3, T + 1),
        settle(g, "ok@x", T + 3, "succeeded"),
        end(
            g,
            "bad@x",
            T + 2,
            T + 1,
            exit_code=75,
            outcome="retrying",
            retry_reason="exit 75",
            retry_delay=1.5,
        ),
        start(g, "bad@x", T + 4, attempt=2),
        end(g, "bad@x", T + 66, T + 4, attempt=2, exit_code=4, outcome="failed", tail=tail),
        settle(g, "bad@x", T + 66, "failed", n=2),
        settle(g, "dep@x", T + 66, "skipped", "needs bad@x, which failed", 0),
        start(g, "slow@x", T + 70),
        end(g, "slow@x", T + 3670, T + 70, exit_code=None, signal=9, outcome="failed"),
        start(g, "hung@x", T + 70),
        end(
            g,
            "hung@x",
            T + 100,
            T + 70,
            exit_code=None,
            signal=15,
            timed_out=True,
            outcome="failed",
        ),
        PoolChanged(at=T + 101, pool="api", rate=2.5, reason="throttled: exit 75"),
        RunEnded(at=T + 3700, run_id="r1", status="failed", counts={}),
    ]
    console, lines = lines_for(events)
    assert lines == [
        "22:13:20 run r1: 5 instance(s), mode dag, -j 4",
        "22:13:20 reused     4 instance(s) that succeeded before: "
        "base@a, base@b, base@c and 1 more",
        "22:13:21 started    ok@x",
        "22:13:21 started    bad@x",
        "22:13:23 succeeded  ok@x in 2.0s",
        "22:13:22 retrying   bad@x in 1.5s (exit 75)",
        "22:13:24 started    bad@x (attempt 2)",
        "22:14:26 failed     bad@x (exit 4) after 1m02s",
        "           | log line 3",
        "           | log line 4",
        "           | log line 5",
        "           | log line 6",
        "           | log line 7",
        "22:14:26 skipped    dep@x: needs bad@x, which failed",
        "22:14:30 started    slow@x",
        "23:14:30 failed     slow@x (killed by signal 9 (SIGKILL)) after 1h00m",
        "22:14:30 started    hung@x",
        "22:15:00 failed     hung@x (timed out) after 30.0s",
        "22:15:01 pool       api: rate 2.5/s (throttled: exit 75)",
        "23:15:00 run r1 failed",
    ]
    # Attempt times summed: 2 + 1 + 62 + 3600 + 30.
    assert console.task_time == pytest.approx(3695.0)


def test_cancelled_and_never_started_failures() -> None:
    g = demo()
    events: list[Event] = [
        start(g, "ok@x", T),
        end(g, "ok@x", T + 1, T, exit_code=None, signal=15, outcome="cancelled"),
        settle(g, "ok@x", T + 1, "cancelled"),
        settle(g, "bad@x", T + 1, "failed", "could not start: no such file", 0),
        settle(g, "dep@x", T + 1, "not_started", "interrupted", 0),
    ]
    _, lines = lines_for(events)
    assert lines == [
        "22:13:20 started    ok@x",
        "22:13:21 cancelled  ok@x",
        "22:13:21 failed     bad@x: could not start: no such file",
    ]


def test_tail_lines_setting_and_few_reused() -> None:
    g = demo()
    events: list[Event] = [
        InstanceReused(at=T, node=g.index["base@a"], key="base@a"),
        InstanceReused(at=T, node=g.index["base@b"], key="base@b"),
        start(g, "bad@x", T + 1),
        end(g, "bad@x", T + 1.25, T + 1, exit_code=1, outcome="failed", tail=("a", "b", "c")),
    ]
    _, lines = lines_for(events, tail_lines=2)
    assert lines == [
        "22:13:20 reused     2 instance(s) that succeeded before: base@a, base@b",
        "22:13:21 started    bad@x",
        "22:13:21 failed     bad@x (exit 1) after 0.2s",
        "           | b",
        "           | c",
    ]


@pytest.mark.parametrize(
    ("states", "wall", "task_time", "expected"),
    [
        (
            {0: "succeeded", 1: "succeeded", 2: "failed", 3: "skipped", 4: "reused"},
            12.0,
            30.0,
            "2 succeeded, 1 reused, 1 failed, 1 skipped (of 9)\n"
            "wall time 12.0s, task time 30.0s, speedup 2.5x",
        ),
        (
            {0: "succeeded", 1: "not_started", 2: "cancelled"},
            125.0,
            250.0,
            "1 succeeded, 1 cancelled, 1 not started (of 9)\n"
            "wall time 2m05s, task time 4m10s, speedup 2.0x",
        ),
        (
            {},
            0.0,
            0.0,
            "nothing to do (of 9)\nwall time 0.0s, task time 0.0s, speedup too short to measure",
        ),
        # Under a second of wall or of task time: start-up dominates, no ratio is shown.
        (
            {0: "succeeded"},
            0.2,
            0.04,
            "1 succeeded (of 9)\nwall time 0.2s, task time 0.0s, speedup too short to measure",
        ),
        (
            {0: "succeeded"},
            0.9,
            3.0,
            "1 succeeded (of 9)\nwall time 0.9s, task time 3.0s, speedup too short to measure",
        ),
        (
            {0: "succeeded"},
            4.0,
            0.5,
            "1 succeeded (of 9)\nwall time 4.0s, task time 0.5s, speedup too short to measure",
        ),
        # A second of each is measured.
        (
            {0: "succeeded"},
            1.0,
            1.0,
            "1 succeeded (of 9)\nwall time 1.0s, task time 1.0s, speedup 1.0x",
        ),
    ],
)
def test_summary(states: dict[int, str], wall: float, task_time: float, expected: str) -> None:
    g = demo()
    console = PlainConsole(io.StringIO())
    console.task_time = task_time
    result = RunResult(
        run_id="r1", status="failed", states=states, outputs={}, started_at=T, ended_at=T + wall
    )
    assert console.summary(result, g) == expected


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("eu-\u202eevil", "eu-\\u202eevil"),  # a right-to-left override reads as "live"
        ("a\u2066b\u2069", "a\\u2066b\\u2069"),  # bidi isolates
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("\ufeffbom", "\\ufeffbom"),
        ("ctl\x1b[31mred", "ctl\\x1b[31mred"),
        ("東京-ünïcødé", "東京-ünïcødé"),  # printable text is left alone
    ],
)
def test_printable_shows_invisible_and_control_characters(name: str, shown: str) -> None:
    from fleetrun.report import printable

    assert printable(name) == shown


def halted_rollout(g: Graph, later: list[str]) -> list[Event]:
    """The events of a rollout whose first wave failed: the halt, then a skip of
    every instance of the later waves (``later``: their keys), then the end."""
    why = "rollout halted: wave 1 had 1 failed target(s), more than max_failed (0)"
    return [
        WaveChanged(at=T + 1, wave=2, waves=3, state="halted", targets=("b",), reason=why),
        *[settle(g, k, T + 1, "skipped", why, 0) for k in later],
        RunEnded(at=T + 2, run_id="r1", status="failed", counts={}),
    ]


@pytest.mark.parametrize("n", [2, 46])
def test_a_halted_rollout_says_its_skips_in_one_line(n: int) -> None:
    g = graph([task("deploy", "true", targets=[f"t{i}" for i in range(n)])])
    keys = [f"deploy@t{i}" for i in range(n)]
    _, lines = lines_for(halted_rollout(g, keys))
    why = "rollout halted: wave 1 had 1 failed target(s), more than max_failed (0)"
    assert lines == [
        f"22:13:21 halted     rollout before wave 2/3 (1 target(s)): {why}",
        f"22:13:21 skipped    {n} instance(s) of waves 2-3: {why}",
        "22:13:22 run r1 failed",
    ]


def test_skips_for_one_failure_are_one_line_and_other_reasons_their_own() -> None:
    g = graph(
        [
            task("bad", "true"),
            task("dep", "true", targets=["a", "b", "c", "d", "e"], needs=["bad"]),
            task("other", "true"),
        ]
    )
    events: list[Event] = [
        *[settle(g, f"dep@{t}", T, "skipped", "needs bad, which failed", 0) for t in "abcde"],
        settle(g, "other", T + 1, "skipped", "needs x, which failed", 0),
        RunEnded(at=T + 2, run_id="r1", status="failed", counts={}),
    ]
    _, lines = lines_for(events)
    assert lines == [
        "22:13:20 skipped    5 instance(s) (dep@a, dep@b, dep@c and 2 more): "
        "needs bad, which failed",
        "22:13:21 skipped    other: needs x, which failed",
        "22:13:22 run r1 failed",
    ]


def test_a_phased_rollout_names_the_phase_of_each_wave() -> None:
    g = graph([task("deploy", "true", targets=["a", "b"])])
    why = "rollout halted: wave 1 had 1 failed target(s), more than max_failed (0)"
    events: list[Event] = [
        WaveChanged(
            at=T, wave=1, waves=2, state="open", targets=("a",), reason="first wave", phase="build"
        ),
        WaveChanged(
            at=T,
            wave=1,
            waves=2,
            state="open",
            targets=("a",),
            reason="phase deploy: first wave",
            phase="deploy",
        ),
        WaveChanged(
            at=T + 1, wave=2, waves=2, state="halted", targets=("b",), reason=why, phase="deploy"
        ),
        settle(g, "deploy@a", T + 1, "skipped", why, 0),
        settle(g, "deploy@b", T + 1, "skipped", why, 0),
        WaveChanged(at=T + 1, wave=2, waves=2, state="open", targets=("b",), reason="x"),
    ]
    _, lines = lines_for(events)
    assert lines == [
        "22:13:20 opened     phase build, wave 1/2 (1 target(s))",
        "22:13:20 opened     phase deploy, wave 1/2 (1 target(s))",
        f"22:13:21 halted     rollout before phase deploy, wave 2/2 (1 target(s)): {why}",
        f"22:13:21 skipped    2 instance(s) of phase deploy, wave 2: {why}",
        "22:13:21 opened     wave 2/2 (1 target(s))",  # no phases: as before
    ]


def test_a_pause_extended_by_each_throttle_in_flight_is_one_line() -> None:
    """Each request in flight when the provider throttles comes back throttled
    and extends the pool's Retry-After pause (one event each, for the record
    and the charts): the console says the pause once, then its end."""
    out = io.StringIO()
    console = PlainConsole(out)
    said = "paused 1s for Retry-After"
    console(PoolChanged(at=T, pool="api", rate=200.0, reason=said, paused=1.0))
    console(PoolChanged(at=T, pool="api", rate=100.0, reason="throttled (after 0.1s)"))
    for k in range(1, 12):
        console(PoolChanged(at=T + k / 100, pool="api", rate=100.0, reason=said, paused=1.0))
    console(PoolChanged(at=T, pool="db", rate=5.0, reason=said, paused=1.0))  # another pool
    resumed = "resumed: the Retry-After pause is over"
    console(PoolChanged(at=T + 1.11, pool="api", rate=100.0, reason=resumed))
    console(PoolChanged(at=T + 2.0, pool="api", rate=100.0, reason=said, paused=1.0))  # a new one
    lines = out.getvalue().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "pool       api: rate 200/s (paused 1s for Retry-After)",
        "pool       api: rate 100/s (throttled (after 0.1s))",
        "pool       db: rate 5/s (paused 1s for Retry-After)",
        f"pool       api: rate 100/s ({resumed})",
        "pool       api: rate 100/s (paused 1s for Retry-After)",
    ]
