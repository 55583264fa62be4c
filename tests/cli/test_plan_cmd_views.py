"""``fleetrun plan``: every task with its instance count, empty fleets, quorums in
numbers, and selection previews (``--targets``/``--tasks``), through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleetrun.errors import PlanError, UsageError
from fleetrun.plan import (
    empty_tasks,
    empty_tasks_error,
    expand,
    load_plan,
    select,
    selection_closure,
    split_names,
)

from ._helpers import fleetrun

PLAN = """\
targets:
  a: {role: v}
  b: {role: v}
  c: {role: v}
  d: {role: v}
  e: {role: v}
  f: {role: v}
  "eu,west": {role: admin}
groups:
  validators: {where: "role == 'v'"}
  nobody: {where: "role == 'typo'"}
tasks:
  infra: {for_each: validators, run: "echo {{ target.name }}"}
  besu: {for_each: validators, needs: [infra], run: "echo {{ target.name }}"}
  multicall: {needs: [{task: besu, at_least: "67%"}], run: echo m}
  pair: {needs: [{task: besu, at_least: 2}], run: echo p}
  verify: {for_each: validators, needs: [besu, multicall], run: "echo {{ target.name }}"}
  mon: {for_each: all, run: "echo {{ target.name }}"}
  ghost: {for_each: nobody, run: echo never}
  maybe: {for_each: nobody, allow_empty: true, run: echo never}
"""


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN)
    return path


def _task_lines(stdout: str) -> dict[str, str]:
    section = stdout.split("tasks (instances, for_each, needs)\n", 1)[1].split("\n\n", 1)[0]
    return {line.split()[0]: " ".join(line.split()[1:]) for line in section.splitlines()}


def test_every_task_is_listed_with_its_instance_count_and_quorums_as_numbers(
    plan_file: Path,
) -> None:
    proc = fleetrun("plan", str(plan_file))
    assert proc.returncode == 0, proc.stderr
    rows = _task_lines(proc.stdout)
    assert list(rows) == ["infra", "besu", "multicall", "pair", "verify", "mon", "ghost", "maybe"]
    assert rows["infra"] == "6 for_each validators"
    assert rows["besu"] == "6 for_each validators needs infra (same target)"
    # 67% of 6 is 4.02: rounded up to 5.
    assert rows["multicall"] == "1 needs besu: at least 5 of 6 (67%)"
    assert rows["pair"] == "1 needs besu: at least 2 of 6"
    assert rows["verify"] == "6 for_each validators needs besu (same target), multicall"
    assert rows["mon"] == "7 for_each all"
    assert rows["ghost"] == "0 for_each nobody ! no target matches: apply refuses this task"
    assert rows["maybe"] == "0 for_each nobody (allowed to be empty)"


def test_zero_instance_tasks_warn_with_file_line_and_fix(plan_file: Path) -> None:
    proc = fleetrun("plan", str(plan_file))
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: {plan_file}:19:3: task 'ghost' has no instances: its for_each group "
        "'nobody' matches no target, so nothing of it would run; apply will refuse it"
    ]
    assert "add allow_empty: true to the task" in proc.stderr
    assert f"note: {plan_file}:20:3: task 'maybe' has 0 instances" in proc.stderr


def test_empty_tasks_and_the_error_apply_raises(plan_file: Path) -> None:
    graph = expand(load_plan(plan_file))
    assert empty_tasks(graph) == ["ghost"]
    error = empty_tasks_error(graph)
    assert isinstance(error, PlanError)
    assert error.exit_code == 2
    (diag,) = error.diagnostics
    assert str(diag.location) == f"{plan_file}:19:3"
    assert diag.key == "tasks.ghost.for_each"
    assert "group 'nobody' matches no target" in diag.message
    assert "allow_empty: true" in diag.fix


def test_no_error_when_every_empty_task_allows_it(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN.replace("  ghost: {for_each: nobody, run: echo never}\n", ""))
    graph = expand(load_plan(path))
    assert empty_tasks(graph) == []
    assert empty_tasks_error(graph) is None


def test_allow_empty_needs_for_each(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text("tasks:\n  t: {allow_empty: true, run: echo}\n")
    proc = fleetrun("plan", str(path))
    assert proc.returncode == 2
    assert f"{path}:2:20: tasks.t.allow_empty: allow_empty applies only to a task" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_selection_says_what_it_pulls_in_and_why(plan_file: Path) -> None:
    graph = expand(load_plan(plan_file))
    nodes, extras = selection_closure(graph, ["c"], ["verify"])
    keys = {graph.nodes[i].key: extras.get(i) for i in nodes}
    assert keys == {
        "verify@c": None,
        "besu@c": "needed by verify@c",
        "multicall": "needed by verify@c",
        "infra@c": "needed by besu@c",
        **{f"besu@{t}": "needed by multicall (quorum of besu: at least 5 of 6)" for t in "abdef"},
        **{f"infra@{t}": f"needed by besu@{t}" for t in "abdef"},
    }
    # select keeps answering the same set.
    assert select(graph, ["c"], ["verify"]) == nodes


def test_plan_targets_prints_the_extra_instances(plan_file: Path) -> None:
    proc = fleetrun("plan", str(plan_file), "--targets", "c", "--tasks", "verify")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "selection: 1 named instance, 13 more that they need, 14 of 27 in all" in lines
    assert "  named: verify@c" in lines
    assert "  also runs (apply --only would refuse them):" in lines
    assert "    besu@a     needed by multicall (quorum of besu: at least 5 of 6)" in lines
    assert "    multicall  needed by verify@c" in lines
    data = json.loads(
        fleetrun(
            "plan", str(plan_file), "--targets", "c", "--tasks", "verify", "--format", "json"
        ).stdout
    )
    assert data["selection"]["named"] == ["verify@c"]
    assert data["instances"] == {
        "infra": 6,
        "besu": 6,
        "multicall": 1,
        "pair": 1,
        "verify": 6,
        "mon": 7,
        "ghost": 0,
        "maybe": 0,
    }
    assert data["selection"]["also"]["infra@a"] == "needed by besu@a"
    assert len(data["selection"]["also"]) == 13


def test_a_target_name_with_a_comma_is_selectable(plan_file: Path) -> None:
    proc = fleetrun("plan", str(plan_file), "--targets", "eu,west", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["selection"]["named"] == ["mon@eu,west"]
    # Comma-splitting still works for other values.
    proc = fleetrun("plan", str(plan_file), "--targets", "a,b", "--tasks", "mon")
    assert "  named: mon@a, mon@b" in proc.stdout.splitlines()


def test_split_names_takes_a_known_name_whole() -> None:
    known = {"eu,west", "a", "b"}
    assert split_names(["eu,west"], known) == ["eu,west"]
    assert split_names(["a,b", " eu,west "], known) == ["a", "b", "eu,west"]
    assert split_names(["a,,b,"]) == ["a", "b"]
    assert split_names([]) is None


def test_unknown_selection_is_one_line_and_exit_2(plan_file: Path) -> None:
    proc = fleetrun("plan", str(plan_file), "--targets", "zz")
    assert proc.returncode == 2
    assert "error: unknown target or group 'zz'" in proc.stderr
    assert "Traceback" not in proc.stderr
    with pytest.raises(UsageError, match="no task instance matches"):
        selection_closure(expand(load_plan(plan_file)), ["eu,west"], ["infra"])
