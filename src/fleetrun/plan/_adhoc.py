"""Ad-hoc commands across a fleet (``fleetrun exec``): a request in, a one-task plan out.

``fleetrun exec FILE [-t SEL] [--runs-on local|ssh] [-j N] [--timeout D] -- CMD [ARGS...]``
becomes an ``ExecRequest``; ``exec_plan`` turns it into an ordinary ``Plan``
with a single task ``exec`` fanned over the selected targets, so the run is
journaled, retried and reported like any other. ``FILE`` is either a plan
(its targets, groups, pools, env, secrets and ``ssh:`` defaults apply; its
tasks do not run) or a fleet file (a mapping of targets, as a plan's
``targets:`` file). The command words are joined with spaces, as ``ssh``
joins them, and templated like ``run`` (``{{ target.name }}``, attributes,
vars): inserted values are shell-quoted.

The plan is named ``<plan>.exec`` so that its lock never collides with a
deploy of the plan itself, and its ``source_hash`` covers the file and the
request, so ``retry`` can tell whether the same exec is being re-run.

A fleet file that defines groups writes its targets under ``targets:`` and
its groups under ``groups:`` (and may set ``ssh:`` defaults, ``vars`` and the
rest of a plan's keys but ``tasks``); a bare mapping of targets has no groups.
``-t`` takes the patterns of ``_pattern`` (``web*``, ``!db1``, ``role==web``). A
session journals ``ExecRequest.to_json()`` and rebuilds the plan from it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fleetrun.errors import Diagnostic, Location, PlanError, UsageError
from fleetrun.plan._loader import TOP_KEYS, load_plan, load_plan_text
from fleetrun.plan._model import ALL_TARGETS, RUNS_ON, Plan, Task
from fleetrun.plan._readfile import UnreadableFile, read_bounded
from fleetrun.plan._select import split_names, targets_named
from fleetrun.plan._template import Template

EXEC_TASK = "exec"
"""The name of the one task of an exec plan (its instances are ``exec@<target>``)."""


@dataclass(frozen=True, slots=True)
class ExecRequest:
    """What ``fleetrun exec`` was asked to do (journaled, so ``retry`` can rebuild it).

    ``targets``: target and group names (None: every target); ``runs_on``:
    ``local``, ``ssh`` or None (``ssh`` when every selected target has SSH
    settings, else ``local``); ``timeout``: seconds per attempt.
    """

    file: str
    command: tuple[str, ...]
    targets: tuple[str, ...] | None = None
    runs_on: str | None = None
    timeout: float | None = None

    @property
    def text(self) -> str:
        """The command line as one shell text (words joined with spaces, like ssh)."""
        return " ".join(self.command)

    def to_json(self) -> dict[str, Any]:
        """The request as a JSON object."""
        return {
            "file": self.file,
            "command": list(self.command),
            "targets": None if self.targets is None else list(self.targets),
            "runs_on": self.runs_on,
            "timeout": self.timeout,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ExecRequest:
        """The request ``to_json`` wrote."""
        targets = data.get("targets")
        return cls(
            file=str(data["file"]),
            command=tuple(map(str, data["command"])),
            targets=None if targets is None else tuple(map(str, targets)),
            runs_on=data.get("runs_on"),
            timeout=data.get("timeout"),
        )


def is_fleet_file(text: str) -> bool:
    """True when ``text`` is a mapping of targets rather than a plan."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return False  # let the plan loader report it with its location
    if not isinstance(data, dict) or not data:
        return False
    return "tasks" not in data and not set(map(str, data)) & set(TOP_KEYS)


