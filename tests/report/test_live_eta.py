"""The live view's ETA in ``phased`` mode: the phases add up, one barrier after another.

Each case is fed the same events as a ``phased`` and as a ``dag`` run; the
``dag`` numbers are the ones the ETA gave before phases were modelled.
"""

from __future__ import annotations

import asyncio
import io
import sys
from pathlib import Path

import pytest
from rich.console import Console

from fleetrun.engine import (
    AttemptEnded,
    AttemptStarted,
    Event,
    RunOptions,
    RunResult,
    RunStarted,
    run_graph,
)
from fleetrun.engine.testing import graph, task
from fleetrun.executors import LocalExecutor
from fleetrun.plan import Graph, Pool
from fleetrun.report._live import LiveConsole
from fleetrun.report._live_render import LiveState, render

from .test_live import TARGETS, T, ended, settled, started, text_of


def three_phases() -> Graph:
    """build: a chain a -> b -> c (10 s each); deploy: w (20 s) on four targets;
    verify: v (5 s, needs w on its target) on four targets in pool api of 1."""
    return graph(
        [
            task("a", "true", phase="build", estimate=10),
            task("b", "true", phase="build", needs=["a"], estimate=10),
            task("c", "true", phase="build", needs=["b"], estimate=10),
            task("w", "true", phase="deploy", targets=TARGETS, estimate=20),
            task(
                "v", "true", phase="verify", targets=TARGETS, needs=["w"], pools=["api"], estimate=5
            ),
        ],
        pools=[Pool("api", concurrency=1)],
        phases=["build", "deploy", "verify"],
    )


def begin(mode: str, parallelism: int | None = None, nodes: int = 11) -> RunStarted:
    return RunStarted(
        at=T, run_id="r1", plan_name="p", mode=mode, parallelism=parallelism, nodes=nodes
    )  # type: ignore[arg-type]


def live_for(g: Graph, mode: str, events: list[Event], parallelism: int | None) -> LiveConsole:
    live = LiveConsole(g, console=Console(file=io.StringIO(), width=100))
    for ev in [begin(mode, parallelism, len(g.nodes)), *events]:
        live(ev)
    return live


def eta(g: Graph, mode: str, events: list[Event], now: float, j: int | None = None) -> float:
    value = live_for(g, mode, events, j).state.estimate_remaining(now)
    assert value is not None
    return value


def build_running(g: Graph) -> list[Event]:
    """a took 5 s (half its estimate), b runs since T + 5."""
    return [
        started(g, "a", T),
        ended(g, "a", T + 5, T, "succeeded"),
        settled(g, "a", T + 5, "succeeded"),
        started(g, "b", T + 5),
    ]


def deploy_running(g: Graph) -> list[Event]:
    """The build phase took 5 s a step; in deploy, w@a failed (v@a skipped), w@b took
    16 s, w@c runs since T + 20 and w@d since T + 31."""
    return [
        *build_running(g),
        ended(g, "b", T + 10, T + 5, "succeeded"),
        settled(g, "b", T + 10, "succeeded"),
        started(g, "c", T + 10),
        ended(g, "c", T + 15, T + 10, "succeeded"),
        settled(g, "c", T + 15, "succeeded"),
        started(g, "w@a", T + 15),
        started(g, "w@b", T + 15),
        ended(g, "w@a", T + 20, T + 15, "failed", 1),
        settled(g, "w@a", T + 20, "failed"),
        settled(g, "v@a", T + 20, "skipped", "needs w@a, which failed", 0),
        started(g, "w@c", T + 20),
        ended(g, "w@b", T + 31, T + 15, "succeeded"),
        settled(g, "w@b", T + 31, "succeeded"),
        started(g, "w@d", T + 31),
    ]


@pytest.mark.parametrize(("j", "dag"), [(None, 30.0), (4, 32.5)])
def test_phases_add_up_where_dag_takes_the_largest(j: int | None, dag: float) -> None:
    g = three_phases()
    # dag: the chain (30 s) or, at -j 4, all the work (130 s) / 4.
    assert eta(g, "dag", [], T, j) == dag
    # phased: build's chain 30 s, then deploy's 20 s (four at once: -j 4 is
    # enough), then verify's pool of one slot: 4 x 5 s. The in-phase path of w
    # is 20 s (v, in the next phase, does not count), so 30 + 20 + 20.
    assert eta(g, "phased", [], T, j) == 70.0


