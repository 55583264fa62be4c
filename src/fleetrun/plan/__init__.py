"""Plan files -> validated model -> expanded task graph. Pure: no I/O beyond reading files."""

from fleetrun.plan._adhoc import EXEC_TASK, ExecRequest, exec_plan, is_fleet_file
from fleetrun.plan._expand import dependents_closure, expand, select
from fleetrun.plan._graph import Graph, Node, Requirement
from fleetrun.plan._loader import load_plan, load_plan_text
from fleetrun.plan._model import ALL_TARGETS, Need, Plan, Pool, RetryPolicy, Target, Task
from fleetrun.plan._schema import plan_json_schema
from fleetrun.plan._simulate import simulate
from fleetrun.plan._template import Ref, Template

__all__ = [
    "ALL_TARGETS",
    "EXEC_TASK",
    "ExecRequest",
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
    "exec_plan",
    "expand",
    "is_fleet_file",
    "load_plan",
    "load_plan_text",
    "plan_json_schema",
    "select",
    "simulate",
]
