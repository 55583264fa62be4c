"""Scheduling with real processes: caps, failure isolation, quorum, modes, order."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from fleetrun.engine import AttemptStarted, InstanceSettled
from fleetrun.engine.testing import graph, max_overlap, task
from fleetrun.plan import Pool

PY = shlex.quote(sys.executable)


def test_caps_never_exceeded_a_thousand_tasks(runner):
    # 1,000 short instances (4 tasks x 250 targets): every cap is filled
    # and refilled hundreds of times, for each mix of pools; more would repeat that.
    names = [f"t{i}" for i in range(250)]
    g = graph(
        [
            task("a", "true", targets=names, pools=["p"]),
            task("b", "true", targets=names, pools=["q"]),
            task("c", "true", targets=names, pools=["p", "q"]),
            task("d", "true", targets=names),
        ],
        pools=[Pool("p", concurrency=3), Pool("q", concurrency=2)],
    )
    ran = runner(g, parallelism=5)
    assert ran.result.counts == {"succeeded": 1000}
    iv = ran.intervals()
    assert len(iv) == 1000
    assert max_overlap([(s, e) for s, e, _ in iv]) <= 5
    in_p = [(s, e) for s, e, k in iv if k.startswith(("a@", "c@"))]
    in_q = [(s, e) for s, e, k in iv if k.startswith(("b@", "c@"))]
    assert max_overlap(in_p) <= 3
    assert max_overlap(in_q) <= 2
    # The caps were actually reached (the test can fail in both directions).
    assert max_overlap([(s, e) for s, e, _ in iv]) >= 2


def test_caps_measured_inside_the_processes(runner, tmp_path: Path):
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    script = (
        "import os,sys,time; p=sys.argv[1]; s=time.monotonic(); time.sleep(0.02); "
        "open(p,'w').write(f'{s} {time.monotonic()}')"
    )
    run = f"{PY} -c {shlex.quote(script)} {shlex.quote(str(stamps))}/{{{{ target.name }}}}"
    g = graph(
        [task("w", run, targets=[f"n{i}" for i in range(40)], pools=["p"])],
        pools=[Pool("p", concurrency=3)],
    )
    ran = runner(g, parallelism=4)
    assert ran.result.counts == {"succeeded": 40}
    iv = [tuple(map(float, f.read_text().split())) for f in stamps.iterdir()]
    assert len(iv) == 40
    assert max_overlap(iv) <= 3  # type: ignore[arg-type]


def test_failure_skips_dependents_transitively_and_the_rest_completes(runner):
    g = graph(
        [
            task("infra", "test {{ target.name }} != bad", targets=["ok", "bad"]),
            task("k8s", "true", targets=["ok", "bad"], needs=["infra"]),
            task("besu", "true", targets=["ok", "bad"], needs=["k8s"]),
            task("solo", "true"),
            task("all", "true", needs=["besu[*]"]),
        ]
    )
    ran = runner(g)
    st = ran.settled()
    assert st["infra@bad"].state == "failed"
    assert st["k8s@bad"].state == "skipped"
    assert st["k8s@bad"].reason == "needs infra@bad, which failed"
    assert st["besu@bad"].reason == "needs k8s@bad, which was skipped"
    assert st["all"].state == "skipped"
    for key in ("infra@ok", "k8s@ok", "besu@ok", "solo"):
        assert st[key].state == "succeeded"
    assert len(ran.of(InstanceSettled)) == 8
    assert ran.result.status == "failed"
    started = {e.key for e in ran.of(AttemptStarted)}
    assert "k8s@bad" not in started
    assert "all" not in started


def test_quorum_proceeds_early_and_skips_when_unreachable(runner):
    targets = ["a", "b", "c", "d"]
    run = "case {{ target.name }} in a|b) exit 0;; c) exit 1;; d) sleep 3;; esac"
    g = graph(
        [
            task("v", run, targets=targets),
            task("deploy", "true", needs=[("v", 2)]),
            task("strict", "true", needs=[("v", 4)]),
        ]
    )
    ran = runner(g)
    st = ran.settled()
    assert st["deploy"].state == "succeeded"
    assert st["strict"].state == "skipped"
    assert "needs 4 of 4 v" in st["strict"].reason or "v" in st["strict"].reason
    end_d = next(e.at for e in ran.of(InstanceSettled) if e.key == "v@d")
    start_deploy = next(e.at for e in ran.of(AttemptStarted) if e.key == "deploy")
    # deploy did not wait for the slow v@d; strict was skipped once v@c failed.
    assert start_deploy < end_d
    assert st["strict"].at < end_d


def _order(ran):
    return [e.key for e in ran.of(AttemptStarted)]


def test_critical_path_first_and_fifo(runner):
    tasks = [
        task("s", "true", targets=["1", "2", "3", "4"], estimate=1),
        task("c1", "true", estimate=1),
        task("c2", "true", needs=["c1"], estimate=1),
        task("c3", "true", needs=["c2"], estimate=1),
    ]
    ran = runner(graph(tasks), parallelism=1)
    assert _order(ran)[0] == "c1"
    ran = runner(graph(tasks), parallelism=1, priority="fifo")
    assert _order(ran)[:2] == ["s@1", "s@2"]


def test_sequential_never_overlaps(runner):
    g = graph(
        [
            task("a", "sleep 0.01", targets=["x", "y", "z"]),
            task("b", "true", targets=["x", "y", "z"], needs=["a"]),
            task("c", "true"),
        ]
    )
    ran = runner(g, mode="sequential")
    iv = ran.intervals()
    assert len(iv) == 7
    assert max_overlap([(s, e) for s, e, _ in iv]) == 1
    assert _order(ran) == ["a@x", "a@y", "a@z", "b@x", "b@y", "b@z", "c"]


def test_phased_barrier_vs_dag_pipelining(runner):
    tasks = [
        task("a", "case {{ target.name }} in y) sleep 0.6;; esac", targets=["x", "y"], phase="one"),
        task("b", "true", targets=["x", "y"], needs=["a"], phase="two"),
    ]
    phased = runner(graph(tasks, phases=["one", "two"]), mode="phased")
    iv = {k: (s, e) for s, e, k in phased.intervals()}
    assert iv["b@x"][0] >= iv["a@y"][1]
    dag = runner(graph(tasks, phases=["one", "two"]), mode="dag")
    iv = {k: (s, e) for s, e, k in dag.intervals()}
    assert iv["b@x"][0] < iv["a@y"][1]


def test_fail_fast_stop_and_kill(runner):
    tasks = [
        task("bad", "exit 1"),
        task("slow", "sleep 1"),
        task("later", "true", targets=[str(i) for i in range(5)], needs=["bad[*]", "slow"]),
        task("other", "true", targets=[str(i) for i in range(5)]),
    ]
    ran = runner(graph(tasks), parallelism=2, fail_fast="stop")
    st = ran.settled()
    assert st["bad"].state == "failed"
    assert st["slow"].state == "succeeded"  # running work finishes
    assert sum(1 for e in st.values() if e.state == "not_started") == 5
    assert all(st[f"later@{i}"].state == "skipped" for i in range(5))
    ran = runner(graph(tasks), parallelism=2, fail_fast="kill")
    st = ran.settled()
    assert st["slow"].state == "cancelled"
    assert ran.result.status == "failed"


def test_durable_runs_before_dependents_start(runner):
    log: list[str] = []

    async def durable() -> None:
        log.append("durable")

    def hook(e):
        if isinstance(e, InstanceSettled):
            log.append(f"settled {e.key}")
        elif isinstance(e, AttemptStarted):
            log.append(f"started {e.key}")

    g = graph(
        [task("a", "true", targets=["x", "y"]), task("b", "true", targets=["x", "y"], needs=["a"])]
    )
    ran = runner(g, hook=hook, durable=durable)
    assert ran.result.status == "succeeded"
    for t in ("x", "y"):
        i_settle = log.index(f"settled a@{t}")
        i_start = log.index(f"started b@{t}")
        assert "durable" in log[i_settle:i_start]
    assert log.count("durable") <= 4


def test_rate_limited_pool_paces_starts_through_the_clock(runner):
    from fleetrun.engine.testing import FakeClock

    clock = FakeClock()
    g = graph(
        [task("t", "true", targets=[str(i) for i in range(6)], pools=["api"])],
        pools=[Pool("api", rate=10.0, burst=1)],
    )
    ran = runner(g, clock=clock)
    assert ran.result.counts == {"succeeded": 6}
    # 6 starts at 10/s with a burst of 1: at least 0.5 s of (fake) waiting.
    assert sum(clock.sleeps) >= 0.5 - 1e-9
    assert all(s <= 0.1 + 1e-9 for s in clock.sleeps)


def test_out_of_run_and_reused_requirements(runner):
    g = graph(
        [
            task("a", "exit 1"),
            task("b", "echo {{ tasks.a.outputs.k }}", needs=["a"]),
            task("c", "true", needs=["a"]),
        ]
    )
    ran = runner(g, only=frozenset({1}), reused={0: {"k": "v"}})
    assert ran.result.states == {0: "reused", 1: "succeeded"}
    assert [e.key for e in ran.of(InstanceSettled)] == ["b"]
    ran = runner(g, only=frozenset({2}))
    assert ran.settled()["c"].reason == "needs a, which is not part of this run"


def test_an_output_never_published_fails_the_dependent_with_the_reason(runner):
    # a succeeds but publishes only "tag"; b's command needs a's "image".
    g = graph(
        [
            task("a", 'echo tag=1 >> "$FLEETRUN_OUTPUT"'),
            task("b", "echo {{ tasks.a.outputs.image }}", needs=["a"]),
        ]
    )
    ran = runner(g)
    assert ran.result.states == {0: "succeeded", 1: "failed"}
    b = ran.settled()["b"]
    # Nothing ran for b: no attempt is counted, and the reason says what is missing.
    assert b.attempts == 0
    assert [e.key for e in ran.of(AttemptStarted)] == ["a"]
    assert b.reason == (
        "cannot render the command: no value for tasks.a.outputs.image (a published only "
        "tag; a task publishes key=value lines to $FLEETRUN_OUTPUT)"
    )
