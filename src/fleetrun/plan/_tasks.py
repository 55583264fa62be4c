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
from typing import Any

from fleetrun.errors import Diagnostic, PlanError
from fleetrun.plan._checks import TaskInfo, check_tasks
from fleetrun.plan._fields import Ctx, did_you_mean, join
from fleetrun.plan._model import (
    MAX_ATTEMPTS,
    MAX_ATTEMPTS_WHY,
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
    SuccessSpec,
    TaskSpec,
    keys_of,
)
from fleetrun.plan._template import Template
from fleetrun.plan._yaml import YNode, YScalar
from fleetrun.runs_on import DEFAULT_KIND

TASK_KEYS = keys_of(TaskSpec)
DEFAULT_KEYS = keys_of(DefaultsSpec)
RETRY_KEYS = keys_of(RetrySpec)
ON_KEYS = keys_of(RetryOn)
SUCCESS_KEYS = keys_of(SuccessSpec)
NEED_KEYS = keys_of(NeedSpec)
MAX_EXIT = 255
"""The largest exit status a process can report (POSIX keeps 8 bits)."""
TASK_NAME = re.compile(r"^[A-Za-z_][\w-]*$")
MAX_TASK_NAME_BYTES = 200
"""Longest task name, in UTF-8 bytes (a directory and file names are made of it)."""
_MOST = (MAX_ATTEMPTS, MAX_ATTEMPTS_WHY)
_NEED = re.compile(r"^\s*([A-Za-z_][\w-]*)\s*(\[\s*\*\s*\])?\s*$")
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


def read_success(ctx: Ctx, node: YNode, key: str) -> dict[str, Any]:
    """The ``success`` keys given at ``node``: ``exit`` (the codes that count as
    success) and ``fail_on_output`` (texts whose presence in the output fails it)."""
    out: dict[str, Any] = {}
    m = ctx.mapping(node, key, allow_null=False)
    for k, v in ctx.items(m, key, SUCCESS_KEYS) if m else ():
        sub = join(key, k)
        if k == "exit":
            items = ctx.seq(v, sub, single_ok=True)
            if items is None:
                continue
            codes = [
                ctx.integer(item, join(sub, i), 0, (MAX_EXIT, "exit codes are 0 to 255"))
                for i, item in enumerate(items)
            ]
            if not items:
                ctx.error(
                    v,
                    sub,
                    "lists no exit code: no attempt could succeed",
                    "list the codes that mean success, such as [0, 3]",
                )
            elif None not in codes:
                out[k] = frozenset(c for c in codes if c is not None)
        else:
            out[k] = tuple(n for n, _ in ctx.names(v, sub, single_ok=True))
    if m is not None and not m.entries:
        ctx.error(m, key, "says nothing", "give exit or fail_on_output, or remove 'success'")
    return out


def _success(given: Mapping[str, Any]) -> SuccessPolicy:
    base = SuccessPolicy()
    return SuccessPolicy(
        exit=given.get("exit", base.exit),
        fail_on_output=given.get("fail_on_output", base.fail_on_output),
    )


def read_retry(ctx: Ctx, node: YNode, key: str) -> dict[str, Any]:
    """The retry keys given at ``node`` (a mapping, or an integer meaning ``attempts``)."""
    out: dict[str, Any] = {}
    if isinstance(node, YScalar) and isinstance(node.value, int):
        attempts = ctx.integer(node, key, minimum=1, maximum=_MOST)
        return {"attempts": attempts} if attempts is not None else {}
    m = ctx.mapping(node, key, allow_null=False)
    for k, v in ctx.items(m, key, RETRY_KEYS) if m else ():
        sub = join(key, k)
        if k == "attempts":
            out[k] = ctx.integer(v, sub, minimum=1, maximum=_MOST)
        elif k in ("backoff", "max_backoff"):
            out[k] = ctx.duration(v, sub)
        else:
            out[k] = _read_on(ctx, v, sub)
    return {k: v for k, v in out.items() if v is not None}


def _read_on(ctx: Ctx, node: YNode, key: str) -> tuple[frozenset[int], tuple[str, ...], bool, bool]:
    m = ctx.mapping(node, key, allow_null=False)
    codes: set[int] = set()
    outputs: list[str] = []
    on_timeout = on_connect = False
    for k, v in ctx.items(m, key, ON_KEYS) if m else ():
        sub = join(key, k)
        if k == "exit":
            for i, item in enumerate(ctx.seq(v, sub, single_ok=True) or []):
                code = ctx.integer(item, join(sub, i), minimum=0)
                if code is not None:
                    codes.add(code)
        elif k == "output":
            outputs.extend(n for n, _ in ctx.names(v, sub, single_ok=True))
        elif k == "connect":
            on_connect = bool(ctx.boolean(v, sub))
        else:
            on_timeout = bool(ctx.boolean(v, sub))
    if m is not None and not m.entries:
        ctx.error(
            m, key, "lists no condition", "give exit, output, timeout or connect, or remove 'on'"
        )
    return frozenset(codes), tuple(outputs), on_timeout, on_connect


