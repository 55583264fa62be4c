"""The makespan simulation of what remains of a run: hand-computed cuts of whole runs."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from fleetrun.plan import Graph, Pool, Rollout, expand, simulate, simulate_remaining

sys.path.insert(0, str(Path(__file__).parent))
from test_expand import make_plan

MIN = 60.0
ABC = ["a", "b", "c"]


def build(
    tasks: list[tuple[Any, ...]],
    targets: Sequence[str] = ABC,
    sizes: tuple[str | int | float, ...] | None = None,
    **kw: Any,
) -> Graph:
    plan = make_plan(list(targets), tasks, **kw)
    if sizes is not None:
        plan = dataclasses.replace(plan, rollout=Rollout(sizes))
    return expand(plan)


def ids(g: Graph, *keys: str) -> list[int]:
    return [g.index[k] for k in keys]


def estimates(g: Graph) -> list[float]:
    return [node.estimate for node in g.nodes]


def test_nothing_done_is_the_whole_estimate() -> None:
    # Rollout waves, phases, a pool and a quorum: at the start, what remains is
    # what ``simulate`` estimates for the whole run.
    targets = [f"r{i}" for i in range(30)]
    tasks = [
        ("infra", "all", [], 3.0, "one", ["api"]),
        ("k8s", "all", ["infra"], 2.0, "two"),
        ("gate", None, [("k8s", "67%")], 1.0, "three"),
        ("verify", "all", ["k8s", "gate"], 1.0, "three"),
    ]
    phases = ["one", "two", "three"]
    g = build(tasks, targets, (2, 8, 1.0), phases=phases, pools=[Pool("api", 8, rate=4.0)])
    for mode in ("sequential", "phased", "dag"):
        for j in (None, 4, 16):
            assert simulate_remaining(g, mode, j, estimates(g)) == simulate(g, mode, j)


CHAIN = [("x", "all", [], MIN, "one"), ("y", "all", ["x"], MIN, "two")]


def test_a_rollout_cut_midway_has_the_rest_of_its_waves_to_go() -> None:
    # Waves [a], [b, c]; x then y per target, 1 min each: 2 min a wave, 4 in all.
    g = build(CHAIN, sizes=(1, 1.0))
    est = estimates(g)
    assert simulate(g, "dag", None) == 4 * MIN
    # At 1.5 min: x@a done, y@a half-way; then the second wave: 0.5 + 2 min.
    left = simulate_remaining(g, "dag", None, est, done=ids(g, "x@a"), running={g.index["y@a"]: 30})
    assert left == pytest.approx(2.5 * MIN)
    # At 2.5 min: the first wave done, x@b and x@c half-way: 0.5 + 1 min.
    done = ids(g, "x@a", "y@a")
    running = dict.fromkeys(ids(g, "x@b", "x@c"), 30.0)
    assert simulate_remaining(g, "dag", None, est, done=done, running=running) == 1.5 * MIN


def test_each_phase_rolls_out_anew_after_a_cut() -> None:
    # phased: x over [a] then [b, c] (2 min), then y the same way (2 min).
    g = build(CHAIN, sizes=(1, 1.0), phases=["one", "two"])
    est = estimates(g)
    assert simulate(g, "phased", None) == 4 * MIN
    # x@a done, x@b half-way (x@c too): 0.5 min of phase one, then all of phase two.
    running = dict.fromkeys(ids(g, "x@b", "x@c"), 30.0)
    left = simulate_remaining(g, "phased", None, est, done=ids(g, "x@a"), running=running)
    assert left == pytest.approx(2.5 * MIN)
    # dag, the same cut: y@a starts at once, and wave [b, c] holds y@b and y@c
    # until it ends (x@b and x@c run on): 1 + 1.
    left = simulate_remaining(g, "dag", None, est, done=ids(g, "x@a"), running=running)
    assert left == pytest.approx(2 * MIN)


def test_running_nodes_hold_their_slots() -> None:
    # Three 10 s instances through one slot; x@a has run 4 s: 6 + 10 + 10.
    g = build([("x", "all", [], 10.0, None, ["api"])], pools=[Pool("api", 1)])
    running = {g.index["x@a"]: 4.0}
    assert simulate_remaining(g, "dag", None, estimates(g), running=running) == 26.0
    # The same through -j 1 without a pool, and in sequential mode.
    g = build([("x", "all", [], 10.0)])
    running = {g.index["x@a"]: 4.0}
    assert simulate_remaining(g, "dag", 1, estimates(g), running=running) == 26.0
    assert simulate_remaining(g, "sequential", None, estimates(g), running=running) == 26.0
    assert simulate_remaining(g, "dag", None, estimates(g), running=running) == 10.0


def test_an_overdue_node_ends_at_once() -> None:
    # a (10 s) -> b (20 s); a has run 30 s: only b is left.
    g = build([("a", None, [], 10.0), ("b", None, ["a"], 20.0)], targets=["t"])
    assert simulate_remaining(g, "dag", None, estimates(g), running={g.index["a"]: 30.0}) == 20.0
    # Everything done: nothing left.
    assert simulate_remaining(g, "dag", None, estimates(g), done=[0, 1]) == 0.0


def test_measured_durations_replace_the_estimates() -> None:
    g = build([("x", "all", [], 10.0)])
    # x took 2 s so far: each pending x takes 2 s, a running one 2 s less what it ran.
    durations = [2.0] * len(g.nodes)
    running = {g.index["x@a"]: 1.5}
    assert simulate_remaining(g, "dag", 1, durations, running=running) == pytest.approx(4.5)


def test_the_rates_and_caps_in_effect() -> None:
    # Ten 1 s starts at 1/s (a burst of 1): the last starts at 9 s, ends at 10.
    targets = [f"t{i}" for i in range(10)]
    g = build([("x", "all", [], 1.0, None, ["api"])], targets, pools=[Pool("api", rate=1.0)])
    est = estimates(g)
    assert simulate_remaining(g, "dag", None, est) == simulate(g, "dag", None) == 10.0
    # Throttled to 0.5/s: a start every 2 s, the last at 18 s.
    assert simulate_remaining(g, "dag", None, est, rates={"api": 0.5}) == pytest.approx(19.0)
    # Raised: sooner; no rate at all: all at once.
    assert simulate_remaining(g, "dag", None, est, rates={"api": 2.0}) == pytest.approx(5.5)
    assert simulate_remaining(g, "dag", None, est, rates={"api": 0.0}) == 1.0
    # A cap in effect (none configured), without the rate: two at a time.
    caps = {"api": 2}
    assert simulate_remaining(g, "dag", None, est, rates={"api": 0}, concurrency=caps) == 5.0
    # A rate on a pool configured without one (an adaptive pool's).
    g = build([("x", "all", [], 1.0, None, ["api"])], targets, pools=[Pool("api", 4)])
    assert simulate_remaining(g, "dag", None, est) == 3.0
    assert simulate_remaining(g, "dag", None, est, rates={"api": 1.0}) == 10.0


def test_done_nodes_count_towards_a_quorum() -> None:
    # gate (1 s) needs 2 of the three x (10 s each).
    tasks = [("x", "all", [], 10.0), ("gate", None, [("x", 2)], 1.0)]
    g = build(tasks)
    est = estimates(g)
    running = {g.index["x@c"]: 0.0}
    # Two x done: gate starts at once; x@c still runs 10 s.
    done = ids(g, "x@a", "x@b")
    assert simulate_remaining(g, "dag", None, est, done=done, running=running) == 10.0
    # One done: gate waits for a second x (10 s), then 1 s.
    done = ids(g, "x@a")
    assert simulate_remaining(g, "dag", None, est, done=done, running=running) == 11.0


def test_bad_arguments() -> None:
    g = build([("x", "all", [], 1.0)])
    est = estimates(g)
    with pytest.raises(ValueError, match="unknown mode"):
        simulate_remaining(g, "fast", None, est)
    with pytest.raises(ValueError, match="2 durations for 3 nodes"):
        simulate_remaining(g, "dag", None, est[:2])
    with pytest.raises(ValueError, match="both done and running"):
        simulate_remaining(g, "dag", None, est, done=[0], running={0: 1.0})
