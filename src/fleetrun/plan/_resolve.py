"""One renderer for what an instance runs: its command and its environment.

The engine (each attempt), ``retry`` (has a command changed since a run?) and
``--dry-run`` (what would run) all render through here (``dep_outputs`` then
``render_command``), so they cannot disagree about which dependency outputs a
command sees, what a missing one is (``MissingValueError``) or how an output's
name becomes an environment variable.

Rules:
- a command sees the outputs of its *single-instance* requirements (a task
  fanned over the same targets, or an unfanned task), by task name:
  ``{{ tasks.X.outputs.KEY }}``;
- those outputs also reach the environment as ``FLEETRUN_OUTPUT_<TASK>_<KEY>``
  (``env_name`` of each part);
- the task's environment is ``env_file`` < the plan's ``env`` < the task's
  ``env``, plus ``FLEETRUN_TASK`` and ``FLEETRUN_RUN_ID``; the names set per
  attempt are ``FLEETRUN_TARGET``, ``FLEETRUN_ATTEMPT``, ``FLEETRUN_OUTPUT``,
  ``FLEETRUN_ATTEMPT_ID`` and the dependency outputs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from fleetrun.names import (
    ATTEMPT_ENV,
    ATTEMPT_ID,
    OUTPUT_ENV,
    RUN_ID_ENV,
    TARGET_ENV,
    TASK_ENV,
    env_name,
)
from fleetrun.names import is_per_attempt as is_per_attempt
from fleetrun.plan._graph import Graph, Node
from fleetrun.plan._model import Target, Task
from fleetrun.plan._template import lookup


def dep_outputs(
    node: Node, outputs_by_node: Mapping[int, Mapping[str, str]]
) -> dict[str, Mapping[str, str]]:
    """Outputs of ``node``'s single-instance requirements that are known, by task name."""
    outs: dict[str, Mapping[str, str]] = {}
    for req in node.requires:
        if len(req.nodes) == 1:
            o = outputs_by_node.get(req.nodes[0])
            if o is not None:
                outs[req.task] = o
    return outs


class MissingValueError(KeyError):
    """A command uses a value that is not available.

    ``key`` is the instance (``task@target``), ``ref`` the reference without a
    value (``tasks.infra.outputs.cluster``; a plan that loaded has every
    ``vars.*`` and ``target.*`` it uses), ``detail`` what is known instead
    (``infra published only endpoint; ...``) or empty.
    A ``KeyError`` whose ``args[0]`` is ``ref`` plus the detail in parentheses,
    so code that caught the template's ``KeyError`` reads the same text.
    """

    def __init__(self, key: str, ref: str, detail: str = "") -> None:
        super().__init__(f"{ref} ({detail})" if detail else ref)
        self.key = key
        self.ref = ref
        self.detail = detail

    def __str__(self) -> str:
        return f"no value for {self.args[0]}"


class OutputNameClash(ValueError):
    """Two outputs of ``key``'s requirements would reach its command as one
    environment variable ``name`` (task ``a`` with key ``b_c`` and task ``a_b``
    with key ``c`` are both ``FLEETRUN_OUTPUT_A_B_C``): one value would be lost,
    so the attempt is refused, naming both (``first``, ``second``: their
    references, ``tasks.a.outputs.b_c``)."""

    def __init__(self, key: str, name: str, first: str, second: str) -> None:
        super().__init__(
            f"{first} and {second} would both be ${name}: "
            "rename one of the keys so their variables differ"
        )
        self.key = key
        self.name = name
        self.first = first
        self.second = second


def render_command(
    graph: Graph,
    node: Node,
    outputs_by_task: Mapping[str, Mapping[str, str]],
    *,
    task: Task | None = None,
    target: Target | None = None,
) -> str:
    """The command of ``node`` with ``outputs_by_task`` (``dep_outputs``, or
    ``Placeholders`` for a dry run).

    ``task`` and ``target``: the node's, when the caller has them at hand (the
    engine, per attempt); looked up otherwise. Raises ``MissingValueError``
    naming the reference when the command uses a value that is not available.
    """
    if task is None:
        task = graph.plan.tasks[node.task]
    if target is None and node.target is not None:
        target = graph.plan.targets[node.target]
    try:
        return task.run.render(target, graph.plan.vars, outputs_by_task)
    except KeyError as e:
        first = str(e.args[0]) if e.args else "a value"
    # Only on failure: find the first reference without a value, to name it.
    for ref in task.run.refs:
        try:
            lookup(ref.path, target, graph.plan.vars, outputs_by_task)
        except KeyError as e:
            name = ".".join(ref.path)
            text = str(e.args[0]) if e.args else ""
            detail = text[len(name) + 2 : -1] if text.startswith(name + " (") else ""
            raise MissingValueError(node.key, name, detail) from None
    raise MissingValueError(node.key, first)


def task_env(graph: Graph, task: Task, run_id: str) -> dict[str, str]:
    """The environment the plan gives every attempt of ``task`` (no per-attempt names)."""
    env = dict(graph.plan.env)
    env.update(task.env)
    env[TASK_ENV] = task.name
    env[RUN_ID_ENV] = run_id
    for name in [n for n in env if is_per_attempt(n)]:
        del env[name]
    return env


def attempt_env(
    run_id: str,
    node: Node,
    n: int,
    output_path: str,
    outputs_by_task: Mapping[str, Mapping[str, str]],
) -> dict[str, str]:
    """The names set for attempt ``n`` of ``node`` in run ``run_id``."""
    extra = {
        TARGET_ENV: node.target or "",
        ATTEMPT_ENV: str(n),
        OUTPUT_ENV: output_path,
        ATTEMPT_ID: f"{run_id}.{node.id}.{n}",
    }
    seen: dict[str, str] = {}
    for dep, outs in outputs_by_task.items():
        prefix = f"{OUTPUT_ENV}_{env_name(dep)}_"
        for k, v in outs.items():
            name = prefix + env_name(k)
            ref = f"tasks.{dep}.outputs.{k}"
            if name in seen:
                raise OutputNameClash(node.key, name, seen[name], ref)
            seen[name] = ref
            extra[name] = v
    return extra


class Placeholders(Mapping[str, Mapping[str, str]]):
    """Outputs for a dry run: the known ones, ``<task.outputs.key>`` for the rest."""

    def __init__(self, known: Mapping[str, Mapping[str, str]]) -> None:
        self._known = known

    def __getitem__(self, task: str) -> Mapping[str, str]:
        return _TaskPlaceholders(task, self._known.get(task, {}))

    def __iter__(self) -> Iterator[str]:
        return iter(self._known)

    def __len__(self) -> int:
        return len(self._known)

    def __bool__(self) -> bool:
        return True


class _TaskPlaceholders(Mapping[str, str]):
    def __init__(self, task: str, known: Mapping[str, str]) -> None:
        self._task, self._known = task, known

    def __getitem__(self, key: str) -> str:
        return self._known.get(key, f"<{self._task}.outputs.{key}>")

    def __iter__(self) -> Iterator[str]:
        return iter(self._known)

    def __len__(self) -> int:
        return len(self._known)
