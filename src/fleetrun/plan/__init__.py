"""Plan files -> validated model -> expanded task graph. Pure: no I/O beyond reading files.

The reading side (the loader, the schema's pydantic models, YAML) loads on first
use: a program that only handles a graph or a record (``fleetrun show``, the
engine, the journal) does not pay for it."""

from typing import TYPE_CHECKING

from fleetrun._lazy import lazy_names
from fleetrun.plan._expand import dependents_closure, expand, quorum_size
from fleetrun.plan._graph import Graph, Node, Requirement
from fleetrun.plan._model import (
    ALL_TARGETS,
    RUNS_ON,
    AdaptiveSettings,
    Need,
    Plan,
    Pool,
    RetryPolicy,
    Rollout,
    Scalar,
    SuccessPolicy,
    Target,
    Task,
    ThrottleRule,
)
from fleetrun.plan._pattern import PATTERN_HELP
from fleetrun.plan._pools import Bucket, StaticLimits, pools_of_tasks
from fleetrun.plan._render import render_dot, render_json, render_mermaid, render_text
from fleetrun.plan._resolve import (
    MissingValueError,
    OutputNameClash,
    Placeholders,
    attempt_env,
    dep_outputs,
    is_per_attempt,
    render_command,
    task_env,
)
from fleetrun.plan._rollout import (
    Waves,
    allowed_failures,
    percent_text,
    wave_done,
    wave_size,
    wave_targets,
)
from fleetrun.plan._select import select, selection_closure, selection_lines, split_names
from fleetrun.plan._simulate import MODES, phase_layers, simulate, simulate_remaining
from fleetrun.plan._summary import (
    empty_tasks,
    empty_tasks_error,
    empty_warnings,
    quorum_text,
    task_rows,
)
from fleetrun.plan._template import Ref, Template
from fleetrun.plan._units import parse_duration, parse_rate

if TYPE_CHECKING:
    from fleetrun.plan._adhoc import EXEC_TASK, ExecRequest, exec_plan, is_fleet_file
    from fleetrun.plan._fields import did_you_mean
    from fleetrun.plan._loader import load_plan, load_plan_text
    from fleetrun.plan._readfile import MAX_FILE_BYTES, UnreadableFile, read_bounded
    from fleetrun.plan._spec import plan_json_schema
    from fleetrun.plan._varfile import parse_var_args, read_var_file

_LAZY = {
    "EXEC_TASK": "_adhoc",
    "ExecRequest": "_adhoc",
    "exec_plan": "_adhoc",
    "is_fleet_file": "_adhoc",
    "did_you_mean": "_fields",
    "load_plan": "_loader",
    "load_plan_text": "_loader",
    "plan_json_schema": "_spec",
    "MAX_FILE_BYTES": "_readfile",
    "UnreadableFile": "_readfile",
    "read_bounded": "_readfile",
    "parse_var_args": "_varfile",
    "read_var_file": "_varfile",
}
"""The names of the reading side -> the module that defines each."""


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())


__all__ = [
    "ALL_TARGETS",
    "EXEC_TASK",
    "MAX_FILE_BYTES",
    "MODES",
    "PATTERN_HELP",
    "RUNS_ON",
    "AdaptiveSettings",
    "Bucket",
    "ExecRequest",
    "Graph",
    "MissingValueError",
    "Need",
    "Node",
    "OutputNameClash",
    "Placeholders",
    "Plan",
    "Pool",
    "Ref",
    "Requirement",
    "RetryPolicy",
    "Rollout",
    "Scalar",
    "StaticLimits",
    "SuccessPolicy",
    "Target",
    "Task",
    "Template",
    "ThrottleRule",
    "UnreadableFile",
    "Waves",
    "allowed_failures",
    "attempt_env",
    "dep_outputs",
    "dependents_closure",
    "did_you_mean",
    "empty_tasks",
    "empty_tasks_error",
    "empty_warnings",
    "exec_plan",
    "expand",
    "is_fleet_file",
    "is_per_attempt",
    "load_plan",
    "load_plan_text",
    "parse_duration",
    "parse_rate",
    "parse_var_args",
    "percent_text",
    "phase_layers",
    "plan_json_schema",
    "pools_of_tasks",
    "quorum_size",
    "quorum_text",
    "read_bounded",
    "read_var_file",
    "render_command",
    "render_dot",
    "render_json",
    "render_mermaid",
    "render_text",
    "select",
    "selection_closure",
    "selection_lines",
    "simulate",
    "simulate_remaining",
    "split_names",
    "task_env",
    "task_rows",
    "wave_done",
    "wave_size",
    "wave_targets",
]
