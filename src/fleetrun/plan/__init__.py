"""Plan files -> validated model -> expanded task graph. Pure: no I/O beyond reading files."""

from fleetrun.plan._expand import dependents_closure, expand, select
from fleetrun.plan._graph import Graph, Node, Requirement
from fleetrun.plan._loader import load_plan, load_plan_text
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
    Target,
    Task,
    ThrottleRule,
)
from fleetrun.plan._pools import Bucket, StaticLimits, pools_of_tasks
from fleetrun.plan._resolve import (
    Placeholders,
    attempt_env,
    dep_outputs,
    is_per_attempt,
    render_command,
    task_env,
)
from fleetrun.plan._rollout import allowed_failures, wave_targets
from fleetrun.plan._schema import plan_json_schema
from fleetrun.plan._simulate import MODES, phase_layers, simulate
from fleetrun.plan._template import Ref, Template

__all__ = [
    "ALL_TARGETS",
    "MODES",
    "RUNS_ON",
    "AdaptiveSettings",
    "Bucket",
    "Graph",
    "Need",
    "Node",
    "Placeholders",
    "Plan",
    "Pool",
    "Ref",
    "Requirement",
    "RetryPolicy",
    "Rollout",
    "Scalar",
    "StaticLimits",
    "Target",
    "Task",
    "Template",
    "ThrottleRule",
    "allowed_failures",
    "attempt_env",
    "dep_outputs",
    "dependents_closure",
    "expand",
    "is_per_attempt",
    "load_plan",
    "load_plan_text",
    "phase_layers",
    "plan_json_schema",
    "pools_of_tasks",
    "render_command",
    "select",
    "simulate",
    "task_env",
    "wave_targets",
]
