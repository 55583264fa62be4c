"""Executor options: every kind's class is typed and frozen, every option type has its
model type and is described in the schema, and a key is read through its task's kind."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from fleetrun.errors import PlanError
from fleetrun.plan import load_plan, load_plan_text, plan_json_schema
from fleetrun.plan._options import OPTION_KEYS
from fleetrun.plan._spec import OPTION_TYPES, SSHSpec, TaskSpec, keys_of
from fleetrun.plan._tasks import TASK_KEYS
from fleetrun.runs_on import (
    KINDS,
    RUNS_ON,
    SSH_KEYS,
    ExecutorOptions,
    LocalOptions,
    OptionType,
    SSHOptions,
    option_keys,
)


def test_each_kind_declares_a_frozen_options_class() -> None:
    assert RUNS_ON == ("local", "ssh", "cluster")
    for kind in KINDS.values():
        assert issubclass(kind.options, ExecutorOptions)
        opts = kind.options()
        with pytest.raises(dataclasses.FrozenInstanceError):
            opts.script = None  # type: ignore[misc]
    assert {k: [o.name for o in c.options.owned_keys()] for k, c in KINDS.items()} == {
        "local": ["keep_running"],
        "ssh": [],
        "cluster": ["resources"],
    }


def test_every_option_type_is_read_and_in_the_schema() -> None:
    assert set(OPTION_TYPES) == set(typing.get_args(OptionType))
    schema = plan_json_schema()
    ref = schema["properties"]["tasks"]["additionalProperties"]["$ref"]
    task = schema["$defs"][ref.rsplit("/", 1)[1]]["properties"]
    for name, (decl, owners) in option_keys().items():
        assert name in TASK_KEYS
        assert task[name]["description"].startswith(f"(runs_on: {' or '.join(owners)}) ")
        assert TaskSpec.model_fields[name].annotation == OPTION_TYPES[decl.type] | None
    assert OPTION_KEYS == ("keep_running", "resources")
    assert task["runs_on"]["enum"] == list(RUNS_ON)


def test_a_script_task_hands_its_script_to_its_kind(tmp_path: Path) -> None:
    (tmp_path / "s.sh").write_text("echo hi\n")
    (tmp_path / "plan.yaml").write_text(
        "targets: {a: {}}\n"
        "tasks:\n"
        "  here: {script: s.sh, keep_running: true}\n"
        "  there: {script: s.sh x, runs_on: ssh, for_each: all}\n"
    )
    plan = load_plan(tmp_path / "plan.yaml")
    here, there = plan.tasks["here"], plan.tasks["there"]
    assert here.script is not None
    assert there.script is not None
    assert here.executor_options == LocalOptions(script=here.script, keep_running=True)
    assert there.executor_options == SSHOptions(script=there.script)
    assert there.executor_options.script is not None
    assert there.executor_options.script.text == "echo hi\n"


def test_a_task_built_without_options_gets_its_kinds_defaults() -> None:
    plan = load_plan_text("tasks:\n  a: {run: x}\n")
    t = dataclasses.replace(plan.tasks["a"], runs_on="ssh", options=None)
    assert t.executor_options == SSHOptions()
    # Options of another kind than the task's are a programming error, said plainly.
    wrong = dataclasses.replace(plan.tasks["a"], runs_on="ssh", options=LocalOptions())
    with pytest.raises(TypeError, match="SSHOptions expected, got LocalOptions"):
        _ = wrong.executor_options


def test_keep_running_on_an_ssh_task_is_a_plan_error() -> None:
    with pytest.raises(PlanError) as e:
        load_plan_text(
            "targets: {a: {}}\ntasks:\n  s: {run: x, runs_on: ssh, for_each: all, "
            "keep_running: true}\n"
        )
    assert e.value.exit_code == 2
    assert [str(d) for d in e.value.diagnostics] == [
        "<string>:3:58: tasks.s.keep_running: keep_running is read only by runs_on: local; "
        "this task runs on ssh\n    fix: remove keep_running, or set runs_on: local"
    ]


def test_the_models_hold_every_kinds_keys() -> None:
    # The task model and the SSH settings model name the keys fleetrun.runs_on declares.
    assert set(OPTION_KEYS) <= set(keys_of(TaskSpec))
    assert keys_of(SSHSpec) == SSH_KEYS
