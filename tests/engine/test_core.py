"""The scheduler core on virtual time: no process, no event loop, no sleeping.

``CoreSim`` drives the real ``Core`` and jumps its clock to the next
happening, so every assertion here is on exact virtual times and orders.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

from fleetrun.engine import (
    AttemptStarted,
    InstanceSettled,
    PoolChanged,
    RunOptions,
    WaveChanged,
)
from fleetrun.engine._limits import ThrottleMatch
from fleetrun.engine.testing import CoreSim, plan, task
from fleetrun.executors import AttemptResult
from fleetrun.plan import Pool, RetryPolicy, Rollout, ThrottleRule, expand, load_plan_text

REGIONS = [f"r{i}" for i in range(6)]


def _opts(**kw: object) -> RunOptions:
    return RunOptions("sim", Path("."), **kw)  # type: ignore[arg-type]


def _graph(tasks, rollout=None, pools=(), groups=None):
    fleet = list(dict.fromkeys(t for task in tasks for t in (task.targets or ())))
    p = plan(tasks, targets=fleet, pools=pools)
    return expand(dataclasses.replace(p, groups={**p.groups, **(groups or {})}, rollout=rollout))


def _queued(sim: CoreSim) -> dict[str, str | None]:
    return {e.key: e.queued_reason for e in sim.events if isinstance(e, AttemptStarted)}


def test_a_target_pipelines_without_waiting_for_the_others() -> None:
    g = _graph(
        [
            task("infra", "x", targets=["a", "b"]),
            task("k8s", "x", targets=["a", "b"], needs=["infra"]),
        ]
    )
    slow = {"infra@a": 1.0, "infra@b": 5.0, "k8s@a": 1.0, "k8s@b": 1.0}
    sim = CoreSim(g, duration=lambda key, n: slow[key])
    assert sim.run().status == "succeeded"
    starts = sim.starts()
    assert starts["k8s@a"] == [1.0]  # not after infra@b (5.0)
    assert starts["k8s@b"] == [5.0]
    assert sim.t == 6.0


def test_the_j_cap_holds_and_names_itself() -> None:
    g = _graph([task("t", "x", targets=REGIONS)])
    sim = CoreSim(g, _opts(parallelism=2))
    sim.run()
    starts = sorted(t for ts in sim.starts().values() for t in ts)
    assert starts == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]
    queued = _queued(sim)
    assert sum(1 for r in queued.values() if r == "parallelism limit (-j 2)") == 4
    assert sum(1 for r in queued.values() if r is None) == 2


def test_a_pool_rate_spaces_starts_on_the_clock() -> None:
    g = _graph(
        [task("t", "x", targets=REGIONS, pools=["api"])],
        pools=[Pool("api", rate=2.0, burst=1)],
    )
    sim = CoreSim(g, duration=lambda key, n: 0.1)
    sim.run()
    starts = sorted(t for ts in sim.starts().values() for t in ts)
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(starts)]
    assert gaps == [0.5] * 5
    assert list(_queued(sim).values()).count("pool api rate") == 5


def test_waves_open_in_order_and_hold_with_their_reason() -> None:
    g = _graph([task("t", "x", targets=REGIONS)], Rollout((2,)))
    sim = CoreSim(g)
    sim.run()
    starts = sim.starts()
    assert [starts[f"t@{r}"][0] for r in REGIONS] == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]
    assert _queued(sim)["t@r5"] == "wave closed"
    opened = [e.wave for e in sim.events if isinstance(e, WaveChanged) and e.state == "open"]
    assert opened == [1, 2, 3]


def test_a_continued_rollout_retries_the_opened_waves_together() -> None:
    """``retry`` after waves 1 and 2 had opened: their targets run at once; the
    wave that never opened keeps its gate."""
    g = _graph([task("t", "x", targets=REGIONS)], Rollout((2,)))
    sim = CoreSim(g, _opts(waves_opened=2))
    sim.run()
    starts = sim.starts()
    assert [starts[f"t@{r}"][0] for r in REGIONS] == [0.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    waves = [e for e in sim.events if isinstance(e, WaveChanged)]
    assert waves[0].targets == tuple(REGIONS[:4])
    assert "waves 1-2 had opened" in waves[0].reason


def test_a_halted_canary_skips_the_later_waves() -> None:
    g = _graph([task("t", "x", targets=REGIONS)], Rollout((2,)))
    sim = CoreSim(g, result=lambda key, n: AttemptResult(exit_code=1 if key == "t@r1" else 0))
    result = sim.run()
    assert result.status == "failed"
    assert set(sim.starts()) == {"t@r0", "t@r1"}
    skipped = [e for e in sim.events if isinstance(e, InstanceSettled) and e.state == "skipped"]
    assert len(skipped) == 4
    assert all("rollout halted: wave 1" in e.reason for e in skipped)


def test_a_paused_rollout_waits_for_promote() -> None:
    g = _graph([task("t", "x", targets=REGIONS[:4])], Rollout((2,), pause=True))
    sim = CoreSim(g)
    sim.run(promote_at=[10.0])
    starts = sim.starts()
    assert starts["t@r2"] == [10.0]
    assert starts["t@r0"] == [0.0]


def test_two_promotes_while_the_canary_runs_open_one_wave() -> None:
    """Waves of one target each, ``pause``: two promotes during the canary open
    wave 2 once the canary is done, and wave 3 still waits for a promote of
    its own; a promote given while wave 2 runs opens wave 3 after it."""
    g = _graph([task("t", "x", targets=REGIONS[:4])], Rollout((1,), pause=True))
    sim = CoreSim(g)
    result = sim.run(promote_at=[0.2, 0.5])
    starts = sim.starts()
    assert starts == {"t@r0": [0.0], "t@r1": [1.0]}
    assert result.counts == {"succeeded": 2, "not_started": 2}
    waves = [(e.wave, e.state) for e in sim.events if isinstance(e, WaveChanged)]
    assert waves == [(1, "open"), (2, "open"), (3, "waiting")]

    sim = CoreSim(g)
    sim.run(promote_at=[0.2, 0.5, 1.5, 5.0])
    assert sim.starts() == {"t@r0": [0.0], "t@r1": [1.0], "t@r2": [2.0], "t@r3": [5.0]}


def test_a_wave_with_exactly_max_failed_failures_goes_on() -> None:
    """29% of a wave of 100 allows 29 failed targets (29/100 as a float times 100
    is 28.999...): the next wave opens; a 30th failure halts it."""
    fleet = [f"h{i:03d}" for i in range(101)]
    rollout = load_plan_text(
        "targets: {a: {}}\nrollout: {waves: [100], max_failed: '29%'}\n"
        "tasks: {t: {run: x, for_each: all}}\n"
    ).rollout
    g = _graph([task("t", "x", targets=fleet)], rollout)
    for bad, halts in ((29, False), (30, True)):
        failing = {f"t@{t}" for t in fleet[:bad]}
        sim = CoreSim(g, result=lambda key, n, f=failing: AttemptResult(exit_code=int(key in f)))
        sim.run()
        assert ("t@h100" in sim.starts()) is not halts
        halted = [
            e.reason for e in sim.events if isinstance(e, WaveChanged) and e.state == "halted"
        ]
        assert halted == (
            [
                "rollout halted: wave 1 had 30 failed target(s), "
                "more than max_failed (29% of 100, 29)"
            ]
            if halts
            else []
        )


def test_a_queued_cluster_job_starts_when_its_worker_is_free() -> None:
    """One worker, 4 jobs of 1 s: each attempt starts when it gets the worker,
    lasts 1 s, and its wait is queued time 'waiting for a worker'."""
    g = _graph([task("prove", "x", targets=REGIONS[:4])])
    sim = CoreSim(g, _opts(parallelism=8), workers=1, queued_tasks=["prove"])
    assert sim.run().status == "succeeded"
    starts = sorted(t for ts in sim.starts().values() for t in ts)
    assert starts == [0.0, 1.0, 2.0, 3.0]
    for ev in sim.events:
        if isinstance(ev, AttemptStarted):
            assert ev.queued_reason == (None if ev.at == 0.0 else "waiting for a worker")
    durations = [e.at - e.started_at for e in sim.events if type(e).__name__ == "AttemptEnded"]
    assert durations == [1.0, 1.0, 1.0, 1.0]


def test_a_retry_waits_its_backoff_holding_no_slot() -> None:
    g = _graph(
        [
            task("flaky", "x", retry=RetryPolicy(attempts=3, backoff=4.0, max_backoff=4.0)),
            task("other", "x"),
        ]
    )
    sim = CoreSim(
        g,
        _opts(parallelism=1, seed=1),
        result=lambda key, n: AttemptResult(exit_code=1 if (key, n) == ("flaky", 1) else 0),
    )
    assert sim.run().status == "succeeded"
    starts = sim.starts()
    assert len(starts["flaky"]) == 2
    # The other task took the slot during the backoff.
    assert starts["other"][0] < starts["flaky"][1]


def test_fail_fast_starts_nothing_more() -> None:
    g = _graph([task("t", "x", targets=REGIONS)])
    sim = CoreSim(
        g,
        _opts(parallelism=1, fail_fast="stop"),
        result=lambda key, n: AttemptResult(exit_code=1 if key == "t@r1" else 0),
    )
    result = sim.run()
    assert result.status == "failed"
    assert set(sim.starts()) == {"t@r0", "t@r1"}
    assert result.counts == {"succeeded": 1, "failed": 1, "not_started": 4}


def test_a_retry_after_pauses_every_start_of_the_pool() -> None:
    rule = ThrottleRule(exit=frozenset({75}), output=(), retry_after=None, attempts=3)
    g = _graph(
        [task("t", "x", targets=REGIONS[:3], pools=["api"])],
        pools=[Pool("api", concurrency=1, throttle=rule)],
    )

    def result(key: str, n: int) -> AttemptResult:
        return AttemptResult(exit_code=75 if (key, n) == ("t@r0", 1) else 0)

    def matched(key: str, n: int) -> tuple[ThrottleMatch, ...]:
        return (ThrottleMatch(0, "exit 75", 30.0),) if (key, n) == ("t@r0", 1) else ()

    sim = CoreSim(g, _opts(seed=0), result=result, matched=matched)
    assert sim.run().status == "succeeded"
    later = sorted(t for k, ts in sim.starts().items() for t in ts if t > 0)
    assert later
    assert min(later) >= 31.0
    pauses = [e for e in sim.events if isinstance(e, PoolChanged) and e.paused]
    assert [(e.pool, e.paused, e.at) for e in pauses] == [("api", 30.0, 1.0)]


def test_phased_mode_waits_for_the_whole_phase() -> None:
    g = _graph(
        [
            task("infra", "x", targets=["a", "b"], phase="infrastructure"),
            task("k8s", "x", targets=["a", "b"], needs=["infra"], phase="kubernetes"),
        ]
    )
    g = expand(dataclasses.replace(g.plan, phases=("infrastructure", "kubernetes")))
    slow = {"infra@a": 1.0, "infra@b": 5.0, "k8s@a": 1.0, "k8s@b": 1.0}
    sim = CoreSim(g, _opts(mode="phased"), duration=lambda key, n: slow[key])
    sim.run()
    assert sim.starts()["k8s@a"] == [5.0]
    assert _queued(sim)["k8s@a"] == "phase"


def test_an_interrupt_cancels_what_runs_and_starts_nothing() -> None:
    g = _graph([task("t", "x", targets=REGIONS)])
    sim = CoreSim(g, _opts(parallelism=2), duration=lambda key, n: 10.0)
    result = sim.run(interrupt_at=1.0)
    assert result.status == "interrupted"
    assert result.counts == {"cancelled": 2, "not_started": 4}


def test_a_continued_rollout_keeps_the_gate_of_the_wave_that_halted() -> None:
    """Waves of 2 and 4 targets, max_failed 50%: the run halted at wave 2 (3 of 4
    failed). Its retry runs waves 1 and 2 together, but wave 2 alone must again
    stay within its own 50%, not 50% of the six targets together."""
    fleet = [f"r{i}" for i in range(10)]
    g = _graph([task("t", "x", targets=fleet)], Rollout((2, 4), 0.5, True))
    bad = {"t@r2", "t@r3", "t@r4"}
    sim = CoreSim(
        g,
        _opts(waves_opened=2),
        result=lambda key, n: AttemptResult(exit_code=1 if key in bad else 0),
    )
    assert sim.run().status == "failed"
    assert set(sim.starts()) == {f"t@r{i}" for i in range(6)}  # wave 3 never opened
    halted = [e for e in sim.events if isinstance(e, WaveChanged) and e.state == "halted"]
    assert len(halted) == 1
    assert "wave 2 had 3 failed target(s)" in halted[0].reason
    assert "50% of 4, 2" in halted[0].reason


def test_a_continued_rollout_goes_on_when_each_merged_wave_is_within_its_gate() -> None:
    fleet = [f"r{i}" for i in range(10)]
    g = _graph([task("t", "x", targets=fleet)], Rollout((2, 4), 0.5, True))
    sim = CoreSim(
        g,
        _opts(waves_opened=2),
        result=lambda key, n: AttemptResult(exit_code=1 if key in {"t@r2", "t@r3"} else 0),
    )
    sim.run()
    assert len(sim.starts()) == 10


def test_the_gate_that_held_longest_names_the_wait() -> None:
    """``--mode phased`` with a rollout: k8s@a is ready at 1 s, but the
    infrastructure phase ends only at 10 s; then the kubernetes phase rolls
    out anew and k8s@a waits briefly for its wave. The phase held it longest."""
    g = _graph(
        [
            task("infra", "x", targets=["a", "b", "c"], phase="infrastructure"),
            task("k8s", "x", targets=["a", "b", "c"], needs=["infra"], phase="kubernetes"),
        ],
        Rollout((1,)),
    )
    g = expand(dataclasses.replace(g.plan, phases=("infrastructure", "kubernetes")))
    times = {"infra@a": 1.0, "infra@b": 1.0, "infra@c": 8.0}
    sim = CoreSim(g, _opts(mode="phased"), duration=lambda key, n: times.get(key, 1.0))
    sim.run()
    starts = sim.starts()
    assert starts["k8s@b"] == [11.0]  # the kubernetes phase's second wave
    assert _queued(sim)["k8s@b"] == "phase"
