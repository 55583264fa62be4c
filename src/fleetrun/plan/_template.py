"""Command templates: ``{{ target.name }}``, ``{{ vars.x }}``, ``{{ tasks.t.outputs.k }}``.

A template is parsed once into literal text and references. Rendering inserts
each referenced value shell-quoted, so a target named ``a; rm -rf ~`` stays one
word; ``{{ raw vars.flags }}`` inserts a value as it is, for the rare value that
is meant to be shell syntax. Nothing is evaluated: a reference is a dotted path,
never an expression.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fleetrun.errors import Diagnostic, Location, PlanError

if TYPE_CHECKING:
    from fleetrun.plan._model import Target

_EXPR = re.compile(r"\{\{(.*?)\}\}", re.S)
_PATH = re.compile(r"^(raw\s+)?([A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*)*)$")
_ROOTS = ("target", "vars", "tasks")


@dataclass(frozen=True, slots=True)
class Ref:
    """One ``{{ ... }}`` in a template: its dotted path and whether it is raw."""

    path: tuple[str, ...]
    raw: bool = False

    def __str__(self) -> str:
        return ("raw " if self.raw else "") + ".".join(self.path)


def _stringify(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed command template: alternating literal text and references."""

    source: str
    parts: tuple[str | Ref, ...]

    @classmethod
    def parse(cls, source: str, location: Location | None = None) -> Template:
        """Parse ``source``; raise ``PlanError`` for a malformed ``{{ }}``."""
        parts: list[str | Ref] = []
        problems: list[Diagnostic] = []
        pos = 0
        for m in _EXPR.finditer(source):
            if m.start() > pos:
                parts.append(source[pos : m.start()])
            inner = m.group(1).strip()
            pm = _PATH.match(inner)
            if pm is None or pm.group(2).split(".")[0] not in _ROOTS:
                problems.append(
                    Diagnostic(
                        location,
                        f"cannot read template expression {{{{ {inner} }}}}",
                        key="run",
                        fix="use {{ target.<attr> }}, {{ vars.<name> }} or "
                        "{{ tasks.<task>.outputs.<key> }} (prefix with 'raw ' to skip quoting)",
                    )
                )
            else:
                parts.append(Ref(tuple(pm.group(2).split(".")), raw=pm.group(1) is not None))
            pos = m.end()
        if pos < len(source):
            parts.append(source[pos:])
        rest = _EXPR.sub("", source)
        if "{{" in rest or "}}" in rest:
            problems.append(
                Diagnostic(
                    location,
                    "unbalanced '{{' or '}}' in template",
                    key="run",
                    fix="close every '{{' with '}}'",
                )
            )
        if problems:
            raise PlanError(problems)
        return cls(source, tuple(parts))

    @property
    def refs(self) -> tuple[Ref, ...]:
        """Every reference, in order of appearance."""
        return tuple(p for p in self.parts if isinstance(p, Ref))

    @property
    def output_refs(self) -> tuple[tuple[str, str], ...]:
        """``(task, key)`` for each ``{{ tasks.<task>.outputs.<key> }}``."""
        return tuple(
            (r.path[1], r.path[3])
            for r in self.refs
            if r.path[0] == "tasks" and len(r.path) == 4 and r.path[2] == "outputs"
        )

    @property
    def is_static(self) -> bool:
        """True when the template needs no run-time outputs."""
        return not self.output_refs

    def render(
        self,
        target: Target | None,
        vars: Mapping[str, Any],
        outputs: Mapping[str, Mapping[str, str]] | None = None,
    ) -> str:
        """Insert values, shell-quoted unless raw. Unknown names raise ``KeyError``."""
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = _stringify(lookup(part.path, target, vars, outputs or {}))
            out.append(value if part.raw else shlex.quote(value))
        return "".join(out)


def lookup(
    path: tuple[str, ...],
    target: Target | None,
    vars: Mapping[str, Any],
    outputs: Mapping[str, Mapping[str, str]],
) -> Any:
    """Resolve one dotted path; raise ``KeyError`` naming what is missing."""
    root = path[0]
    if root == "target":
        if target is None or len(path) != 2:
            raise KeyError(".".join(path))
        if path[1] == "name":
            return target.name
        return target.attrs[path[1]]
    if root == "vars":
        if len(path) != 2:
            raise KeyError(".".join(path))
        return vars[path[1]]
    if root == "tasks" and len(path) == 4 and path[2] == "outputs":
        published = outputs.get(path[1], {})
        if path[3] not in published:
            raise KeyError(
                f"tasks.{path[1]}.outputs.{path[3]} ({path[1]} published "
                + (f"only {', '.join(sorted(published))}" if published else "no outputs")
                + "; a task publishes key=value lines to $FLEETRUN_OUTPUT)"
            )
        return published[path[3]]
    raise KeyError(".".join(path))