def _policy(given: Mapping[str, Any]) -> RetryPolicy:
    base = RetryPolicy()
    on = given.get("on")
    return RetryPolicy(
        attempts=given.get("attempts", base.attempts),
        backoff=given.get("backoff", base.backoff),
        max_backoff=given.get("max_backoff", base.max_backoff),
        any_failure=on is None,
        on_exit=on[0] if on else frozenset(),
        on_output=on[1] if on else (),
        on_timeout=on[2] if on else False,
        on_connect=on[3] if on else False,
    )


def read_defaults(ctx: Ctx, node: YNode) -> Defaults:
    """The ``defaults`` section."""
    d = Defaults()
    m = ctx.mapping(node, "defaults")
    for k, v in ctx.items(m, "defaults", DEFAULT_KEYS) if m else ():
        key = join("defaults", k)
        if k == "timeout":
            d.timeout = ctx.duration(v, key, positive=True)
        elif k == "estimate":
            d.estimate = ctx.duration(v, key)
        elif k == "success":
            d.success = read_success(ctx, v, key)
        else:
            d.retry = read_retry(ctx, v, key)
    return d


def _read_needs(ctx: Ctx, node: YNode, key: str) -> list[tuple[Need, YNode]]:
    out: list[tuple[Need, YNode]] = []
    for i, item in enumerate(ctx.seq(node, key, single_ok=True) or []):
        sub = join(key, i)
        if isinstance(item, YScalar) and isinstance(item.value, str):
            m = _NEED.match(item.value)
            if m is None:
                ctx.error(
                    item,
                    sub,
                    f"cannot read need {item.value!r}",
                    "write a task name, 'task[*]' for all its instances, or "
                    "{task: name, at_least: N or 'P%'}",
                )
                continue
            need = Need(m.group(1), "all" if m.group(2) else "auto", location=ctx.loc(item))
            out.append((need, item))
            continue
        if isinstance(item, YScalar) and isinstance(item.value, bool):
            # needs: [on]: YAML read the task name as a boolean.
            ctx.wrong_type(item, sub, "a task name or {task: name, at_least: N}", text=True)
            continue
        qm = ctx.mapping(item, sub, allow_null=False)
        if qm is None:
            continue
        found = dict(ctx.items(qm, sub, NEED_KEYS))
        if "task" not in found:
            ctx.error(qm, sub, "a need mapping needs 'task'", "write {task: name, at_least: N}")
            continue
        name = ctx.string(found["task"], join(sub, "task"))
        if name is None:
            continue
        need = Need(name.strip(), "auto", location=ctx.loc(item))
        if "at_least" in found:
            q = _quorum(ctx, found["at_least"], join(sub, "at_least"))
            if q is None:
                continue
            need = Need(need.task, "quorum", at_least=q[0], percent=q[1], location=need.location)
        out.append((need, item))
    return out


def _quorum(ctx: Ctx, node: YNode, key: str) -> tuple[int | None, float | None] | None:
    v = node.value if isinstance(node, YScalar) else None
    fix = "write a count such as 2 or a percentage such as '67%'"
    if isinstance(v, int) and not isinstance(v, bool):
        if v < 1:
            ctx.error(node, key, f"a quorum of {v} waits for nothing", fix)
            return None
        return v, None
    if isinstance(v, str) and v.strip().endswith("%"):
        try:
            pct = float(v.strip()[:-1])
        except ValueError:
            pct = -1.0
        if 0 < pct <= 100:
            return None, pct
        ctx.error(node, key, f"{v!r} is not a percentage in (0%, 100%]", fix)
        return None
    ctx.error(node, key, f"{v!r} is neither a count nor a percentage", fix)
    return None


