"""Checks across tasks: needs, quorums, cycles, phase order and template references.

Invariant on success: every need names an existing task, every auto need from
a fanned task to a fanned task finds the same target's instance, quorums fit
the instance count, the task-level needs graph is acyclic, no task needs a
task of a later phase, and every template reference resolves (``tasks.X.outputs``
to exactly one instance of a task that is needed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from fleetrun.errors import Location
from fleetrun.names import OUTPUT_ENV, env_name
from fleetrun.plan._fields import Ctx, did_you_mean, join
from fleetrun.plan._model import Need, Scalar, Target, Task
from fleetrun.plan._template import _EXPR as TEMPLATE_EXPR
from fleetrun.plan._template import _PATH as TEMPLATE_PATH
from fleetrun.plan._template import _ROOTS as TEMPLATE_ROOTS
from fleetrun.plan._yaml import YNode


@dataclass
class TaskInfo:
    """Where a task's parts are written, for diagnostics; and which parts failed to read."""

    key_node: YNode
    run_node: YNode | None = None
    need_nodes: list[YNode] = field(default_factory=list)
    broken: bool = False  # for_each did not resolve: skip checks that depend on targets
    broken_run: bool = False


def check_tasks(
    ctx: Ctx,
    tasks: Mapping[str, Task],
    infos: Mapping[str, TaskInfo],
    *,
    targets: Mapping[str, Target],
    vars_: Mapping[str, Scalar],
    unset_vars: frozenset[str] = frozenset(),
    phases: Sequence[str] | None,
) -> None:
    """Record every cross-task problem (``unset_vars``: declared, but given no value)."""
    good_edges: dict[str, list[tuple[str, int]]] = {}
    for name, task in tasks.items():
        info = infos[name]
        good_edges[name] = []
        seen: set[str] = set()
        env_of: dict[str, str] = {}
        for i, need in enumerate(task.needs):
            node = info.need_nodes[i]
            key = join(join("tasks", name), "needs") + f"[{i}]"
            if need.task not in tasks:
                ctx.error(
                    node,
                    key,
                    f"unknown task {need.task!r}{did_you_mean(need.task, tasks)}",
                    "name a task defined under 'tasks'",
                )
                continue
            if need.task in seen:
                ctx.error(node, key, f"{need.task!r} is needed twice", "list each task once")
                continue
            seen.add(need.task)
            # Their outputs arrive as FLEETRUN_OUTPUT_<TASK>_<KEY>: two names that
            # meet there (a-b, a_b) would lose one task's values.
            env = env_name(need.task)
            other = env_of.setdefault(env, need.task)
            if other != need.task:
                ctx.error(
                    node,
                    key,
                    f"{other!r} and {need.task!r} would both give this task their outputs "
                    f"as {OUTPUT_ENV}_{env}_<KEY>, and one value would be lost",
                    "rename one of the two tasks",
                )
            good_edges[name].append((need.task, i))
            _check_need(ctx, task, info, tasks[need.task], infos[need.task], need, node, key)
            _check_phase(ctx, task, tasks[need.task], node, key, phases)
    _check_cycles(ctx, tasks, infos, good_edges)
    for name, task in tasks.items():
        if not infos[name].broken_run:
            _check_template(ctx, task, infos[name], tasks, infos, targets, vars_, unset_vars)


def _count(task: Task) -> int:
    return 1 if task.targets is None else len(task.targets)


def _check_need(
    ctx: Ctx,
    task: Task,
    info: TaskInfo,
    dep: Task,
    dep_info: TaskInfo,
    need: Need,
    node: YNode,
    key: str,
) -> None:
    if info.broken or dep_info.broken:
        return
    count = _count(dep)
    if need.mode == "quorum" and need.at_least is not None and need.at_least > count:
        ctx.error(
            node,
            key,
            f"a quorum of {need.at_least} but {dep.name!r} has only {count} "
            f"instance{'s' if count != 1 else ''}",
            f"use at_least between 1 and {count}, or a percentage such as '67%'",
        )
        return
    if need.mode != "auto" or task.targets is None or dep.targets is None:
        return
    have = set(dep.targets)
    missing = [t for t in task.targets if t not in have]
    if missing:
        more = f" (and {len(missing) - 1} more targets)" if len(missing) > 1 else ""
        ctx.error(
            node,
            key,
            f"{task.name}@{missing[0]} needs {dep.name!r} on the same target, but {dep.name!r} "
            f"has no instance for {missing[0]!r}{more}",
            f"write '{dep.name}[*]' to wait for all its instances, "
            f"{{task: {dep.name}, at_least: N}} for a quorum, or fan both tasks over the "
            "same group",
        )


def _check_phase(
    ctx: Ctx, task: Task, dep: Task, node: YNode, key: str, phases: Sequence[str] | None
) -> None:
    if phases is None or task.phase is None or dep.phase is None:
        return
    if phases.index(dep.phase) > phases.index(task.phase):
        ctx.error(
            node,
            key,
            f"task {task.name!r} (phase {task.phase!r}) needs {dep.name!r} of the later "
            f"phase {dep.phase!r}",
            "move one of them to another phase, reorder 'phases', or drop the need",
        )