def test_phased_partway_through_the_first_phase() -> None:
    g = three_phases()
    events = build_running(g)
    # Every factor is 0.5 (a took 5 s of 10; the rest take the overall factor).
    # build: b has 5 - 2 = 3 s left, then c 5 s: path 8 (work 8 / 4 = 2).
    # deploy: path 20 * 0.5 = 10, work 4 * 10 / 4 = 10. verify: pool api of one
    # slot takes 4 * 2.5 = 10. Total 28; dag only sees the longest of them
    # (all the work, 58 s / 4 = 14.5).
    assert eta(g, "dag", events, T + 7, 4) == 14.5
    assert eta(g, "phased", events, T + 7, 4) == 28.0


def test_phased_partway_through_a_later_phase() -> None:
    g = three_phases()
    events = deploy_running(g)
    # Factors: w 16 / 20 = 0.8; overall 31 / 50 = 0.62 (v, not measured yet).
    # deploy: w@d has 16 - 2 = 14 s left, w@c 16 - 13 = 3 s: path 14 (work 17 / 4).
    # verify: three v left (v@a was skipped), 5 * 0.62 = 3.1 s each through one
    # slot: 9.3 s. build is settled: 0. dag: w@d's 14 s then v's 3.1 s.
    assert eta(g, "dag", events, T + 33, 4) == pytest.approx(17.1)
    assert eta(g, "phased", events, T + 33, 4) == pytest.approx(14 + 9.3)
    # Past w@d's estimate the deploy phase still holds verify back: 0 + 9.3.
    assert eta(g, "phased", events, T + 60, 4) == pytest.approx(9.3)


def test_built_at_the_first_estimate_then_kept_up_by_events() -> None:
    g = three_phases()
    events = deploy_running(g)
    live = live_for(g, "phased", [], 4)
    state = live.state
    # Estimated after every event (the phase counters exist from the first one
    # on and follow the events) or only at the end (built from the counters then):
    # the same value, and the per-node phase data is built once.
    seen = []
    for ev in events:
        live(ev)
        assert state.estimate_remaining(ev.at) is not None
        seen.append(state._phases)
    assert all(p is seen[0] for p in seen)
    late = live_for(g, "phased", events, 4).state
    assert state.estimate_remaining(T + 33) == late.estimate_remaining(T + 33)
    assert late.estimate_remaining(T + 33) == pytest.approx(23.3)


def test_a_retry_in_backoff_counts_its_whole_estimate_in_its_phase() -> None:
    g = three_phases()
    events = [
        started(g, "a", T),
        ended(g, "a", T + 4, T, "retrying", 75, retry_reason="exit 75", retry_delay=1.0),
    ]
    # Nothing succeeded yet: estimates as given. a starts over: 30 + 20 + 20.
    assert eta(g, "phased", events, T + 4.5, 4) == 70.0
    events.append(started(g, "a", T + 5, attempt=2))
    assert eta(g, "phased", events, T + 7, 4) == 68.0
    assert eta(g, "dag", events, T + 7, 4) == 32.0  # (8 + 10 + 10 + 80 + 20) / 4


def test_phaseless_task_counts_in_the_phase_of_its_requirement() -> None:
    # z has no phase and needs x: phased mode runs it in p1, after x (25 s),
    # then y (30 s) in p2. dag: the longest path alone, y's 30 s.
    g = graph(
        [
            task("x", "true", phase="p1", estimate=10),
            task("y", "true", phase="p2", estimate=30),
            task("z", "true", needs=["x"], estimate=15),
        ],
        phases=["p1", "p2"],
    )
    assert eta(g, "dag", [], T) == 30.0
    assert eta(g, "phased", [], T) == 55.0


def test_only_the_runs_members_count() -> None:
    g = three_phases()
    # A retry of b, c and v@a: the in-phase path of b is b -> c (a is not run),
    # and verify holds one instance.
    only = frozenset(g.index[k] for k in ("b", "c", "v@a"))
    state = LiveState(g, parallelism=None, only=only)
    state.mode = "phased"
    assert state.estimate_remaining(T) == 20.0 + 5.0
    state.mode = "dag"
    assert state.estimate_remaining(T) == 20.0


def test_pool_rates_bound_each_phase() -> None:
    # One start every 2 s in both phases: 4 starts take 8 s a phase.
    g = graph(
        [
            task("x", "true", phase="p1", targets=TARGETS, pools=["slow"], estimate=1),
            task("y", "true", phase="p2", targets=TARGETS, pools=["slow"], estimate=1),
        ],
        pools=[Pool("slow", rate=0.5)],
        phases=["p1", "p2"],
    )
    assert eta(g, "phased", [], T) == 16.0
    assert eta(g, "dag", [], T) == 16.0
    events: list[Event] = [started(g, f"x@{t}", T + k) for k, t in enumerate(TARGETS)]
    # x all started (0.0 to 1.0 s left), y's 4 starts: 1 + 8.
    assert eta(g, "phased", events, T + 3) == 9.0
    assert eta(g, "dag", events, T + 3) == 8.0