def read_tasks(
    ctx: Ctx,
    node: YNode,
    *,
    targets: Mapping[str, Target],
    groups: Mapping[str, tuple[str, ...]],
    pools: Mapping[str, Pool],
    vars_: Mapping[str, Scalar],
    phases: Sequence[str] | None,
    defaults: Defaults | None,
    env_names: Callable[[str, YNode, str], bool],
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
                f"{name!r} is not a valid task name",
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
        tm = ctx.mapping(value, key, allow_null=True)
        if tm is None:
            continue
        f = dict(ctx.items(tm, key, TASK_KEYS))
        info = TaskInfo(knode)
        run: Template | None = None
        script: Script | None = None
        if "script" in f:
            run, script = _read_script(ctx, f, key, base_dir, read_file)
            info.run_node = f["script"]
        elif "run" not in f:
            ctx.error(
                knode, key, "the task has no 'run'", "add run: <shell command> or script: <file>"
            )
        else:
            info.run_node = f["run"]
            text = ctx.string(f["run"], join(key, "run"))
            if text is not None:
                try:
                    run = Template.parse(
                        text, ctx.loc(f["run"]), functools.partial(ctx.inner_loc, f["run"])
                    )
                except PlanError as e:
                    ctx.problems.extend(
                        Diagnostic(d.location, d.message, join(key, "run"), d.fix)
                        for d in e.diagnostics
                    )
        phase = None
        if "phase" in f:
            phase = ctx.string(f["phase"], join(key, "phase"))
            if phase is not None and phases is not None and phase not in phases:
                ctx.error(
                    f["phase"],
                    join(key, "phase"),
                    f"unknown phase {phase!r}{did_you_mean(phase, phases)}",
                    "use one of the phases listed under 'phases': " + ", ".join(phases),
                )
                phase = None
        for_each, members = None, None
        if "for_each" in f:
            for_each = ctx.string(f["for_each"], join(key, "for_each"))
            if for_each is not None and for_each not in groups:
                ctx.error(
                    f["for_each"],
                    join(key, "for_each"),
                    f"unknown group {for_each!r}{did_you_mean(for_each, groups)}",
                    "name a group defined under 'groups', or 'all' for every target",
                )
                for_each = None
            if for_each is None:
                info.broken = True
            else:
                members = groups[for_each]
        needs = _read_needs(ctx, f["needs"], join(key, "needs")) if "needs" in f else []
        info.need_nodes = [n for _, n in needs]
        task_pools = []
        pool_names = ctx.names(f["pools"], join(key, "pools"), True) if "pools" in f else []
        for i, (p, pnode) in enumerate(pool_names):
            if p in pools:
                task_pools.append(p)
            else:
                ctx.error(
                    pnode,
                    join(join(key, "pools"), i),
                    f"unknown pool {p!r}{did_you_mean(p, pools)}",
                    "name a pool defined under 'pools'",
                )
        timeout = defaults.timeout
        if "timeout" in f:
            timeout = ctx.duration(f["timeout"], join(key, "timeout"), positive=True)
        estimate = defaults.estimate if defaults.estimate is not None else DEFAULT_ESTIMATE
        if "estimate" in f:
            estimate = ctx.duration(f["estimate"], join(key, "estimate")) or 0.0
        retry = dict(defaults.retry)
        if "retry" in f:
            retry.update(read_retry(ctx, f["retry"], join(key, "retry")))
        success = dict(defaults.success)
        if "success" in f:
            success.update(read_success(ctx, f["success"], join(key, "success")))
        env: dict[str, str] = {}
        for ename, (enode, evalue) in _entries(ctx, f.get("env"), join(key, "env")):
            ekey = join(join(key, "env"), ename)
            text = ctx.scalar_text(evalue, ekey)
            if env_names(ename, enode, ekey) and text is not None:
                env[ename] = text
        cwd = None
        if "cwd" in f:
            rel = ctx.string(f["cwd"], join(key, "cwd"))
            cwd = str(base_dir / rel) if rel is not None else None
        runs_on = read_runs_on(ctx, f, key)
        allow_empty = False
        if "allow_empty" in f:
            allow_empty = bool(ctx.boolean(f["allow_empty"], join(key, "allow_empty")))
            if allow_empty and "for_each" not in f:
                ctx.error(
                    f["allow_empty"],
                    join(key, "allow_empty"),
                    "allow_empty applies only to a task with for_each (an unfanned task "
                    "always has one instance)",
                    "remove allow_empty, or add for_each: <group>",
                )
        options = read_options(ctx, f, key, runs_on, script)
        if "description" in f:
            ctx.string(f["description"], join(key, "description"), nonempty=False)
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
            allow_empty=allow_empty,
            script=script,
            options=options,
        )
        infos[name] = info
    check_tasks(ctx, tasks, infos, targets=targets, vars_=vars_, phases=phases)
    return tasks


def _entries(ctx: Ctx, node: YNode | None, key: str) -> list[tuple[str, tuple[YScalar, YNode]]]:
    if node is None:
        return []
    m = ctx.mapping(node, key)
    return list(m.entries.items()) if m else []


def _read_script(
    ctx: Ctx, f: Mapping[str, YNode], key: str, base_dir: Path, read_file: ReadFile | None
) -> tuple[Template | None, Script | None]:
    """``script: PATH ARGS...``: the script read now, and ``run`` as ``sh PATH ARGS``.

    The first word is the file (relative to the plan); the rest are arguments,
    templated and quoted like ``run``. A local attempt runs ``sh PATH ARGS``;
    an SSH attempt streams the text to the remote shell (``Task.executor_options``).
    """
    skey = join(key, "script")
    if "run" in f:
        ctx.error(f["run"], join(key, "run"), "a task has 'run' or 'script', not both", "keep one")
    text = ctx.string(f["script"], skey)
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
