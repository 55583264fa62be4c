"""The schema's defaults are what the loader gives a key left out."""

from __future__ import annotations

from pathlib import Path

from fleetrun.plan import load_plan, plan_json_schema


def test_the_schema_says_the_defaults_the_loader_applies(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "pools: {p: {rate: 2/s, adaptive: true, throttle: {exit: [75]}}}\n"
        "rollout: {waves: [1]}\n"
        "targets: {a: {}}\n"
        "tasks:\n  t: {run: 'true', for_each: all, pools: [p]}\n"
    )
    loaded = load_plan(plan)
    defs = plan_json_schema()["$defs"]

    def default(section: str, key: str) -> object:
        return defs[section]["properties"][key]["default"]

    task = loaded.tasks["t"]
    assert task.estimate == default("TaskSpec", "estimate")
    assert task.runs_on == default("TaskSpec", "runs_on")
    for key in ("attempts", "backoff", "max_backoff"):
        assert getattr(task.retry, key) == default("RetrySpec", key)
    pool = loaded.pools["p"]
    assert pool.burst == default("PoolSpec", "burst")
    assert pool.adaptive is not None
    assert pool.throttle is not None
    for key in defs["AdaptiveSpec"]["properties"]:
        assert getattr(pool.adaptive, key) == default("AdaptiveSpec", key), key
    assert pool.throttle.attempts == default("ThrottleSpec", "attempts")
    assert loaded.rollout is not None
    assert loaded.rollout.max_failed == default("RolloutSpec", "max_failed")
    assert loaded.rollout.pause == default("RolloutSpec", "pause")
    assert loaded.cluster.workers == default("ClusterSpec", "workers")
