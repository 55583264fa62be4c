"""Reading ``defaults`` and ``tasks``: retry policies, needs, templates per task.

Cross-task checks (unknown names, cycles, phases, template references) live in
``_checks.py``; this module reads each task on its own and records, beside the
``Task``, the nodes those checks point their diagnostics at.
"""

from __future__ import annotations

import functools
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel

from fleetrun.errors import Diagnostic, PlanError
from fleetrun.plan._checks import TaskInfo, check_tasks
from fleetrun.plan._fields import Ctx, did_you_mean, join
from fleetrun.plan._model import (
    Need,
    Pool,
    RetryPolicy,
    Scalar,
    Script,
    SuccessPolicy,
    Target,
    Task,
)
from fleetrun.plan._options import read_options, read_runs_on
from fleetrun.plan._spec import (
    DefaultsSpec,
    NeedSpec,
    RetryOn,
    RetrySpec,
    TaskSpec,
    Text,
    keys_of,
)
from fleetrun.plan._spec import Need as NeedType
from fleetrun.plan._template import Template
from fleetrun.plan._validate import good_items, validate_fields
from fleetrun.plan._written import as_written
from fleetrun.plan._yaml import YMap, YNode, YScalar, YSeq
from fleetrun.runs_on import DEFAULT_KIND

TASK_KEYS = keys_of(TaskSpec)
TASK_NAME = re.compile(r"^[A-Za-z_][\w-]*$")
MAX_TASK_NAME_BYTES = 200
"""Longest task name, in UTF-8 bytes (a directory and file names are made of it)."""
ReadFile = Callable[[YNode, str, str], "tuple[str, str] | None"]
"""Reads a file named at a node, relative to the plan: (shown name, text), or None
after reporting why not (the loader's ``read_side_file``)."""
DEFAULT_ESTIMATE = 1.0
"""Seconds assumed for a task that gives no ``estimate`` (nor do the defaults)."""


@dataclass
class Defaults:
    """The plan's ``defaults``: values a task gets unless it sets its own."""

    timeout: float | None = None
    estimate: float | None = None
    retry: dict[str, Any] = field(default_factory=dict)
    success: dict[str, Any] = field(default_factory=dict)


def _given(spec: BaseModel | None) -> dict[str, Any]:
    """The keys a section gives (the validated values, nested sections as models)."""
    if spec is None:
        return {}
    return {k: getattr(spec, k) for k in spec.model_fields_set}


def _retry_given(retry: int | RetrySpec | None) -> dict[str, Any]:
    """The retry keys given: a plain number is ``attempts``."""
    if isinstance(retry, int):
        return {"attempts": retry}
    return _given(retry)


def _listed(value: Any) -> list[Any]:
    """A key written as one value or a list of them, as a list."""
    return value if isinstance(value, list) else [value]


def _success(given: Mapping[str, Any]) -> SuccessPolicy:
    base = SuccessPolicy()
    exit_ = given.get("exit")
    outputs = given.get("fail_on_output")
    return SuccessPolicy(
        exit=frozenset(_listed(exit_)) if exit_ is not None else base.exit,
        fail_on_output=tuple(_listed(outputs)) if outputs is not None else base.fail_on_output,
    )


def _policy(given: Mapping[str, Any]) -> RetryPolicy:
    base = RetryPolicy()
    on: RetryOn | None = given.get("on")
    return RetryPolicy(
        attempts=given.get("attempts", base.attempts),
        backoff=given.get("backoff", base.backoff),
        max_backoff=given.get("max_backoff", base.max_backoff),
        any_failure=on is None,
        on_exit=frozenset(_listed(on.exit)) if on and on.exit is not None else frozenset(),
        on_output=tuple(_listed(on.output)) if on and on.output is not None else (),
        on_timeout=bool(on and on.timeout),
        on_connect=bool(on and on.connect),
    )


def _twice_in(ctx: Ctx, m: YMap | None, key: str, path: Sequence[str]) -> None:
    """``_twice`` for the list at ``path`` below the mapping ``m``, when there is one."""
    node: YNode | None = m
    for part in path:
        node = node.entries[part][1] if isinstance(node, YMap) and part in node.entries else None
        key = join(key, part)
    if node is not None:
        ctx.listed_twice(node, key)


def read_defaults(ctx: Ctx, node: YNode) -> Defaults:
    """The ``defaults`` section, validated by ``DefaultsSpec``."""
    m = ctx.mapping(node, "defaults")
    if m is None:
        return Defaults()
    spec, _ = validate_fields(ctx, DefaultsSpec, m, "defaults")
    for path in (("retry", "on", "output"), ("success", "fail_on_output")):
        _twice_in(ctx, m, "defaults", path)
    return Defaults(
        timeout=spec.timeout,
        estimate=spec.estimate,
        retry=_retry_given(spec.retry),
        success=_given(spec.success),
    )