def _check_cycles(
    ctx: Ctx,
    tasks: Mapping[str, Task],
    infos: Mapping[str, TaskInfo],
    edges: Mapping[str, list[tuple[str, int]]],
) -> None:
    """Report one cycle per group of tasks that need each other (iterative DFS)."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    reported: set[str] = set()
    for root in tasks:
        if root in state:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = [root]
        state[root] = 1
        while stack:
            name, i = stack[-1]
            out = edges[name]
            if i >= len(out):
                stack.pop()
                path.pop()
                state[name] = 2
                continue
            stack[-1] = (name, i + 1)
            dep, need_index = out[i]
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep) :], dep]
                if not reported.intersection(cycle):
                    reported.update(cycle)
                    node = infos[name].need_nodes[need_index]
                    ctx.error(
                        node,
                        f"tasks.{name}.needs[{need_index}]",
                        "needs form a cycle: " + " -> ".join(cycle),
                        "remove one of these needs",
                    )
            elif dep not in state:
                state[dep] = 1
                stack.append((dep, 0))
                path.append(dep)


def _ref_offsets(source: str) -> list[int]:
    """Offsets of the ``{{`` of each reference, in the order of ``Template.refs``."""
    out = []
    for m in TEMPLATE_EXPR.finditer(source):
        pm = TEMPLATE_PATH.match(m.group(1).strip())
        if pm is not None and pm.group(2).split(".")[0] in TEMPLATE_ROOTS:
            out.append(m.start())
    return out


def _check_template(
    ctx: Ctx,
    task: Task,
    info: TaskInfo,
    tasks: Mapping[str, Task],
    infos: Mapping[str, TaskInfo],
    targets: Mapping[str, Target],
    vars_: Mapping[str, Scalar],
    unset_vars: frozenset[str],
) -> None:
    node = info.run_node
    assert node is not None
    key = f"tasks.{task.name}.run"
    needs = {n.task: n for n in task.needs}
    for ref, offset in zip(task.run.refs, _ref_offsets(task.run.source), strict=False):
        at = ctx.inner_loc(node, offset)
        shown = "{{ " + str(ref) + " }}"
        root, path = ref.path[0], ref.path
        if root == "target":
            if len(path) != 2:
                ctx.error_at(
                    at,
                    key,
                    f"{shown}: write target.<attribute>",
                    "use {{ target.name }} or {{ target.<attribute> }}",
                )
            elif info.broken:
                continue
            elif task.targets is None:
                ctx.error_at(
                    at,
                    key,
                    f"{shown} in a task that does not fan out over targets",
                    "add for_each: <group> to the task, or remove the reference",
                )
            elif path[1] != "name":
                lacking = next((t for t in task.targets if path[1] not in targets[t].attrs), None)
                if lacking is not None:
                    known = {a for t in task.targets for a in targets[t].attrs} | {"name"}
                    hint = "" if path[1] in known else did_you_mean(path[1], known)
                    ctx.error_at(
                        at,
                        key,
                        f"{shown}: target {lacking!r} has no attribute {path[1]!r}{hint}",
                        f"give every target of group {task.for_each!r} the attribute "
                        f"{path[1]!r}, or fan out over a group that has it",
                    )
        elif root == "vars":
            if len(path) != 2:
                ctx.error_at(at, key, f"{shown}: write vars.<name>", "use {{ vars.<name> }}")
            elif path[1] not in vars_:
                ctx.error_at(
                    at,
                    key,
                    f"{shown}: undefined variable{did_you_mean(path[1], vars_)}",
                    "define it under 'vars', or fix the name",
                )
            elif path[1] in unset_vars:
                ctx.error_at(
                    at,
                    key,
                    f"{shown}: variable {path[1]!r} is declared but has no value",
                    f"give it one with --var {path[1]}=..., a --var-file, or 'value:' or "
                    f"'env:' under vars.{path[1]}",
                )
        elif len(path) != 4 or path[2] != "outputs":
            ctx.error_at(
                at,
                key,
                f"{shown}: write tasks.<task>.outputs.<key>",
                "read another task's outputs as {{ tasks.<task>.outputs.<key> }}",
            )
        else:
            _check_output_ref(ctx, task, info, tasks, infos, needs, path[1], at, key, shown)


def _check_output_ref(
    ctx: Ctx,
    task: Task,
    info: TaskInfo,
    tasks: Mapping[str, Task],
    infos: Mapping[str, TaskInfo],
    needs: Mapping[str, Need],
    dep_name: str,
    at: Location,
    key: str,
    shown: str,
) -> None:
    if dep_name not in tasks:
        ctx.error_at(
            at,
            key,
            f"{shown}: unknown task {dep_name!r}{did_you_mean(dep_name, tasks)}",
            "name a task defined under 'tasks'",
        )
        return
    if dep_name not in needs:
        ctx.error_at(
            at,
            key,
            f"{shown}: {task.name!r} does not need {dep_name!r}, so its outputs may not exist yet",
            f"add {dep_name} to the needs of {task.name}",
        )
        return
    dep = tasks[dep_name]
    if info.broken or infos[dep_name].broken or dep.targets is None:
        return
    if task.targets is not None and needs[dep_name].mode == "auto":
        return  # same target's instance: exactly one (coverage checked with the need)
    count = len(dep.targets)
    ctx.error_at(
        at,
        key,
        f"{shown}: {dep_name!r} fans out over targets ({count} instance"
        f"{'s' if count != 1 else ''}) and this reference does not say whose outputs to read",
        f"read outputs of an unfanned task, or of a same-target need (fan "
        f"{task.name!r} over the targets of {dep_name!r} and write needs: [{dep_name}])",
    )