def exec_plan(request: ExecRequest) -> Plan:
    """The one-task plan that runs ``request`` (raises ``PlanError`` or ``UsageError``)."""
    path = Path(request.file)
    if not request.command or not request.text.strip():
        raise UsageError("exec needs a command after --")
    if request.runs_on is not None and request.runs_on not in RUNS_ON:
        raise UsageError(f"--runs-on must be one of {', '.join(RUNS_ON)}")
    try:
        text = read_bounded(path).decode("utf-8")
    except UnreadableFile as e:
        fix = f"; {e.fix}" if e.fix else ""
        raise UsageError(f"cannot read {request.file}: {e.reason}{fix}") from None
    except UnicodeDecodeError as e:
        raise UsageError(f"cannot read {request.file}: {e}") from None
    if is_fleet_file(text):
        # Reuse the loader's checks (ssh attributes included) on the fleet file.
        shell = f"name: {json.dumps(path.stem)}\ntargets: {json.dumps(path.name)}\n"
        shell += "tasks: {exec: {run: 'true'}}\n"
        base = load_plan_text(shell, str(path.parent / f"{path.stem}.exec.yaml"), path.parent)
        base = dataclasses.replace(base, path=path)
    else:
        # A plan, or a fleet file that names its targets and groups (no tasks).
        base = load_plan(path, require_tasks=False)
    selected = _select(base, request.targets)
    runs_on = request.runs_on
    if runs_on is None:
        with_ssh = all(base.targets[t].ssh is not None for t in selected)
        runs_on = "ssh" if selected and with_ssh else "local"
    where = Location(request.file, 1, 1)
    try:
        run = Template.parse(request.text, where)
    except PlanError as e:
        raise PlanError(
            [Diagnostic(None, f"the exec command: {d.message}", "", d.fix) for d in e.diagnostics]
        ) from None
    _check_refs(run, base, selected)
    task = Task(
        name=EXEC_TASK,
        run=run,
        for_each=ALL_TARGETS if request.targets is None else "exec-selection",
        targets=selected,
        timeout=request.timeout,
        runs_on=runs_on,
        location=where,
    )
    digest = hashlib.sha256(base.source_hash.encode())
    digest.update(json.dumps(request.to_json(), sort_keys=True).encode())
    groups = dict(base.groups)
    if request.targets is not None:
        groups["exec-selection"] = selected
    return dataclasses.replace(
        base,
        name=f"{base.name}.exec",
        source_hash=digest.hexdigest(),
        groups=groups,
        pools=base.pools,
        phases=(),
        tasks={EXEC_TASK: task},
    )


def _select(plan: Plan, names: Sequence[str] | None) -> tuple[str, ...]:
    """The targets named (targets or groups, comma-separated allowed), in fleet order."""
    if names is None:
        return tuple(plan.targets)
    wanted = targets_named(plan, split_names(names, [*plan.targets, *plan.groups]) or ())
    selected = tuple(t for t in plan.targets if t in wanted)
    if not selected:
        raise UsageError("the selection matches no target")
    return selected


def _check_refs(run: Template, plan: Plan, selected: Sequence[str]) -> None:
    """Refuse references an exec command cannot resolve (before anything runs)."""
    for ref in run.refs:
        root = ref.path[0]
        if root == "target" and len(ref.path) == 2 and ref.path[1] != "name":
            lacking = [t for t in selected if ref.path[1] not in plan.targets[t].attrs]
            if lacking:
                raise UsageError(
                    f"the exec command uses target.{ref.path[1]}, which target "
                    f"{lacking[0]!r} does not have"
                )
            continue
        if root == "tasks":
            raise UsageError("an exec command cannot use task outputs (there are no other tasks)")
        if root == "vars" and (len(ref.path) != 2 or ref.path[1] not in plan.vars):
            raise UsageError(f"the exec command uses {'.'.join(ref.path)}, which is not defined")
        if root == "target" and len(ref.path) != 2:
            raise UsageError(f"the exec command uses {'.'.join(ref.path)}: unknown name")
        if root not in ("target", "vars"):
            raise UsageError(f"the exec command uses {'.'.join(ref.path)}: unknown name")


def describe(request: ExecRequest) -> str:
    """One line naming the request (for history and reports)."""
    sel = ",".join(request.targets) if request.targets else "all"
    return f"exec on {sel} of {os.path.basename(request.file)}: {request.text}"