def _needs(ctx: Ctx, spec: TaskSpec, bad: frozenset[str], node: YNode) -> list[tuple[Need, YNode]]:
    """The task's needs that are well written, each with its node."""
    if "needs" in bad:
        given = good_items(NeedType, node)
    elif spec.needs is None:
        return []
    elif isinstance(spec.needs, str):
        given = [(spec.needs, node)]
    else:
        given = list(zip(spec.needs, cast(YSeq, node).items, strict=True))
    out = []
    for value, item in given:
        loc = ctx.loc(item)
        if isinstance(value, NeedSpec):
            if isinstance(value.at_least, int):
                out.append(
                    (Need(value.task, "quorum", at_least=value.at_least, location=loc), item)
                )
            elif isinstance(value.at_least, str):
                pct = float(value.at_least.strip()[:-1])
                out.append((Need(value.task, "quorum", percent=pct, location=loc), item))
            else:
                out.append((Need(value.task, "auto", location=loc), item))
            continue
        name, _, star = value.partition("[")
        out.append((Need(name.strip(), "all" if star else "auto", location=loc), item))
    return out


def _texts(spec_value: Any, bad: bool, node: YNode) -> list[tuple[int, str, YNode]]:
    """A key of texts written as one or a list: each with its index and node."""
    if bad:
        items = node.items if isinstance(node, YSeq) else []
        good = {id(n): v for v, n in good_items(Text, node)}
        return [(i, good[id(n)], n) for i, n in enumerate(items) if id(n) in good]
    if spec_value is None:
        return []
    if isinstance(spec_value, str):
        return [(0, spec_value, node)]
    return [
        (i, v, n) for i, (v, n) in enumerate(zip(spec_value, cast(YSeq, node).items, strict=True))
    ]


