"""The makespan estimate of ``runs_on: cluster`` tasks: one job per worker at a time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fleetrun.cli import cli
from fleetrun.plan import expand, load_plan_text, simulate

# setup (here, 1 s) -> prove over four blocks (on the cluster, 2 s each) -> sum (here, 1 s);
# note over the same four blocks (here, 2 s), needing nothing.
PLAN = """\
name: batch
{cluster}
targets: {{b1: {{}}, b2: {{}}, b3: {{}}, b4: {{}}}}
tasks:
  setup: {{run: 'true', estimate: 1s}}
  prove: {{run: 'true', for_each: all, needs: [setup], runs_on: cluster, estimate: 2s}}
  sum: {{run: 'true', needs: [prove], estimate: 1s}}
  note: {{run: 'true', for_each: all, estimate: 2s}}
"""


def _graph(cluster: str = "") -> object:
    return expand(load_plan_text(PLAN.format(cluster=cluster)))


@pytest.mark.parametrize(
    ("workers", "makespan"),
    [
        (1, 10.0),  # 1 + 4 x 2 + 1: the jobs one after another
        (2, 6.0),  # 1 + 2 x 2 + 1
        (4, 4.0),  # 1 + 2 + 1: every job at once
        (8, 4.0),  # more workers than jobs change nothing
    ],
)
def test_cluster_jobs_run_one_per_worker(workers: int, makespan: float) -> None:
    g = _graph()
    assert simulate(g, "dag", None, cluster_workers=workers) == makespan  # type: ignore[arg-type]
    assert simulate(g, "phased", None, cluster_workers=workers) == makespan  # type: ignore[arg-type]
    # Sequential runs one instance at a time anyway.
    assert simulate(g, "sequential", None, cluster_workers=workers) == 18.0  # type: ignore[arg-type]


def test_the_plans_cluster_workers_is_the_default() -> None:
    assert simulate(_graph(), "dag", None) == 6.0  # type: ignore[arg-type]  # 2 when unset
    one = _graph("cluster: {workers: 1}")
    assert simulate(one, "dag", None) == 10.0  # type: ignore[arg-type]
    assert simulate(one, "dag", None, cluster_workers=2) == 6.0  # type: ignore[arg-type]


def test_a_job_waiting_for_a_worker_holds_back_no_local_task() -> None:
    # -j 2 with one worker: the second slot goes to the local notes while the jobs
    # wait for the worker (setup 1, then prove, prove | note x4 beside, ...).
    g = _graph("cluster: {workers: 1}")
    assert simulate(g, "dag", 2) == 10.0  # type: ignore[arg-type]
    # Without the worker cap, -j 2 alone: 9.
    assert simulate(g, "dag", 2, cluster_workers=4) == 9.0  # type: ignore[arg-type]


def _plan_json(tmp_path: Path, *args: str) -> dict[str, object]:
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN.format(cluster="cluster: {workers: 1}"))
    res = CliRunner().invoke(cli, ["plan", str(plan), "--format", "json", *args])
    assert res.exit_code == 0, res.output
    data: dict[str, object] = json.loads(res.output)
    return data


def test_plan_cluster_workers_flag(tmp_path: Path) -> None:
    assert _plan_json(tmp_path)["makespan"]["dag"] == 10.0  # type: ignore[index]
    assert _plan_json(tmp_path, "--cluster-workers", "2")["makespan"]["dag"] == 6.0  # type: ignore[index]


def test_lower_bound_counts_the_clusters_workers(tmp_path: Path) -> None:
    # Cluster work 4 x 2 s: on one worker at least 8 s; the critical path is 4 s.
    assert _plan_json(tmp_path)["makespan"]["lower_bound"] == 8.0  # type: ignore[index]
    two = _plan_json(tmp_path, "--cluster-workers", "2")
    assert two["makespan"]["lower_bound"] == 4.0  # type: ignore[index]
    # -j 1: all the work (1 + 8 + 1 + 8 s) one after another.
    assert _plan_json(tmp_path, "-j", "1")["makespan"]["lower_bound"] == 18.0  # type: ignore[index]
    plan = tmp_path / "plan.yaml"
    res = CliRunner().invoke(cli, ["plan", str(plan), "--cluster-workers", "1"])
    assert res.exit_code == 0, res.output
    assert "lower bound  8s  (max of critical path 4s, cluster work 8s / 1)" in res.output


@pytest.mark.parametrize("value", ["0", "-3"])
def test_plan_cluster_workers_below_one_is_one_line(tmp_path: Path, value: str) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN.format(cluster=""))
    res = CliRunner().invoke(cli, ["plan", str(plan), "--cluster-workers", value])
    assert res.exit_code == 2
    assert res.output.splitlines() == [
        f"error: --cluster-workers {value}: a cluster runs jobs on at least 1 worker; "
        "give the number of workers it has"
    ]