@pytest.mark.parametrize(
    ("case", "j", "expected"),
    [
        ("chain", None, 26.0),  # a (10 s, 4 s run) -> b (20 s)
        ("fan", 1, 36.0),  # four 10 s, one 4 s in, -j 1
        ("fan", 4, 10.0),
        ("pool", None, 18.0),  # pool of 2: (30 + 6) / 2
        ("rate", None, 30.0),  # 3 starts at 0.1/s
    ],
)
def test_one_phase_is_the_same_as_dag(case: str, j: int | None, expected: float) -> None:
    if case == "chain":
        g = graph([task("a", "true", estimate=10), task("b", "true", needs=["a"], estimate=20)])
        events: list[Event] = [started(g, "a", T)]
    elif case == "fan":
        g = graph([task("f", "true", targets=TARGETS, estimate=10)])
        events = [started(g, "f@a", T)]
    else:
        pool = Pool("api", concurrency=2) if case == "pool" else Pool("api", rate=0.1)
        g = graph([task("f", "true", targets=TARGETS, estimate=10, pools=["api"])], pools=[pool])
        events = [started(g, "f@a", T)]
    assert eta(g, "dag", events, T + 4, j) == expected
    assert eta(g, "phased", events, T + 4, j) == expected


def test_sequential_is_the_remaining_work() -> None:
    g = three_phases()
    # -j 1 whatever the run was asked: all the work, as before.
    assert eta(g, "sequential", [], T, 8) == 130.0
    events = [started(g, "a", T)]
    assert eta(g, "sequential", events, T + 4, 8) == 126.0


def test_header_shows_the_phased_eta() -> None:
    g = three_phases()
    state = live_for(g, "phased", build_running(g), 4).state
    head = text_of(render(state, 100, 20, T + 7)).splitlines()[0]
    assert head == "run r1 · phased · -j 4 · elapsed 7.0s · ETA ~28.0s (estimate)"


def test_real_phased_run_counts_every_phase(tmp_path: Path) -> None:
    # p1: one 0.3 s step; p2: three 0.3 s steps side by side.
    sleep = f"{sys.executable} -c 'import time; time.sleep(0.3)'"
    g = graph(
        [
            task("first", sleep, phase="p1", estimate=0.3),
            task("then", sleep, phase="p2", targets=["x", "y", "z"], estimate=0.3),
        ],
        phases=["p1", "p2"],
        base_dir=tmp_path,
    )
    live = LiveConsole(g, console=Console(file=io.StringIO(), width=100))
    # The same events read as a dag run, for comparison.
    dag = LiveConsole(g, console=Console(file=io.StringIO(), width=100))
    seen: list[tuple[str, float | None, float | None]] = []
    took: list[float] = []
    began: dict[str, float] = {}

    def probe(ev: Event) -> None:
        dag(ev)
        dag.state.mode = "dag"
        if isinstance(ev, AttemptStarted):
            now = began[ev.key] = ev.at
            seen.append(
                (ev.key, live.state.estimate_remaining(now), dag.state.estimate_remaining(now))
            )
        elif isinstance(ev, AttemptEnded) and ev.key == "first":
            # As the live view measures it: from the start event to the end event.
            took.append(ev.at - began["first"])

    async def go() -> RunResult:
        opts = RunOptions(run_id="phased-eta", run_dir=tmp_path / "run", mode="phased")
        return await run_graph(g, opts, LocalExecutor(), [live, probe])

    result = asyncio.run(go())
    assert result.counts == {"succeeded": 4}
    assert seen[0][0] == "first"
    assert sorted(k for k, _, _ in seen[1:]) == ["then@x", "then@y", "then@z"]
    # At its start, both phases lie ahead: 0.3 s each; dag sees one step.
    assert seen[0][1:] == (pytest.approx(0.6), pytest.approx(0.3))
    assert all(p is not None and d is not None and p >= d for _, p, d in seen)
    # From p2 on, what first took calibrates the rest: one step of p2 is left
    # at each start (the one just started), as long as first took.
    assert len(took) == 1
    for _key, phased, dag_eta in seen[1:]:
        assert phased == pytest.approx(took[0], abs=1e-9)
        assert dag_eta == pytest.approx(took[0], abs=1e-9)
