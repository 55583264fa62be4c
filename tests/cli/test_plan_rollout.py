"""``fleetrun plan`` on a plan with ``rollout``: the waves and the makespan they
make, in text and JSON, through the real CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ._helpers import fleetrun

# Per target a chain of two 1-minute tasks; waves [1, "100%"]: a first, then b and
# c. setup (needing nothing) is not held; report runs after every wave.
PLAN = """\
name: rolling
targets: {a: {}, b: {}, c: {}}
rollout: {waves: [1, "100%"], max_failed: 1, pause: true}
tasks:
  setup: {run: "true", estimate: 1m}
  x: {for_each: all, run: "true", estimate: 1m}
  y: {for_each: all, needs: [x], run: "true", estimate: 1m}
  report: {needs: [y], run: "true", estimate: 1m}
"""

# Twelve targets; a wave of six: the text view names five and counts the rest.
TARGETS = ", ".join(f"t{i}: {{}}" for i in range(12))
WIDE = f"""\
name: wide
targets: {{{TARGETS}}}
groups: {{canary: [t11]}}
rollout: {{waves: [canary, 1, "50%"], max_failed: "25%"}}
tasks:
  x: {{for_each: all, run: "true"}}
"""


def _plan(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    return path


def test_text_shows_the_waves_and_the_makespan_with_and_without(tmp_path: Path) -> None:
    res = fleetrun("plan", str(_plan(tmp_path, PLAN)))
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "levels (3; a level starts when what it needs has finished)" in out
    assert "waves (" not in out
    section = out.split("\nrollout (", 1)[1].split("\n\n", 1)[0].splitlines()
    assert section == [
        "2 waves over 3 targets, sizes [1, 100%])",
        "  max_failed 1 per wave; pause: each next wave waits for fleetrun promote",
        "  wave 1   1 target   a",
        "  wave 2   2 targets  b, c",
        "  2 instances of tasks not fanned over targets: not held by waves",
    ]
    makespan = out.split("\nestimated makespan at ", 1)[1].splitlines()
    assert makespan[0] == (
        "unbounded parallelism (from estimates; the rollout as if no wave halts it"
        " and each is promoted at once)"
    )
    # Wave 1: x@a, y@a (2m), then wave 2: b and c (2m), then report: 5m; 3m without.
    assert re.fullmatch(r"\s+rollout\s+without", makespan[1])
    assert re.fullmatch(r"\s+dag\s+5m\s+3m", makespan[4])
    assert re.fullmatch(r"\s+phased\s+5m\s+3m", makespan[3])
    assert re.fullmatch(r"\s+sequential\s+8m\s+8m", makespan[2])
    assert re.fullmatch(r"\s+lower bound\s+3m\s+\(max of critical path 3m\)", makespan[5])


def test_json_has_the_rollout_and_levels(tmp_path: Path) -> None:
    res = fleetrun("plan", str(_plan(tmp_path, PLAN)), "-j", "2", "--format", "json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["format"] == "fleetrun.plan/2"
    assert data["levels"] == [
        ["setup", "x@a", "x@b", "x@c"],
        ["y@a", "y@b", "y@c"],
        ["report"],
    ]
    assert {n["key"]: n["level"] for n in data["nodes"]}["y@b"] == 1
    assert "waves" not in data
    assert all("wave" not in n for n in data["nodes"])
    # -j 2: x@a and setup, y@a; then x@b, x@c and y@b, y@c; report: 5m. Without
    # the rollout the two slots are never idle: 8m of work / 2.
    assert data["makespan"] == {
        "sequential": 480.0,
        "phased": 300.0,
        "dag": 300.0,
        "lower_bound": 240.0,
    }
    assert data["rollout"] == {
        "waves": [["a"], ["b", "c"]],
        "sizes": [1, "100%"],
        "max_failed": 1,
        "pause": True,
        "makespan_without_rollout": {"sequential": 480.0, "phased": 240.0, "dag": 240.0},
    }


def test_many_targets_are_abbreviated_and_a_plan_without_rollout_has_none(
    tmp_path: Path,
) -> None:
    wide = _plan(tmp_path, WIDE)
    out = fleetrun("plan", str(wide)).stdout
    section = out.split("\nrollout (", 1)[1].split("\n\n", 1)[0].splitlines()
    # canary (t11); 1 (t0); 50% of 12 = 6, repeating: t1..t6, then t7..t10.
    assert section == [
        "4 waves over 12 targets, sizes [canary, 1, 50%])",
        "  max_failed 25% of each wave; no pause",
        "  wave 1   1 target   t11",
        "  wave 2   1 target   t0",
        "  wave 3   6 targets  t1, t2, t3, t4, t5, ... (1 more)",
        "  wave 4   4 targets  t7, t8, t9, t10",
    ]
    data = json.loads(fleetrun("plan", str(wide), "--format", "json").stdout)
    assert data["rollout"]["waves"] == [
        ["t11"],
        ["t0"],
        ["t1", "t2", "t3", "t4", "t5", "t6"],
        ["t7", "t8", "t9", "t10"],
    ]
    assert data["makespan"]["dag"] == 4.0  # four waves of 1 s
    assert data["rollout"]["makespan_without_rollout"]["dag"] == 1.0

    (tmp_path / "plain.yaml").write_text(
        WIDE.replace('rollout: {waves: [canary, 1, "50%"], max_failed: "25%"}\n', "")
    )
    plain = fleetrun("plan", str(tmp_path / "plain.yaml"))
    assert "rollout" not in plain.stdout
    assert re.search(r"^  dag          1s$", plain.stdout, re.M)
    data = json.loads(fleetrun("plan", str(tmp_path / "plain.yaml"), "--format", "json").stdout)
    assert data["rollout"] is None
