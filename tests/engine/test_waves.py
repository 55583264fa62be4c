"""Rolling waves: order, max_failed (strictly greater halts), skipping, pause and promote."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import threading
from fractions import Fraction

import pytest

from fleetrun.engine import (
    AttemptStarted,
    InstanceSettled,
    RunControl,
    RunOptions,
    WaveChanged,
    run_graph,
)
from fleetrun.engine.testing import plan, task
from fleetrun.executors import LocalExecutor
from fleetrun.plan import Rollout, expand, load_plan_text, wave_targets

REGIONS = [f"r{i}" for i in range(10)]


def _graph(tasks, rollout, groups=None):
    p = plan(tasks, targets=REGIONS)
    all_groups = {**p.groups, **(groups or {})}
    return expand(dataclasses.replace(p, groups=all_groups, rollout=rollout))


def _started_targets(ran, task_name):
    return [e.key.split("@")[1] for e in ran.of(AttemptStarted) if e.key.startswith(task_name)]


def test_wave_sizes_group_count_percent_last_repeats():
    p = plan([task("t", "true", targets=REGIONS)], targets=REGIONS)
    p = dataclasses.replace(p, groups={**p.groups, "canary": ("r3", "r7")})
    waves = wave_targets(p, Rollout(("canary", 3, 0.25)))
    assert waves == [
        ("r3", "r7"),
        ("r0", "r1", "r2"),
        ("r4", "r5"),  # 25% of 10 targets, truncated: 2
        ("r6", "r8"),
        ("r9",),
    ]
    assert wave_targets(p, Rollout((4,))) == [tuple(REGIONS[:4]), tuple(REGIONS[4:8]), ("r8", "r9")]


def test_waves_open_in_order_and_pipeline_inside(runner):
    rollout = Rollout(("canary", 4, 1.0))
    g = _graph(
        [
            task("infra", "sleep 0.05", targets=REGIONS),
            task("k8s", "true", targets=REGIONS, needs=["infra"]),
            task("report", "true", needs=["k8s[*]"]),
        ],
        rollout,
        {"canary": ("r0", "r5")},
    )
    ran = runner(g, parallelism=None)
    assert ran.result.status == "succeeded"
    opened = [(e.wave, e.targets) for e in ran.of(WaveChanged) if e.state == "open"]
    assert opened == [(1, ("r0", "r5")), (2, ("r1", "r2", "r3", "r4")), (3, tuple(REGIONS[6:]))]
    # Every instance of wave n settled before any instance of wave n+1 started.
    settled_at = {e.key: e.at for e in ran.of(InstanceSettled)}
    started_at = {e.key: e.at for e in ran.of(AttemptStarted)}
    for (_, earlier), (_, later) in itertools.pairwise(opened):
        last_end = max(settled_at[f"{t}@{r}"] for t in ("infra", "k8s") for r in earlier)
        first_start = min(started_at[f"{t}@{r}"] for t in ("infra", "k8s") for r in later)
        assert last_end <= first_start


def test_halt_when_strictly_more_than_max_failed(runner):
    # Wave 2 = r2..r5 (4 targets), 25% of 4 = 1 failure allowed: one failure goes on.
    fail_one = "case {{ target.name }} in r3) exit 1;; esac"
    g = _graph([task("t", fail_one, targets=REGIONS)], Rollout((2, 4), 0.25, True))
    ran = runner(g, parallelism=None)
    states = {k.split("@")[1]: e.state for k, e in ran.settled().items()}
    assert states["r3"] == "failed"
    assert all(s == "succeeded" for r, s in states.items() if r != "r3")
    assert not [e for e in ran.of(WaveChanged) if e.state == "halted"]

    # Two failures in wave 2 (> 1): wave 3 never opens; its targets are skipped.
    fail_two = "case {{ target.name }} in r3|r4) exit 1;; esac"
    g = _graph(
        [task("t", fail_two, targets=REGIONS), task("u", "true", targets=REGIONS, needs=["t"])],
        Rollout((2, 4), 0.25, True),
    )
    ran = runner(g, parallelism=None)
    assert ran.result.status == "failed"
    halted = [e for e in ran.of(WaveChanged) if e.state == "halted"]
    assert len(halted) == 1
    assert "wave 2 had 2 failed target(s), more than max_failed" in halted[0].reason
    settled = ran.settled()
    for r in REGIONS[6:]:
        for t in ("t", "u"):
            assert settled[f"{t}@{r}"].state == "skipped"
            assert settled[f"{t}@{r}"].reason.startswith("rollout halted: wave 2")
    assert not set(_started_targets(ran, "t")) & set(REGIONS[6:])


def test_unfanned_tasks_are_not_held_by_waves(runner):
    g = _graph(
        [task("setup", "true"), task("t", "sleep 0.05", targets=REGIONS[:4])],
        Rollout((1,)),
    )
    ran = runner(g, parallelism=None)
    starts = [e.key for e in ran.of(AttemptStarted)]
    # ``setup`` starts with the first wave, not after the last one.
    assert starts.index("setup") < starts.index("t@r1")


def test_quorum_over_all_waves_does_not_deadlock(runner):
    # verify@r needs ``contract``, which needs 60% of ``deploy``: more than the
    # first wave. The first wave is done once nothing of it can move: wave 2 opens.
    g = _graph(
        [
            task("deploy", "true", targets=REGIONS[:5]),
            task("contract", "true", needs=[("deploy", 3)]),
            task("verify", "true", targets=REGIONS[:5], needs=["deploy", "contract"]),
        ],
        Rollout((2,)),
    )
    ran = runner(g, parallelism=None)
    assert ran.result.status == "succeeded"


def test_phased_mode_rolls_each_phase_out_wave_by_wave(runner):
    g = _graph(
        [
            task("a", "true", targets=REGIONS[:4], phase="one"),
            task("b", "true", targets=REGIONS[:4], phase="two", needs=["a"]),
        ],
        Rollout((2,)),
    )
    g = expand(dataclasses.replace(g.plan, phases=("one", "two")))
    ran = runner(g, parallelism=None, mode="phased")
    assert ran.result.status == "succeeded"
    order = [e.key for e in ran.of(AttemptStarted)]
    assert order.index("a@r3") < order.index("b@r0")  # phase one everywhere first
    assert max(order.index("a@r0"), order.index("a@r1")) < order.index("a@r2")  # wave order


def _wave_order_holds(ran, waves, tasks):
    """Every instance of ``tasks`` on wave n's targets ended before any on wave n+1's started."""
    settled_at = {e.key: e.at for e in ran.of(InstanceSettled)}
    started_at = {e.key: e.at for e in ran.of(AttemptStarted)}
    for earlier, later in itertools.pairwise(waves):
        last_end = max(settled_at[f"{t}@{r}"] for t in tasks for r in earlier)
        first_start = min(started_at[f"{t}@{r}"] for t in tasks for r in later)
        assert last_end <= first_start, (earlier, later)


def test_a_first_wave_waiting_for_an_unfanned_setup_stays_closed_to_the_rest(runner):
    # Every target's ``x`` needs ``setup``: while setup runs, no instance of the
    # first wave can start, yet the first wave is not done.
    g = _graph(
        [task("setup", "sleep 0.1"), task("x", "sleep 0.05", targets=REGIONS[:4], needs=["setup"])],
        Rollout((1, 1.0)),
    )
    ran = runner(g, parallelism=None)
    assert ran.result.status == "succeeded"
    opened = [e for e in ran.of(WaveChanged) if e.state == "open"]
    assert [e.wave for e in opened] == [1, 2]
    setup_end = next(e.at for e in ran.of(InstanceSettled) if e.key == "setup")
    assert opened[1].at >= setup_end
    _wave_order_holds(ran, [("r0",), tuple(REGIONS[1:4])], ["x"])


def test_phased_mode_rolls_every_phase_out(runner):
    g = _graph(
        [
            task("a", "sleep 0.02", targets=REGIONS[:4], phase="one"),
            task("b", "sleep 0.02", targets=REGIONS[:4], phase="two", needs=["a"]),
        ],
        Rollout((1, 1.0)),
    )
    g = expand(dataclasses.replace(g.plan, phases=("one", "two")))
    ran = runner(g, parallelism=None, mode="phased")
    assert ran.result.status == "succeeded"
    opened = [(e.wave, e.reason) for e in ran.of(WaveChanged) if e.state == "open"]
    assert [w for w, _ in opened] == [1, 2, 1, 2]
    assert opened[2][1] == "phase two: first wave"
    # Each phase has a wave 1: every wave's event names its phase.
    assert [e.phase for e in ran.of(WaveChanged) if e.state == "open"] == [
        "one", "one", "two", "two"
    ]  # fmt: skip
    for t in ("a", "b"):
        _wave_order_holds(ran, [("r0",), tuple(REGIONS[1:4])], [t])
    order = [e.key for e in ran.of(AttemptStarted)]
    assert max(order.index(f"a@{r}") for r in REGIONS[:4]) < order.index("b@r0")


def test_pause_waits_for_promote(tmp_path):
    g = _graph([task("t", "true", targets=REGIONS[:4])], Rollout((2,), pause=True))
    control = RunControl()
    events = []
    promoted = threading.Event()

    def sub(e):
        events.append(e)
        if isinstance(e, WaveChanged) and e.state == "waiting":
            # From another thread, after a while: the run must still be waiting.
            def later():
                promoted.wait(0.3)
                control.promote()

            threading.Thread(target=later, daemon=True).start()

    async def main():
        return await run_graph(
            g,
            RunOptions(run_id="w", run_dir=tmp_path / "run", parallelism=None),
            LocalExecutor(),
            [sub],
            control=control,
        )

    result = asyncio.run(asyncio.wait_for(main(), 30))
    assert result.status == "succeeded"
    waves = [(e.wave, e.state) for e in events if isinstance(e, WaveChanged)]
    assert waves == [(1, "open"), (2, "waiting"), (2, "open")]
    waiting_at = next(e.at for e in events if isinstance(e, WaveChanged) and e.state == "waiting")
    wave2_start = min(
        e.at for e in events if isinstance(e, AttemptStarted) and e.key in ("t@r2", "t@r3")
    )
    assert wave2_start - waiting_at >= 0.25  # it waited for the promote


def test_interrupt_while_waiting_for_promote(tmp_path):
    g = _graph([task("t", "true", targets=REGIONS[:4])], Rollout((2,), pause=True))
    control = RunControl()

    def sub(e):
        if isinstance(e, WaveChanged) and e.state == "waiting":
            control.interrupt()

    async def main():
        return await run_graph(
            g,
            RunOptions(run_id="w", run_dir=tmp_path / "run", parallelism=None),
            LocalExecutor(),
            [sub],
            control=control,
        )

    result = asyncio.run(asyncio.wait_for(main(), 30))
    assert result.status == "interrupted"
    assert result.counts.get("not_started") == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("waves: [nope]", "'nope' is neither a group nor a percentage"),
        ("waves: [0]", "0 is not a wave size"),
        ("waves: [2], max_failed: lots", "'lots' is neither a count nor a percentage"),
        ("pause: true", "the rollout has no 'waves'"),
    ],
)
def test_rollout_errors(text, message):
    from fleetrun.errors import PlanError

    src = f"targets: {{a: {{}}}}\nrollout: {{{text}}}\ntasks: {{t: {{run: x}}}}\n"
    with pytest.raises(PlanError) as err:
        load_plan_text(src)
    assert message in str(err.value)
    assert "<string>:2:" in str(err.value)


def test_rollout_loads():
    p = load_plan_text(
        "targets: {a: {}, b: {}, c: {}}\ngroups: {canary: [b]}\n"
        "rollout: {waves: [canary, 1, '100%'], max_failed: '10%', pause: true}\n"
        "tasks: {t: {run: x, for_each: all}}\n"
    )
    assert p.rollout is not None
    assert p.rollout.waves == ("canary", 1, 1.0)
    assert (p.rollout.max_failed, p.rollout.max_failed_fraction, p.rollout.pause) == (
        Fraction(1, 10),
        True,
        True,
    )
    assert wave_targets(p) == [("b",), ("a",), ("c",)]
