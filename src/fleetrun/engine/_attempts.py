"""From a node to a resolved attempt: the plan stops here, an executor sees none of it.

``AttemptFactory.build`` turns attempt ``n`` of a node into the self-contained
``executors.Attempt`` (command, environment, directory, paths, limits,
options) that every executor receives, or into the words of why it cannot
(a command using a value that is not available). It holds no run state: the
outputs it reads are the core's, passed in at construction.

Files of an attempt (``layout.RunLayout``): its log, ``logs/<task>/<target>.<n>.log``,
and the file named by ``$FLEETRUN_OUTPUT``, ``outputs/<task>/<target>.<n>.outputs``. The
output files live apart from the logs on purpose: after every successful
attempt the executor looks its output file up (usually to find nothing), and
a lookup in the logs directory waits behind the children that are creating
their logs there at the same moment; in ``outputs/`` only tasks that publish
something create files.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fleetrun.engine._options import RunOptions
from fleetrun.executors import Attempt, Executor, Handle
from fleetrun.layout import RunLayout
from fleetrun.plan import (
    Graph,
    MissingValueError,
    OutputNameClash,
    Target,
    attempt_env,
    dep_outputs,
    render_command,
    task_env,
)
from fleetrun.runs_on import ExecutorOptions


class _TaskSetup:
    """What every attempt of one task shares in one run (built on its first attempt)."""

    __slots__ = ("cwd", "env", "executor", "logs", "options", "outs")

    def __init__(
        self,
        env: Mapping[str, str],
        cwd: str | None,
        logs: str,
        outs: str,
        executor: Executor,
        options: ExecutorOptions,
    ) -> None:
        self.env = env
        self.cwd = cwd
        self.logs = logs
        self.outs = outs
        self.executor = executor
        self.options = options


class AttemptFactory:
    """Resolves the attempts of one run (see the module doc)."""

    __slots__ = ("_executors", "_graph", "_layout", "_options", "_outputs", "_setup", "_targets")

    def __init__(
        self,
        graph: Graph,
        options: RunOptions,
        executors: Mapping[str, Executor],
        outputs: Mapping[int, Mapping[str, str]],
    ) -> None:
        self._graph = graph
        self._options = options
        self._executors = executors
        self._outputs = outputs
        # Absolute: a task in another directory still finds its $FLEETRUN_OUTPUT.
        self._layout = RunLayout(Path(options.run_dir).absolute())
        self._setup: dict[str, _TaskSetup] = {}
        self._targets: dict[str, tuple[Target, Mapping[str, Any], str]] = {}

    def executor(self, j: int) -> Executor:
        """The executor that runs node ``j``'s attempts (its task's ``runs_on``)."""
        return self._task_setup(self._graph.nodes[j].task).executor

    def _target(self, name: str) -> tuple[Target, Mapping[str, Any], str]:
        """The target, its attributes as executors see them (``ssh`` resolved) and its
        file name, once per target."""
        got = self._targets.get(name)
        if got is None:
            target = self._graph.plan.targets[name]
            got = self._targets[name] = (target, target.attributes(), RunLayout.stem("", name))
        return got

    def _task_setup(self, task_name: str) -> _TaskSetup:
        """The task's shared environment, directory and executor (created once per task)."""
        setup = self._setup.get(task_name)
        if setup is None:
            plan = self._graph.plan
            task = plan.tasks[task_name]
            logs = self._layout.task_logs(task_name)
            outs = self._layout.task_outputs(task_name)
            os.makedirs(logs, mode=0o700, exist_ok=True)
            os.makedirs(outs, mode=0o700, exist_ok=True)
            # A relative ``cwd`` is relative to the plan's directory.
            cwd = os.path.join(plan.base_dir, task.cwd) if task.cwd else str(plan.base_dir)
            setup = _TaskSetup(
                task_env(self._graph, task, self._options.run_id),
                os.path.abspath(cwd),
                logs,
                outs,
                self._executors[task.runs_on],
                task.executor_options,
            )
            self._setup[task_name] = setup
        return setup

    def build(
        self,
        j: int,
        n: int,
        on_started: Callable[[Handle], None],
        on_output: Callable[[str], None] | None,
    ) -> Attempt | str:
        """Attempt ``n`` of node ``j``, resolved; or why it cannot run (redacted)."""
        graph = self._graph
        opts = self._options
        node = graph.nodes[j]
        task = graph.plan.tasks[node.task]
        setup = self._task_setup(node.task)
        if node.target is None:
            target, attrs, stem = None, _NO_ATTRS, RunLayout.stem(node.task, None)
        else:
            target, attrs, stem = self._target(node.target)
        deps = dep_outputs(node, self._outputs) if node.requires else {}
        try:
            command = render_command(graph, node, deps, task=task, target=target)
        except MissingValueError as e:
            return opts.redactor.redact(f"cannot render the command: {e}")
        output_path = RunLayout.outputs_file(setup.outs, stem, n)
        try:
            env_extra = attempt_env(opts.run_id, node, n, output_path, deps)
        except OutputNameClash as e:
            return opts.redactor.redact(f"cannot set the command's environment: {e}")
        # Positional: this runs once per attempt (see Attempt for the order).
        return Attempt(
            opts.run_id,
            node.key,
            node.task,
            node.target,
            n,
            command,
            opts.redactor.redact(command),
            setup.env,
            env_extra,
            setup.cwd,
            RunLayout.log_file(setup.logs, stem, n),
            output_path,
            task.timeout,
            opts.grace,
            opts.redactor,
            on_started,
            on_output,
            attrs,
            setup.options,
        )


_NO_ATTRS: Mapping[str, Any] = {}
