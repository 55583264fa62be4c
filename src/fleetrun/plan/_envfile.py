"""``env_file`` parsing: ``KEY=VALUE`` lines as written for shells and docker.

Accepted per line: blank lines, ``# comments``, an optional ``export`` prefix,
unquoted values (trailing `` # comment`` removed, surrounding blanks
stripped), ``'single'`` quotes (taken literally) and ``"double"`` quotes
(``\\n``, ``\\t``, ``\\"`` and ``\\\\`` escapes). Nothing is expanded: ``$X`` stays
``$X``. Malformed lines become diagnostics naming the line and column.
"""

from __future__ import annotations

import re

from fleetrun.errors import Diagnostic, Location
from fleetrun.plan._written import as_written

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LINE = re.compile(r"^(\s*)(?:export\s+)?([^=\s]*)\s*=\s*(.*?)\s*$")
_DQ_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def parse_env_file(text: str, file: str) -> tuple[dict[str, str], list[Diagnostic]]:
    """The variables of an env file, in order, and the problems found."""
    values: dict[str, str] = {}
    problems: list[Diagnostic] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        m = _LINE.match(raw)
        if m is None:
            problems.append(
                Diagnostic(
                    Location(file, lineno, len(raw) - len(raw.lstrip()) + 1),
                    "expected KEY=VALUE",
                    key="env_file",
                    fix="write one NAME=value per line ('#' starts a comment)",
                )
            )
            continue
        indent, name, rest = m.group(1), m.group(2), m.group(3)
        if not ENV_NAME.match(name):
            problems.append(
                Diagnostic(
                    Location(file, lineno, len(indent) + 1),
                    f"{as_written(name)} is not a valid environment variable name",
                    key="env_file",
                    fix="use letters, digits and '_', not starting with a digit",
                )
            )
            continue
        value, bad = _value(rest)
        if bad:
            problems.append(
                Diagnostic(
                    Location(file, lineno, raw.index("=") + 2),
                    f"unterminated quote in the value of {name}",
                    key="env_file",
                    fix="close the quote on the same line",
                )
            )
            continue
        if "\0" in value:
            problems.append(
                Diagnostic(
                    Location(file, lineno, raw.index("=") + 2),
                    f"the value of {name} holds a NUL byte, which no environment variable "
                    "can carry",
                    key="env_file",
                    fix="remove the NUL byte (the value would otherwise be cut short)",
                )
            )
            continue
        values[name] = value
    return values, problems


def _value(rest: str) -> tuple[str, bool]:
    """The value text after ``=``, and whether its quoting is broken."""
    if rest[:1] == "'":
        end = rest.find("'", 1)
        return (rest[1:end], False) if end > 0 else ("", True)
    if rest[:1] == '"':
        out: list[str] = []
        i = 1
        while i < len(rest):
            c = rest[i]
            if c == "\\" and i + 1 < len(rest):
                out.append(_DQ_ESCAPES.get(rest[i + 1], "\\" + rest[i + 1]))
                i += 2
                continue
            if c == '"':
                return "".join(out), False
            out.append(c)
            i += 1
        return "", True
    # Unquoted: an inline comment needs a blank before '#', as in shells.
    return re.split(r"\s+#", rest, maxsplit=1)[0].strip(), False
