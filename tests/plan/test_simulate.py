"""Makespan simulation: hand-computed cases for each mode, caps, quorums and rollout waves."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from fleetrun.plan import Pool, Rollout, expand, simulate
from fleetrun.plan._simulate import phase_layers

sys.path.insert(0, str(Path(__file__).parent))
from test_expand import make_plan


def graph_of(tasks: list[tuple[Any, ...]], targets: Any = ("t",), **kw: Any) -> Any:
    return expand(make_plan(list(targets), tasks, **kw))


def test_chain_and_independent_node() -> None:
    # a(2) -> b(3); c(4) alone.
    g = graph_of([("a", None, [], 2.0), ("b", None, ["a"], 3.0), ("c", None, [], 4.0)])
    assert simulate(g, "sequential", None) == 9.0
    assert simulate(g, "dag", None) == 5.0
    assert simulate(g, "dag", 1) == 9.0
    # j=2: a and c start at 0 (a first: rank 5 > 4); b starts at 2, ends at 5.
    assert simulate(g, "dag", 2) == 5.0
    assert simulate(g, "phased", None) == 5.0  # no phases: one phase, same as dag


def test_fan_out_under_a_parallelism_cap() -> None:
    g = graph_of([("x", "all", [], 1.0)], targets=["a", "b", "c", "d", "e"])
    assert simulate(g, "dag", None) == 1.0
    assert simulate(g, "dag", 2) == 3.0  # 2 + 2 + 1
    assert simulate(g, "sequential", 2) == 5.0


def test_critical_path_first() -> None:
    # d over two targets (ids 0, 1) then the chain a -> b -> c, all 1 s, j=2.
    # Plan order would run d, d, then the chain: 4. Critical path first runs a at once: 3.
    g = graph_of(
        [
            ("d", "all", [], 1.0),
            ("a", None, [], 1.0),
            ("b", None, ["a"], 1.0),
            ("c", None, ["b"], 1.0),
        ],
        targets=["p", "q"],
    )
    assert simulate(g, "dag", 2) == 3.0


def test_phased_barriers_versus_per_target_pipelining() -> None:
    # x over a, b takes 1 s and 3 s; y (next phase, same target) takes 3 s and 1 s.
    g = graph_of(
        [("x", "all", [], 1.0, "one"), ("y", "all", ["x"], 1.0, "two")],
        targets=["a", "b"],
        phases=["one", "two"],
    )
    durations = [1.0, 3.0, 3.0, 1.0]
    assert simulate(g, "phased", None, durations) == 6.0  # 3 + 3
    assert simulate(g, "dag", None, durations) == 4.0  # max(1 + 3, 3 + 1)
    assert simulate(g, "sequential", None, durations) == 8.0
    assert simulate(g, "phased", 1, durations) == 8.0


def test_pool_caps_and_blocked_nodes_do_not_block_others() -> None:
    # p: 3 instances in a pool of 1 slot; q: 3 instances outside it. All 1 s.
    tasks = [("p", "all", [], 1.0, None, ["api"]), ("q", "all", [], 1.0)]
    g = graph_of(tasks, targets=["a", "b", "c"], pools=[Pool("api", concurrency=1)])
    assert simulate(g, "dag", None) == 3.0
    # j=2: each second one p (the pool allows one) and one q.
    assert simulate(g, "dag", 2) == 3.0
    wide = graph_of(tasks, targets=["a", "b", "c"], pools=[Pool("api", concurrency=2)])
    assert simulate(wide, "dag", None) == 2.0
    # A rate-only pool does not cap concurrency, but spaces the starts:
    # p@a, p@b, p@c start at 0, 0.1 and 0.2 s (10/s, burst 1).
    rated = graph_of(tasks, targets=["a", "b", "c"], pools=[Pool("api", rate=10.0)])
    assert simulate(rated, "dag", None) == pytest.approx(1.2, abs=1e-6)
    bursty = graph_of(tasks, targets=["a", "b", "c"], pools=[Pool("api", rate=10.0, burst=3)])
    assert simulate(bursty, "dag", None) == pytest.approx(1.0, abs=1e-6)


def test_node_in_two_pools_holds_a_slot_in_each() -> None:
    tasks = [
        ("both", "all", [], 1.0, None, ["p1", "p2"]),
        ("one", "all", [], 1.0, None, ["p2"]),
    ]
    pools = [Pool("p1", concurrency=2), Pool("p2", concurrency=2)]
    g = graph_of(tasks, targets=["a", "b"], pools=pools)
    # 4 instances share p2's 2 slots: 2 s however p1 is set.
    assert simulate(g, "dag", None) == 2.0


def test_quorum_starts_as_soon_as_enough_have_finished() -> None:
    # x@a 1 s, x@b 5 s; z needs 1 of x, then w (10 s) needs z.
    tasks = [("x", "all", []), ("z", None, [("x", 1)]), ("w", None, ["z"])]
    g = graph_of(tasks, targets=["a", "b"])
    assert simulate(g, "dag", None, [1.0, 5.0, 1.0, 10.0]) == 12.0
    tasks_all = [("x", "all", []), ("z", None, ["x"]), ("w", None, ["z"])]
    g_all = graph_of(tasks_all, targets=["a", "b"])
    assert simulate(g_all, "dag", None, [1.0, 5.0, 1.0, 10.0]) == 16.0
    # 50% of 2 = 1: the same as at_least 1.
    g_pct = graph_of(
        [("x", "all", []), ("z", None, [("x", "50%")]), ("w", None, ["z"])], targets=["a", "b"]
    )
    assert simulate(g_pct, "dag", None, [1.0, 5.0, 1.0, 10.0]) == 12.0


def test_phase_layers_follow_requirements() -> None:
    # 'free' has no phase and needs 'late', so it runs in phase two.
    g = graph_of(
        [
            ("early", None, [], 1.0, "one"),
            ("late", None, ["early"], 1.0, "two"),
            ("free", None, ["late"], 1.0),
            ("loose", None, [], 1.0),
        ],
        phases=["one", "two"],
    )
    keys = [[g.nodes[i].key for i in layer] for layer in phase_layers(g)]
    assert keys == [["early", "loose"], ["late", "free"]]
    assert simulate(g, "phased", None) == 3.0


def test_bad_arguments() -> None:
    g = graph_of([("a", None, [])])
    with pytest.raises(ValueError, match="unknown mode"):
        simulate(g, "turbo", None)
    with pytest.raises(ValueError, match="2 durations for 1 nodes"):
        simulate(g, "dag", None, [1.0, 2.0])


def test_modes_are_ordered_and_bounded_on_a_mixed_graph() -> None:
    targets = [f"r{i}" for i in range(30)]
    tasks = [
        ("infra", "all", [], 3.0, "one", ["api"]),
        ("k8s", "all", ["infra"], 2.0, "two"),
        ("gate", None, [("k8s", "67%")], 1.0, "three"),
        ("verify", "all", ["k8s", "gate"], 1.0, "three"),
    ]
    g = graph_of(tasks, targets=targets, phases=["one", "two", "three"], pools=[Pool("api", 8)])
    durations = [1.0 + (i * 7 % 11) for i in range(len(g.nodes))]
    for j in (None, 4, 16):
        seq = simulate(g, "sequential", j, durations)
        phased = simulate(g, "phased", j, durations)
        dag = simulate(g, "dag", j, durations)
        assert dag <= phased <= seq
        assert seq == sum(durations)
        # Never faster than the busiest pool or the cap allows.
        assert dag >= sum(durations[:30]) / 8
        if j:
            assert dag >= sum(durations) / j


def test_a_slow_rate_dominates_the_estimate() -> None:
    # Six starts at 0.5/s, 2 s apart, whatever the mode: the bucket emptied in
    # phase one is still refilling when phase two begins.
    tasks = [("p", "all", [], 0.1, "one", ["api"]), ("q", "all", ["p"], 0.1, "two", ["api"])]
    g = graph_of(
        tasks, targets=["a", "b", "c"], pools=[Pool("api", rate=0.5)], phases=["one", "two"]
    )
    assert simulate(g, "phased", None) == pytest.approx(10.1, abs=1e-6)
    assert simulate(g, "dag", None) == pytest.approx(10.1, abs=1e-6)


# -- rollout waves ----------------------------------------------------------------

MIN = 60.0
ABC = ["a", "b", "c"]
CHAIN = [("x", "all", [], MIN), ("y", "all", ["x"], MIN)]  # per target, 2 x 1 min


def with_rollout(
    tasks: list[tuple[Any, ...]],
    targets: Sequence[str],
    sizes: tuple[str | int | float, ...],
    **kw: Any,
) -> Any:
    plan = make_plan(list(targets), tasks, **kw)
    return expand(dataclasses.replace(plan, rollout=Rollout(sizes)))


# (case, tasks, targets, sizes, phases, mode, parallelism, with waves, without waves)
ROLLOUT_CASES: list[
    tuple[
        str,
        list[tuple[Any, ...]],
        list[str],
        tuple[Any, ...],
        list[str],
        str,
        int | None,
        float,
        float,
    ]
] = [
    # Wave 1 = a: x@a, y@a (2 min); wave 2 = b, c, opened once a settled (2 more).
    ("chain, waves [1, 100%]", CHAIN, ABC, (1, 1.0), [], "dag", None, 4 * MIN, 2 * MIN),
    ("one wave of all", CHAIN, ABC, (1.0,), [], "dag", None, 2 * MIN, 2 * MIN),
    ("last size repeats", CHAIN, ABC, (1,), [], "dag", None, 6 * MIN, 2 * MIN),
    # A task not fanned over targets is not held: setup (3 min) starts at once.
    (
        "unfanned task not held",
        [*CHAIN, ("setup", None, [], 3 * MIN)],
        ABC,
        (1, 1.0),
        [],
        "dag",
        None,
        4 * MIN,
        3 * MIN,
    ),
    # An unfanned task after every wave runs once the last wave is done.
    (
        "unfanned task after the waves",
        [*CHAIN, ("report", None, ["y"], MIN)],
        ABC,
        (1, 1.0),
        [],
        "dag",
        None,
        5 * MIN,
        3 * MIN,
    ),
    # The cap applies inside a wave too: wave 2 (b, c) at -j 1 takes 4 min.
    ("parallelism cap", CHAIN, ABC, (1, 1.0), [], "dag", 1, 6 * MIN, 6 * MIN),
    # A quorum over more than the first wave does not deadlock: the first wave is
    # done once nothing of it can move (verify waits for contract, outside it).
    # deploy r0, r1 [0, 1]; r2, r3 [1, 2]; then contract [2, 3] and deploy r4
    # [2, 3]; verify everywhere [3, 4].
    (
        "quorum over every wave",
        [
            ("deploy", "all", [], 1.0),
            ("contract", None, [("deploy", 3)], 1.0),
            ("verify", "all", ["deploy", "contract"], 1.0),
        ],
        ["r0", "r1", "r2", "r3", "r4"],
        (2,),
        [],
        "dag",
        None,
        4.0,
        3.0,
    ),
    # --mode phased, as the engine runs it: every phase wave by wave (an
    # instance held by the phase barrier does not keep its wave open):
    # a r0, r1 [0, 1]; a r2, r3 [1, 2]; b r0, r1 [2, 3]; b r2, r3 [3, 4].
    (
        "phased: every phase wave by wave",
        [("a", "all", [], 1.0, "one"), ("b", "all", ["a"], 1.0, "two")],
        ["r0", "r1", "r2", "r3"],
        (2,),
        ["one", "two"],
        "phased",
        None,
        4.0,
        2.0,
    ),
    # A first wave that waits for an unfanned setup stays the only open one:
    # setup [0, 1]; x@a [1, 2]; x@b [2, 3]; x@c [3, 4].
    (
        "dag: first wave waits for an unfanned setup",
        [("setup", None, [], 1.0), ("x", "all", ["setup"], 1.0)],
        ABC,
        (1,),
        [],
        "dag",
        None,
        4.0,
        2.0,
    ),
    # The same in dag: each wave pipelines a then b before the next one opens.
    (
        "dag: each wave pipelines",
        [("a", "all", [], 1.0, "one"), ("b", "all", ["a"], 1.0, "two")],
        ["r0", "r1", "r2", "r3"],
        (2,),
        ["one", "two"],
        "dag",
        None,
        4.0,
        2.0,
    ),
    # A first phase with nothing fanned: the second phase is rolled out wave by
    # wave once it begins: setup [0, 1]; x@a [1, 2]; x@b [2, 3]; x@c [3, 4].
    (
        "phased: unfanned first phase",
        [("setup", None, [], 1.0, "one"), ("x", "all", [], 1.0, "two")],
        ABC,
        (1,),
        ["one", "two"],
        "phased",
        None,
        4.0,
        2.0,
    ),
    # Sequential runs one instance at a time whatever the waves: the sum.
    ("sequential", CHAIN, ABC, (1,), [], "sequential", None, 6 * MIN, 6 * MIN),
]


@pytest.mark.parametrize(
    ("tasks", "targets", "sizes", "phases", "mode", "j", "held", "free"),
    [case[1:] for case in ROLLOUT_CASES],
    ids=[case[0] for case in ROLLOUT_CASES],
)
def test_rollout_waves_hold_targets(
    tasks: list[tuple[Any, ...]],
    targets: list[str],
    sizes: tuple[Any, ...],
    phases: list[str],
    mode: str,
    j: int | None,
    held: float,
    free: float,
) -> None:
    g = with_rollout(tasks, targets, sizes, phases=phases)
    assert simulate(g, mode, j) == pytest.approx(held)
    assert simulate(g, mode, j, rollout=False) == pytest.approx(free)


def test_rollout_with_measured_durations_and_no_rollout_in_the_plan() -> None:
    # Durations given: x@a 1, x@b 5, x@c 1, y@* 1. Wave 1 = a (2 s); wave 2 = b, c (6 s).
    g = with_rollout(CHAIN, ABC, (1, 1.0))
    durations = [1.0, 5.0, 1.0, 1.0, 1.0, 1.0]
    assert simulate(g, "dag", None, durations) == pytest.approx(8.0)
    assert simulate(g, "dag", None, durations, rollout=False) == pytest.approx(6.0)
    # Without ``rollout`` in the plan, ``rollout=True`` changes nothing.
    plain = graph_of(CHAIN, targets=ABC)
    assert simulate(plain, "dag", None) == simulate(plain, "dag", None, rollout=False) == 2 * MIN


def test_rollout_is_never_faster_on_a_mixed_graph() -> None:
    targets = [f"r{i}" for i in range(30)]
    tasks = [
        ("infra", "all", [], 3.0, "one", ["api"]),
        ("k8s", "all", ["infra"], 2.0, "two"),
        ("gate", None, [("k8s", "67%")], 1.0, "three"),
        ("verify", "all", ["k8s", "gate"], 1.0, "three"),
    ]
    plan = make_plan(targets, tasks, phases=["one", "two", "three"], pools=[Pool("api", 8)])
    g = expand(dataclasses.replace(plan, rollout=Rollout((2, 8, 1.0))))
    durations = [1.0 + (i * 7 % 11) for i in range(len(g.nodes))]
    for j in (None, 4, 16):
        for mode in ("phased", "dag"):
            held = simulate(g, mode, j, durations)
            assert held >= simulate(g, mode, j, durations, rollout=False) - 1e-9
            assert held <= simulate(g, "sequential", j, durations)
