"""Outputs of two required tasks that a command would see as one variable.

Task ``a`` with key ``b_c`` and task ``a_b`` with key ``c`` both reach a
dependent as ``FLEETRUN_OUTPUT_A_B_C``: one value would be lost, so the
dependent's attempt is refused with one line naming both outputs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetrun.plan import OutputNameClash, attempt_env, expand, load_plan_text

from ._helpers import fleetrun, show_json

PLAN = """\
tasks:
  a: {run: 'echo b_c=from-a >> "$FLEETRUN_OUTPUT"'}
  a_b: {run: 'echo c=from-a_b >> "$FLEETRUN_OUTPUT"'}
  use: {needs: [a, a_b], run: 'echo "$FLEETRUN_OUTPUT_A_B_C"'}
"""


def test_two_outputs_meeting_on_one_variable_fail_the_dependent_naming_both(
    tmp_path: Path,
) -> None:
    plan = tmp_path / "p.yaml"
    plan.write_text(PLAN)
    state = tmp_path / "st"
    res = fleetrun("apply", str(plan), "--state-dir", str(state), "--plain")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    states = {i["key"]: (i["status"], i["reason"]) for i in show_json(state)["instances"]}
    assert states["a"][0] == states["a_b"][0] == "succeeded"
    status, reason = states["use"]
    assert status == "failed"
    assert reason == (
        "cannot set the command's environment: tasks.a.outputs.b_c and "
        "tasks.a_b.outputs.c would both be $FLEETRUN_OUTPUT_A_B_C: "
        "rename one of the keys so their variables differ"
    )
    assert "\n" not in reason
    assert not list(state.rglob("use*.log"))  # never started


def test_attempt_env_sets_each_output_once_and_refuses_a_meeting() -> None:
    graph = expand(load_plan_text(PLAN))
    use = next(node for node in graph.nodes if node.key == "use")
    env = attempt_env("r", use, 1, "/o", {"a": {"x": "1"}, "a_b": {"c": "2"}})
    assert (env["FLEETRUN_OUTPUT_A_X"], env["FLEETRUN_OUTPUT_A_B_C"]) == ("1", "2")
    with pytest.raises(OutputNameClash) as err:
        attempt_env("r", use, 1, "/o", {"a": {"b_c": "1"}, "a_b": {"c": "2"}})
    assert (err.value.first, err.value.second) == ("tasks.a.outputs.b_c", "tasks.a_b.outputs.c")
    assert err.value.name == "FLEETRUN_OUTPUT_A_B_C"
