"""Command templates: ``{{ target.name }}``, ``{{ vars.x }}``, ``{{ tasks.t.outputs.k }}``.

A template is parsed once into literal text and references, and the shell
context of each reference (bare word, inside ``"..."``, inside ``'...'``) is
worked out then (``_shquote``). Rendering inserts each value quoted for its
context, so ``echo "deploying {{ target.name }}"`` prints the name as it is and
a target named ``x" ; touch PWNED ; echo "`` stays text. A reference where no
quoting is safe (a here-document, a comment, backticks, ``$((...))``) is
refused at parse time. ``{{ raw vars.flags }}`` inserts a value as it is, for
the rare value that is meant to be shell syntax. Nothing is evaluated: a
reference is a dotted path, never an expression.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from fleetrun.errors import Diagnostic, Location, PlanError
from fleetrun.plan._shquote import BARE, QUOTERS, fix_for, scan


class Target(Protocol):
    """What a template reads of a target (``plan.Target`` is one): its name and
    attributes."""

    @property
    def name(self) -> str: ...

    @property
    def attrs(self) -> Mapping[str, Any]: ...


_EXPR = re.compile(r"\{\{(.*?)\}\}", re.S)
_PATH = re.compile(r"^(raw\s+)?([A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*)*)$")
_ROOTS = ("target", "vars", "tasks")


@dataclass(frozen=True, slots=True)
class Ref:
    """One ``{{ ... }}`` in a template: its dotted path, whether it is raw, and
    its shell context (``bare``, ``double`` or ``single``), which decides the quoting."""

    path: tuple[str, ...]
    raw: bool = False
    context: str = BARE

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
    def parse(
        cls,
        source: str,
        location: Location | None = None,
        locate: Callable[[int], Location] | None = None,
    ) -> Template:
        """Parse ``source``; raise ``PlanError`` for a malformed ``{{ }}`` or one that
        stands where no quoting is safe. ``locate`` maps a character offset of
        ``source`` to its place in the file (default: ``location``)."""
        parts: list[str | Ref] = []
        problems: list[Diagnostic] = []
        literals: list[str] = []
        offsets: list[int] = []
        holes: list[tuple[int, int]] = []  # (index in parts, index in offsets) of each Ref
        pos = 0
        for m in _EXPR.finditer(source):
            literals.append(source[pos : m.start()])
            offsets.append(m.start())
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
                holes.append((len(parts) - 1, len(offsets) - 1))
            pos = m.end()
        if pos < len(source):
            parts.append(source[pos:])
        literals.append(source[pos:])
        contexts = scan(literals)
        for i, k in holes:
            part = parts[i]
            assert isinstance(part, Ref)
            context, reason = contexts[k]
            if reason and not part.raw:
                at = locate(offsets[k]) if locate else location
                problems.append(
                    Diagnostic(
                        at,
                        f"{{{{ {part} }}}} stands {reason}, where no quoting keeps the value inert",
                        key="run",
                        fix=fix_for(reason, f"{{{{ {part} }}}}"),
                    )
                )
            elif context != BARE:
                parts[i] = Ref(part.path, part.raw, context)
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
        """Insert values, quoted for where each stands unless raw.

        Unknown names raise ``KeyError``."""
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = _stringify(lookup(part.path, target, vars, outputs or {}))
            out.append(value if part.raw else QUOTERS[part.context](value))
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
