"""Plan files -> validated model -> expanded task graph. Pure: no I/O beyond reading files."""

from fleetrun.plan._expand import dependents_closure, expand, quorum_size
from fleetrun.plan._graph import Graph, Node, Requirement
from fleetrun.plan._loader import load_plan, load_plan_text
from fleetrun.plan._model import ALL_TARGETS, Need, Plan, Pool, RetryPolicy, Target, Task
from fleetrun.plan._schema import plan_json_schema
from fleetrun.plan._select import select, selection_closure, selection_lines, split_names
from fleetrun.plan._simulate import simulate
from fleetrun.plan._summary import (
    empty_tasks,
    empty_tasks_error,
    empty_warnings,
    quorum_text,
    task_rows,
)
from fleetrun.plan._template import Ref, Template

__all__ = [
    "ALL_TARGETS",
    "Graph",
    "Need",
    "Node",
    "Plan",
    "Pool",
    "Ref",
    "Requirement",
    "RetryPolicy",
    "Target",
    "Task",
    "Template",
    "dependents_closure",
    "empty_tasks",
    "empty_tasks_error",
    "empty_warnings",
    "expand",
    "load_plan",
    "load_plan_text",
    "plan_json_schema",
    "quorum_size",
    "quorum_text",
    "select",
    "selection_closure",
    "selection_lines",
    "simulate",
    "split_names",
    "task_rows",
]
