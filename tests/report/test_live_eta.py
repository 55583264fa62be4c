"""The live view's ETA: ``fleetrun plan``'s simulation run on what remains of the run.

Phases add up (one barrier after another), rollout waves follow each other,
running instances count their elapsed time, measured durations replace the
estimates (and scale those of the tasks not measured yet), and a throttled
pool's rate in effect slows what is left.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
from pathlib import Path

import pytest
from rich.console import Console

from fleetrun.engine import (
    AttemptStarted,
    Event,
    PoolChanged,
    RunOptions,
    RunResult,
    RunStarted,
    WaveChanged,
    run_graph,
)
from fleetrun.engine.testing import graph, plan, task
from fleetrun.executors import LocalExecutor
from fleetrun.plan import AdaptiveSettings, Graph, Pool, Rollout, expand
from fleetrun.report._live import LiveConsole
from fleetrun.report._live_eta import ETA_EVERY
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
    )


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


@pytest.mark.parametrize("j", [None, 4])
def test_phases_add_up_where_dag_overlaps_them(j: int | None) -> None:
    g = three_phases()
    # phased: build's chain 30 s, then deploy's 20 s (four at once), then
    # verify's pool of one slot: 4 x 5 s. dag: each v follows its w (20 s)
    # through the one slot: 20 + 4 x 5 = 40 s, the chain (30 s) beside them.
    assert eta(g, "phased", [], T, j) == 70.0
    assert eta(g, "dag", [], T, j) == 40.0


def test_partway_through_the_first_phase() -> None:
    g = three_phases()
    events = build_running(g)
    # a took 5 s, half its estimate: the tasks not measured yet take half of
    # theirs. phased: b has 3 s left, then c: 8 s; then w 10 s and 4 x 2.5 s.
    assert eta(g, "phased", events, T + 7, 4) == 28.0
    # dag at -j 4: w@a..c run 0-10 s beside b; when b ends, w@d (longer path
    # ahead) takes its slot (3-13 s) and c waits for one (10-15 s); the one api
    # slot runs v@a..c from 10 s and v@d after them: 17.5-20 s.
    assert eta(g, "dag", events, T + 7, 4) == 20.0


def test_partway_through_a_later_phase() -> None:
    g = three_phases()
    events = deploy_running(g)
    # w took 16 s (w@a failed: not a measure). deploy: w@c has 16 - 13 = 3 s
    # left, w@d 16 - 2 = 14 s. verify: three v left (v@a was skipped), each
    # its 5 s estimate times the median of a, b, c, w's measure / estimate
    # (0.5, 0.5, 0.5, 0.8): 2.5 s through one slot: 14 + 7.5. dag: v@b at
    # once, v@c after w@c (3 s), v@d after w@d: 14 + 2.5.
    assert eta(g, "phased", events, T + 33, 4) == 21.5
    assert eta(g, "dag", events, T + 33, 4) == 16.5
    # Past w@d's measure, deploy still holds verify back until it ends: 0 + 7.5.
    assert eta(g, "phased", events, T + 60, 4) == 7.5


def test_a_retry_in_backoff_runs_again_in_full() -> None:
    g = three_phases()
    events = [
        started(g, "a", T),
        ended(g, "a", T + 4, T, "retrying", 75, retry_reason="exit 75", retry_delay=1.0),
    ]
    assert eta(g, "phased", events, T + 4.5, 4) == 70.0
    events.append(started(g, "a", T + 5, attempt=2))
    assert eta(g, "phased", events, T + 7, 4) == 68.0


def test_only_the_runs_members_count() -> None:
    g = three_phases()
    # A retry of b, c and v@a: b -> c (20 s), then v@a (5 s) in the next phase.
    only = frozenset(g.index[k] for k in ("b", "c", "v@a"))
    state = LiveState(g, parallelism=None, only=only)
    state.mode = "phased"
    assert state.estimate_remaining(T) == 25.0
    state.mode = "dag"
    assert state.estimate_remaining(T) == 20.0


def test_sequential_is_the_remaining_work() -> None:
    g = three_phases()
    assert eta(g, "sequential", [], T, 8) == 130.0
    assert eta(g, "sequential", [started(g, "a", T)], T + 4, 8) == 126.0


def test_no_basis_until_an_instance_finishes() -> None:
    # u has no estimate: nothing to go by until an instance of some task succeeded.
    g = graph([task("e", "true", estimate=3), task("u", "true", targets=TARGETS)])
    events: list[Event] = [started(g, "e", T)]
    assert live_for(g, "dag", events, None).state.estimate_remaining(T + 1) is None
    events += [ended(g, "e", T + 2, T, "succeeded"), settled(g, "e", T + 2, "succeeded")]
    # Then u takes the mean of what succeeded: 2 s.
    assert eta(g, "dag", events, T + 2) == 2.0


def test_estimates_scale_with_the_median_measure() -> None:
    # x took 1 s of its 10 s estimate, y 6 s of 10 s, z 2 s of 10 s: the median
    # ratio, 0.2, scales u's 50 s estimate: 10 s.
    g = graph([task(k, "true", estimate=10) for k in "xyz"] + [task("u", "true", estimate=50)])
    events: list[Event] = []
    for k, took in (("x", 1), ("y", 6), ("z", 2)):
        events += [
            started(g, k, T),
            ended(g, k, T + took, T, "succeeded"),
            settled(g, k, T + took, "succeeded"),
        ]
    assert eta(g, "dag", events, T + 6) == 10.0
    # No measure yet: the estimates as they are.
    assert eta(g, "dag", [], T) == 50.0


def test_real_run_eta_follows_a_plan_far_slower_than_the_machine(tmp_path: Path) -> None:
    # A chain whose estimates are 100 times its real sleeps: once a has
    # finished, the ETA is the real remaining time (0.6 s, not 60 s), within
    # a small factor.
    steps = [("a", 0.2), ("b", 0.3), ("c", 0.2), ("d", 0.1)]
    tasks = [
        task(k, f"sleep {s}", estimate=100 * s, needs=[steps[i - 1][0]] if i else [])
        for i, (k, s) in enumerate(steps)
    ]
    g = expand(plan(tasks, base_dir=tmp_path))
    live = LiveConsole(g, console=Console(file=io.StringIO(), width=100))
    seen: dict[str, tuple[float, float | None]] = {}

    def probe(ev: Event) -> None:
        if isinstance(ev, AttemptStarted):
            seen[ev.key] = (ev.at, live.state.estimate_remaining(ev.at))

    async def go() -> RunResult:
        opts = RunOptions(run_id="pace-eta", run_dir=tmp_path / "run")
        return await run_graph(g, opts, LocalExecutor(), [live, probe])

    result = asyncio.run(go())
    assert result.counts == {"succeeded": 4}
    assert seen["a"][1] == pytest.approx(80.0)  # nothing measured: the estimates
    at, value = seen["b"]
    real = result.ended_at - at
    assert value is not None
    assert real / 3 <= value <= real * 3


# -- rollout waves -------------------------------------------------------------

REGIONS = ["r1", "r2", "r3", "r4", "r5", "r6"]


def rolled_out(sizes: tuple[str | int | float, ...] = (1, 2, 1.0)) -> Graph:
    """infra (10 s) then k8s (5 s) per region; waves [r1], [r2, r3], [r4, r5, r6]."""
    p = plan(
        [
            task("infra", "true", targets=REGIONS, estimate=10),
            task("k8s", "true", targets=REGIONS, needs=["infra"], estimate=5),
        ],
        targets=REGIONS,
    )
    return expand(dataclasses.replace(p, rollout=Rollout(sizes)))


def test_the_first_eta_counts_every_wave() -> None:
    g = rolled_out()
    events: list[Event] = [started(g, "infra@r1", T)]
    # Three waves of 15 s each, one after another; without waves it would be 15 s.
    assert eta(g, "dag", events, T) == 45.0
    # infra@r1 took 8 s: the other waves' infra take 8 s too, and k8s 0.8 x its
    # 5 s estimate; k8s@r1 runs: 4 + 2 x 12.
    events += [
        ended(g, "infra@r1", T + 8, T, "succeeded"),
        settled(g, "infra@r1", T + 8, "succeeded"),
        started(g, "k8s@r1", T + 8),
    ]
    assert eta(g, "dag", events, T + 8) == 28.0
    # k8s@r1 ends after 3 s; wave 2 opens: 13 s for it, 13 s for the last.
    events += [
        ended(g, "k8s@r1", T + 11, T + 8, "succeeded"),
        settled(g, "k8s@r1", T + 11, "succeeded"),
        WaveChanged(at=T + 11, wave=2, waves=3, state="open", targets=("r2", "r3")),
        started(g, "infra@r2", T + 11),
        started(g, "infra@r3", T + 11),
    ]
    # infra 8 s, k8s now 3 s: 11 s a wave, 2 s of wave 2 gone.
    assert eta(g, "dag", events, T + 13) == 20.0


def test_a_continued_rollout_starts_with_the_waves_already_opened() -> None:
    # A retry of a run that had opened two waves: r1..r3 form its first wave.
    g = rolled_out()
    live = live_for(g, "dag", [], None)
    assert live.state.estimate_remaining(T) == 45.0
    live(WaveChanged(at=T, wave=1, waves=2, state="open", targets=("r1", "r2", "r3")))
    assert live.state.estimate_remaining(T) == 30.0


def test_real_rollout_eta_accounts_for_every_wave(tmp_path: Path) -> None:
    # Waves [a], [b], [c, d] of one 0.3 s step each: at least 0.9 s in all.
    p = plan(
        [task("step", "sleep 0.3", targets=TARGETS, estimate=0.3)],
        targets=TARGETS,
        base_dir=tmp_path,
    )
    g = expand(dataclasses.replace(p, rollout=Rollout((1, 1, 2))))
    live = LiveConsole(g, console=Console(file=io.StringIO(), width=100))
    seen: list[tuple[str, float, float | None, float]] = []

    def probe(ev: Event) -> None:
        if isinstance(ev, AttemptStarted):
            state = live.state
            seen.append((ev.key, ev.at, state.estimate_remaining(ev.at), state.measured[0]))

    async def go() -> RunResult:
        opts = RunOptions(run_id="waves-eta", run_dir=tmp_path / "run")
        return await run_graph(g, opts, LocalExecutor(), [live, probe])

    result = asyncio.run(go())
    assert result.counts == {"succeeded": 4}
    assert [k for k, _, _, _ in seen[:2]] == ["step@a", "step@b"]
    _, at, first, _ = seen[0]
    # The first ETA counts the three waves (the estimates: 3 x 0.3 s), and the
    # run took about that long at least from there (each wave sleeps 0.3 s; the
    # events' times may fall a little inside the sleeps).
    assert first is not None
    assert first == pytest.approx(0.9)
    assert first <= result.ended_at - at + 0.05
    # From wave 2 on, the step as measured (step@a's) replaces the estimate: two
    # waves left.
    _, _, second, took = seen[1]
    assert took >= 0.25
    assert second == pytest.approx(2 * took)


# -- throttling ----------------------------------------------------------------


def throttled() -> Graph:
    """Ten 1 s instances through pool api, 2 starts a second (adaptive)."""
    targets = [f"t{i}" for i in range(10)]
    return graph(
        [task("x", "true", targets=targets, pools=["api"], estimate=1)],
        pools=[Pool("api", rate=2.0, adaptive=AdaptiveSettings())],
    )


def test_eta_grows_when_a_pools_rate_drops() -> None:
    g = throttled()
    live = live_for(g, "dag", [], None)
    state = live.state
    # Starts every 0.5 s: the last at 4.5 s, done at 5.5 s.
    assert state.estimate_remaining(T) == pytest.approx(5.5)
    live(PoolChanged(at=T, pool="api", rate=0.5, reason="throttled", concurrency=None))
    # A start every 2 s: the last at 18 s.
    assert state.estimate_remaining(T) == pytest.approx(19.0)
    # A cap in effect counts too: one at a time at most, as slow here.
    live(PoolChanged(at=T, pool="api", rate=0.5, reason="throttled", concurrency=1))
    assert state.estimate_remaining(T) == pytest.approx(19.0)
    live(PoolChanged(at=T, pool="api", rate=2.0, reason="restored", concurrency=None))
    assert state.estimate_remaining(T) == pytest.approx(5.5)


def test_header_eta_follows_a_throttle_at_once() -> None:
    g = throttled()
    live = live_for(g, "dag", [], None)
    head = text_of(render(live.state, 100, 20, T + 1)).splitlines()[0]
    assert head == "run r1 · dag · -j unbounded · elapsed 1.0s · ETA ~5.5s (estimate)"
    # Half a second later the drop is shown, not the last ETA counted down.
    live(PoolChanged(at=T + 1.5, pool="api", rate=0.5, reason="throttled", concurrency=None))
    head = text_of(render(live.state, 100, 20, T + 1.5)).splitlines()[0]
    assert head.endswith("ETA ~19.0s (estimate)")


# -- when the ETA is simulated ---------------------------------------------------


def test_simulated_on_settling_and_every_second_and_counted_down_between() -> None:
    g = graph([task("x", "true", targets=TARGETS, estimate=10)])
    live = live_for(g, "dag", [started(g, "x@a", T)], 1)
    state = live.state
    sched = state.eta_schedule
    assert state.eta(T) == 40.0
    assert sched.simulations == 1
    # Nothing settled: the same simulation, counted down; a start changes nothing.
    live(started(g, "x@a", T, attempt=1))
    assert state.eta(T + 0.5) == 39.5
    assert sched.simulations == 1
    # x@a ended after 2 s: simulated again at the next redraw (-j 1: 3 x 2 s).
    live(ended(g, "x@a", T + 2, T, "succeeded"))
    live(settled(g, "x@a", T + 2, "succeeded"))
    assert state.eta(T + 2) == 6.0
    assert sched.simulations == 2
    # No event for a while: simulated again once a second has passed.
    assert state.eta(T + 2 + ETA_EVERY / 2) == 6.0 - ETA_EVERY / 2
    assert sched.simulations == 2
    assert state.eta(T + 2 + ETA_EVERY) == 6.0  # nothing runs: nothing went by
    assert sched.simulations == 3


def test_header_shows_the_phased_eta() -> None:
    g = three_phases()
    state = live_for(g, "phased", build_running(g), 4).state
    head = text_of(render(state, 100, 20, T + 7)).splitlines()[0]
    assert head == "run r1 · phased · -j 4 · elapsed 7.0s · ETA ~28.0s (estimate)"


def test_a_live_console_simulates_off_the_loop() -> None:
    # On a loop, the redraw takes the inputs and a thread simulates; the result
    # is drawn once it came back through the loop.
    g = throttled()
    now = [T + 1.0]

    async def go() -> list[str]:
        live = LiveConsole(g, console=Console(file=io.StringIO(), width=100), clock=lambda: now[0])
        live.start()
        live(begin("dag", None, len(g.nodes)))
        assert not live.state.eta_inline
        heads = []
        for rate in (2.0, 0.5):
            live(PoolChanged(at=now[0], pool="api", rate=rate, reason="-", concurrency=None))
            live.refresh()  # due (stale): a simulation starts
            sched = live.state.eta_schedule
            assert sched.in_flight
            heads.append(text_of(render(live.state, 100, 20, now[0])).splitlines()[0])
            for _ in range(1000):  # until it came back (10 s at most)
                if not sched.in_flight:
                    break
                await asyncio.sleep(0.01)
            assert not sched.in_flight
            heads.append(text_of(render(live.state, 100, 20, now[0])).splitlines()[0])
            now[0] += 1.0
        live.stop()
        return heads

    heads = asyncio.run(go())
    assert heads[0].endswith("ETA being estimated")
    assert heads[1].endswith("ETA ~5.5s (estimate)")
    # The throttle's simulation runs while the last ETA, counted down, is shown.
    assert heads[2].endswith("ETA ~4.5s (estimate)")
    assert heads[3].endswith("ETA ~19.0s (estimate)")
