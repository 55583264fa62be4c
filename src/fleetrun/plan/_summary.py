"""Per-task facts of an expanded plan: instance counts, empty fleets, quorums in numbers.

``fleetrun plan`` lists every task with its instance count and its needs
(quorums written ``at least 5 of 6 (67%)``); ``apply`` asks ``empty_tasks`` /
``empty_tasks_error`` before anything runs, so that a task fanned over a group
that matches no target is never a silent green run.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetrun.errors import Diagnostic, PlanError
from fleetrun.plan._expand import quorum_size
from fleetrun.plan._graph import Graph
from fleetrun.plan._model import Need, Plan, Task


def instance_count(task: Task) -> int:
    """How many instances ``task`` expands to (1 when unfanned)."""
    return 1 if task.targets is None else len(task.targets)


def _pct(percent: float) -> str:
    return f"{percent:g}%"


def quorum_text(need: Need, count: int) -> str:
    """A quorum in numbers: ``at least 5 of 6 (67%)``, ``at least 2 of 6``.

    A percentage rounds up (``ceil``): 67% of 6 is 4.02, so 5 instances.
    """
    n = quorum_size(need, count)
    pct = f" ({_pct(need.percent)})" if need.percent is not None else ""
    return f"at least {n} of {count}{pct}"


def need_text(plan: Plan, task: Task, need: Need) -> str:
    """One need as the plan view shows it: ``besu (same target)``, ``besu: all 24``,
    ``besu: at least 5 of 6 (67%)``."""
    dep = plan.tasks.get(need.task)
    if dep is None:
        return need.task
    count = instance_count(dep)
    if need.mode == "quorum":
        return f"{need.task}: {quorum_text(need, count)}"
    if dep.targets is None:
        return need.task
    if need.mode == "auto" and task.targets is not None:
        return f"{need.task} (same target)"
    return f"{need.task}: all {count}"


@dataclass(frozen=True, slots=True)
class TaskRow:
    """One line of the plan view's task list."""

    task: str
    instances: int
    for_each: str | None
    needs: tuple[str, ...]
    empty: bool  # fanned over a group that matches no target
    allow_empty: bool


def task_rows(graph: Graph) -> list[TaskRow]:
    """Every task of the plan in plan order, zero-instance tasks included."""
    plan = graph.plan
    return [
        TaskRow(
            task=task.name,
            instances=instance_count(task),
            for_each=task.for_each,
            needs=tuple(need_text(plan, task, n) for n in task.needs),
            empty=task.targets is not None and not task.targets,
            allow_empty=task.allow_empty,
        )
        for task in plan.tasks.values()
    ]


def empty_tasks(graph: Graph) -> list[str]:
    """Names of the tasks with zero instances that do not say ``allow_empty: true``.

    These are what ``apply`` refuses (exit 2): a task fanned over a group that
    matches no target (a typo in a ``where``, an empty fleet file) would
    otherwise make a run that does nothing and exits 0.
    """
    return [
        task.name
        for task in graph.plan.tasks.values()
        if task.targets is not None and not task.targets and not task.allow_empty
    ]


def empty_task_diagnostic(task: Task) -> Diagnostic:
    """Why a zero-instance ``task`` is refused and what to do, at the task's file:line."""
    return Diagnostic(
        task.location,
        f"task {task.name!r} has no instances: its for_each group {task.for_each!r} "
        "matches no target, so nothing of it would run",
        key=f"tasks.{task.name}.for_each",
        fix=f"check group {task.for_each!r} (its 'where' or names) and the targets; "
        "if an empty fleet is expected, add allow_empty: true to the task",
    )


def empty_tasks_error(graph: Graph) -> PlanError | None:
    """The ``PlanError`` (exit 2) that ``apply`` raises for zero-instance tasks, or None.

    One diagnostic per task named by ``empty_tasks``, each with the task's
    file:line, its group and the fix; the caller only raises it.
    """
    names = empty_tasks(graph)
    if not names:
        return None
    return PlanError([empty_task_diagnostic(graph.plan.tasks[n]) for n in names])


def empty_warnings(graph: Graph) -> list[str]:
    """One ``warning:`` line per zero-instance task (those with ``allow_empty`` say so)."""
    out = []
    for task in graph.plan.tasks.values():
        if task.targets is None or task.targets:
            continue
        where = f"{task.location}: " if task.location else ""
        if task.allow_empty:
            out.append(
                f"note: {where}task {task.name!r} has 0 instances (group "
                f"{task.for_each!r} matches no target; allow_empty: true)"
            )
        else:
            d = empty_task_diagnostic(task)
            out.append(f"warning: {where}{d.message}; apply will refuse it\n    fix: {d.fix}")
    return out