def read_tasks(
    ctx: Ctx,
    node: YNode,
    *,
    targets: Mapping[str, Target],
    groups: Mapping[str, tuple[str, ...]],
    pools: Mapping[str, Pool],
    vars_: Mapping[str, Scalar],
    unset_vars: frozenset[str] = frozenset(),
    phases: Sequence[str] | None,
    defaults: Defaults | None,
    base_dir: Path,
    read_file: ReadFile | None = None,
) -> dict[str, Task]:
    """Every task, checked on its own and then against each other."""
    defaults = defaults or Defaults()
    tasks: dict[str, Task] = {}
    infos: dict[str, TaskInfo] = {}
    m = ctx.mapping(node, "tasks", allow_null=False)
    if m is not None and not m.entries:
        ctx.error(m, "tasks", "the plan has no tasks", "define at least one task")
    for name, (knode, value) in m.entries.items() if m else ():
        key = join("tasks", name)
        if not TASK_NAME.match(name):
            ctx.error(
                knode,
                key,
                f"{as_written(name)} is not a valid task name",
                "use letters, digits, '_' and '-', starting with a letter or '_'",
            )
            continue
        if len(name.encode()) > MAX_TASK_NAME_BYTES:
            ctx.error(
                knode,
                key,
                f"task name of {len(name.encode())} bytes is longer than the limit of "
                f"{MAX_TASK_NAME_BYTES} bytes",
                "use a shorter name (log and output files are named after it)",
            )
            continue
        tm = value if isinstance(value, YMap) else None
        if isinstance(value, YScalar) and value.value is None:
            tm = YMap(value.line, value.column, {})
        spec, bad = validate_fields(ctx, TaskSpec, tm if tm is not None else value, key)
        if tm is None:
            continue
        f = {k: v for k, (_, v) in tm.entries.items()}
        _twice_in(ctx, tm, key, ("retry", "on", "output"))
        _twice_in(ctx, tm, key, ("success", "fail_on_output"))
        info = TaskInfo(knode)
        run: Template | None = None
        script: Script | None = None
        if "script" in f:
            run, script = _read_script(ctx, f, spec.script, key, base_dir, read_file)
            info.run_node = f["script"]
        elif "run" not in f:
            ctx.error(
                knode, key, "the task has no 'run'", "add run: <shell command> or script: <file>"
            )
        else:
            info.run_node = f["run"]
            if spec.run is not None:
                try:
                    run = Template.parse(
                        spec.run, ctx.loc(f["run"]), functools.partial(ctx.inner_loc, f["run"])
                    )
                except PlanError as e:
                    ctx.problems.extend(
                        Diagnostic(d.location, d.message, join(key, "run"), d.fix)
                        for d in e.diagnostics
                    )
        phase = spec.phase
        if phase is not None and phases is not None and phase not in phases:
            ctx.error(
                f["phase"],
                join(key, "phase"),
                f"unknown phase {phase!r}{did_you_mean(phase, phases)}",
                "use one of the phases listed under 'phases': " + ", ".join(phases),
            )
            phase = None
        for_each, members = spec.for_each, None
        if for_each is not None and for_each not in groups:
            ctx.error(
                f["for_each"],
                join(key, "for_each"),
                f"unknown group {for_each!r}{did_you_mean(for_each, groups)}",
                "name a group defined under 'groups', or 'all' for every target",
            )
            for_each = None
        if for_each is not None:
            members = groups[for_each]
        elif "for_each" in f:
            info.broken = True
        needs = _needs(ctx, spec, bad, f["needs"]) if "needs" in f else []
        info.need_nodes = [n for _, n in needs]
        task_pools = []
        pkey = join(key, "pools")
        pool_names = _texts(spec.pools, "pools" in bad, f["pools"]) if "pools" in f else []
        seen: set[str] = set()
        for i, p, pnode in pool_names:
            if p in seen:
                ctx.error(pnode, join(pkey, i), f"{as_written(p)} is listed twice", "list it once")
            elif p in pools:
                task_pools.append(p)
            else:
                ctx.error(
                    pnode,
                    join(pkey, i),
                    f"unknown pool {p!r}{did_you_mean(p, pools)}",
                    "name a pool defined under 'pools'",
                )
            seen.add(p)
        timeout = spec.timeout if "timeout" in f else defaults.timeout
        estimate = defaults.estimate if defaults.estimate is not None else DEFAULT_ESTIMATE
        if "estimate" in f:
            estimate = spec.estimate or 0.0
        retry = {**defaults.retry, **_retry_given(spec.retry)}
        success = {**defaults.success, **_given(spec.success)}
        env: dict[str, str] = {}
        if spec.env is not None:
            for ename, (_, evalue) in cast(YMap, f["env"]).entries.items():
                if isinstance(evalue, YScalar):
                    env[ename] = evalue.value if isinstance(evalue.value, str) else evalue.source
        cwd = str(base_dir / spec.cwd) if spec.cwd is not None else None
        runs_on = read_runs_on(ctx, f, spec, bad, key)
        if spec.allow_empty and "for_each" not in f:
            ctx.error(
                f["allow_empty"],
                join(key, "allow_empty"),
                "allow_empty applies only to a task with for_each (an unfanned task "
                "always has one instance)",
                "remove allow_empty, or add for_each: <group>",
            )
        options = read_options(ctx, f, spec, key, runs_on, script)
        if run is None:
            info.broken_run = True
            run = Template("", ())
        tasks[name] = Task(
            name=name,
            run=run,
            phase=phase,
            for_each=for_each,
            targets=members,
            needs=tuple(n for n, _ in needs),
            pools=tuple(task_pools),
            timeout=timeout,
            retry=_policy(retry),
            success=_success(success),
            env=env,
            cwd=cwd,
            estimate=estimate,
            location=ctx.loc(knode),
            runs_on=runs_on or DEFAULT_KIND,
            allow_empty=bool(spec.allow_empty),
            script=script,
            options=options,
        )
        infos[name] = info
    check_tasks(
        ctx, tasks, infos, targets=targets, vars_=vars_, unset_vars=unset_vars, phases=phases
    )
    return tasks


def _read_script(
    ctx: Ctx,
    f: Mapping[str, YNode],
    text: str | None,
    key: str,
    base_dir: Path,
    read_file: ReadFile | None,
) -> tuple[Template | None, Script | None]:
    """``script: PATH ARGS...``: the script read now, and ``run`` as ``sh PATH ARGS``.

    The first word is the file (relative to the plan); the rest are arguments,
    templated and quoted like ``run``. A local attempt runs ``sh PATH ARGS``;
    an SSH attempt streams the text to the remote shell (``Task.executor_options``).
    """
    skey = join(key, "script")
    if "run" in f:
        ctx.error(f["run"], join(key, "run"), "a task has 'run' or 'script', not both", "keep one")
    if text is None:
        return None, None
    rel, _, args = text.strip().partition(" ")
    if read_file is None:
        return None, None
    node = f["script"]
    got = read_file(YScalar(node.line, node.column, rel, rel, None, False), skey, "the script")
    if got is None:
        return None, None
    path = str((base_dir / rel).resolve())
    try:
        command = f"sh {shlex.quote(path)} {args.strip()}".rstrip()
        run = Template.parse(command, ctx.loc(node))
    except PlanError as e:
        ctx.problems.extend(Diagnostic(d.location, d.message, skey, d.fix) for d in e.diagnostics)
        return None, None
    return run, Script(path, got[1])
