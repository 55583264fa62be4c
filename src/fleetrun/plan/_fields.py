"""Typed reading of YAML nodes with one diagnostic per problem.

Every accessor returns ``None`` after recording a diagnostic when the value is
not what it should be, so the loader goes on and reports every problem of the
file in one pass. Key paths are written the way users see them:
``tasks.k8s.needs[0]``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Iterator

from fleetrun.errors import Diagnostic, Location
from fleetrun.plan._units import (
    DURATION_HELP,
    duration_hint,
    in_digits,
    is_negative,
    parse_duration,
)
from fleetrun.plan._written import as_written
from fleetrun.plan._yaml import Scalar, YMap, YNode, YScalar, YSeq, type_name


def _not_a_duration(node: YScalar, positive: bool) -> tuple[str, str]:
    """Why a scalar is no duration, in the words of the YAML it was written in:
    the message and the fix."""
    v, written = node.value, node.source.strip()
    if isinstance(v, bool):
        return (
            f"{written} is read by YAML as a boolean, not a duration",
            'quote a duration, like "30s", or write one such as 30s, 5m or 1h30m',
        )
    if v is None:
        shown = "nothing" if not written else written if written == "null" else f"{written} (null)"
        return (f"{shown} is not a duration", f"{DURATION_HELP}, or leave the key out")
    if is_negative(v):
        least = "longer than zero" if positive else "zero or longer"
        shown = repr(v) if isinstance(v, str) else written
        return (f"{shown} is below zero: a duration must be {least}", DURATION_HELP)
    hint = duration_hint(v) if isinstance(v, str) else ""
    return (f"{as_written(v)} is not a duration{hint}", DURATION_HELP)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _as_text(value: Scalar) -> str:
    """A scalar as a command shows it: ``true``, ``8``, ``1.1``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def yaml_reading(node: YNode) -> str:
    """How YAML read an unquoted scalar that is not text, in words, when that is not
    what was written: ``YAML reads no as false``, ``YAML reads 010 as the number 8``;
    else an empty string."""
    if not isinstance(node, YScalar) or node.style is not None or isinstance(node.value, str):
        return ""
    written, value = node.source.strip(), node.value
    if value is None or written == _as_text(value):
        return ""
    what = "" if isinstance(value, bool) else "the number "
    return f"YAML reads {written} as {what}{_as_text(value)}"


def quote_fix(node: YNode) -> str:
    """The fix for an unquoted scalar that YAML read as a boolean or a number where
    text is meant: quote it (empty for anything else)."""
    if not isinstance(node, YScalar) or node.style is not None:
        return ""
    if isinstance(node.value, str) or node.value is None:
        return ""
    return f"quote it to keep the text: '{node.source.strip()}'"


def _numeric(expected: str) -> bool:
    """Whether a number would do where ``expected`` (``an integer or a list``)."""
    return "an integer" in expected or "a number" in expected


def join(key: str, sub: str | int) -> str:
    """Extend a key path: ``join("tasks", "a")`` -> ``tasks.a``; ints index lists."""
    if isinstance(sub, int):
        return f"{key}[{sub}]"
    return f"{key}.{sub}" if key else sub


class Ctx:
    """The file being read and the shared list of problems found so far."""

    __slots__ = ("file", "problems")

    def __init__(self, file: str, problems: list[Diagnostic]) -> None:
        self.file = file
        self.problems = problems

    def loc(self, node: YNode) -> Location:
        """The location of ``node`` in this file."""
        return Location(self.file, node.line, node.column)

    def inner_loc(self, node: YNode, offset: int) -> Location:
        """Where character ``offset`` (0-based) of a scalar's text lies in the file.

        Exact for one-line plain and quoted scalars whose text has no escapes;
        otherwise the scalar's own start, which is still the right place to look.
        """
        if not isinstance(node, YScalar) or node.multiline or not isinstance(node.value, str):
            return self.loc(node)
        text = node.value
        # Quoted text maps one to one onto the file only without escapes.
        plain_single = node.style == "'" and "'" not in text
        plain_double = (
            node.style == '"' and text.isprintable() and not any(c in '\\"' for c in text)
        )
        if node.style is not None and not (plain_single or plain_double):
            return self.loc(node)
        quote = 0 if node.style is None else 1
        return Location(self.file, node.line, node.column + quote + offset)

    def error(self, node: YNode, key: str, message: str, fix: str = "") -> None:
        """Record one problem at ``node``."""
        self.problems.append(Diagnostic(self.loc(node), message, key=key, fix=fix))

    def error_at(self, loc: Location, key: str, message: str, fix: str = "") -> None:
        """Record one problem at an explicit location."""
        self.problems.append(Diagnostic(loc, message, key=key, fix=fix))

    def wrong_type(
        self,
        node: YNode,
        key: str,
        expected: str,
        fix: str = "",
        text: bool | None = None,
        most: float | None = None,
    ) -> None:
        """Record that ``node`` is not of the ``expected`` type. ``text``: a string
        would have done (default: when ``expected`` is ``a string``); then an
        unquoted ``no``, ``on`` or ``010`` that YAML read as a boolean or a number
        is said to be one, with the fix to quote it. ``most``: the largest value
        the key takes (a number written as text past it is told so)."""
        if _numeric(expected) and isinstance(node, YScalar) and isinstance(node.value, str):
            digits = in_digits(node.value.strip())
            if digits is not None and node.style is None:
                # YAML reads 1e12 (no dot, no exponent sign) as text, not a number.
                over = most is not None and float(digits) > most
                self.error(
                    node,
                    key,
                    f"{as_written(node.value)} is text to YAML, not a number",
                    f"write it in digits, at most {most:.15g}"
                    if over
                    else f"write it in digits ({digits})",
                )
                return
            if digits is not None:
                fix = fix or f"write it without quotes: {digits}"
        message = f"expected {expected}, got {type_name(node)}"
        if text if text is not None else expected == "a string":
            reading = yaml_reading(node)
            message += f" ({reading})" if reading else ""
            fix = fix or quote_fix(node)
        self.error(node, key, message, fix or f"write {expected} here")

    def scalar(self, node: YScalar, key: str) -> Scalar:
        """A scalar's value, for variables and attributes (any type): a number that
        YAML read from other text (``1.10`` as 1.1, ``010`` as 8) is reported, since
        a command would show it changed."""
        value = node.value
        if isinstance(value, int | float) and not isinstance(value, bool):
            reading = yaml_reading(node)
            if reading:
                self.error(
                    node,
                    key,
                    f"{reading}, and a command would show {_as_text(value)}",
                    f"{quote_fix(node)}, or write {_as_text(value)}",
                )
        return value

    def mapping(self, node: YNode, key: str, allow_null: bool = True) -> YMap | None:
        """``node`` as a mapping; a null stands for an empty one when allowed."""
        if isinstance(node, YMap):
            return node
        if allow_null and isinstance(node, YScalar) and node.value is None:
            return YMap(node.line, node.column, {})
        self.wrong_type(node, key, "a mapping")
        return None

    def items(self, m: YMap, key: str, allowed: Iterable[str]) -> Iterator[tuple[str, YNode]]:
        """Known ``(name, value)`` entries of ``m``; unknown keys are reported."""
        allowed = tuple(allowed)
        for name, (knode, value) in m.entries.items():
            if name in allowed:
                yield name, value
            else:
                self.error(
                    knode,
                    join(key, name),
                    f"unknown key {name!r}{did_you_mean(name, allowed)}",
                    "use one of: " + ", ".join(allowed),
                )

    def string(self, node: YNode, key: str, nonempty: bool = True) -> str | None:
        """A string value (numbers are not silently turned into text)."""
        if isinstance(node, YScalar) and isinstance(node.value, str):
            if nonempty and not node.value.strip():
                self.error(node, key, "must not be empty", "write a value, or remove the key")
                return None
            return node.value
        self.wrong_type(node, key, "a string")
        return None

    def scalar_text(self, node: YNode, key: str) -> str | None:
        """A scalar as text: strings as they are, numbers and booleans as written (``yes``)."""
        if isinstance(node, YScalar) and node.value is not None:
            return node.value if isinstance(node.value, str) else node.source
        self.wrong_type(node, key, "a string")
        return None

    def integer(
        self,
        node: YNode,
        key: str,
        minimum: int | None = None,
        maximum: tuple[int, str] | None = None,
    ) -> int | None:
        """An integer, at least ``minimum``; ``maximum``: the largest allowed and
        why (said in the fix)."""
        v = node.value if isinstance(node, YScalar) else None
        if not isinstance(v, int) or isinstance(v, bool):
            self.wrong_type(node, key, "an integer")
            return None
        if minimum is not None and v < minimum:
            self.error(
                node, key, f"must be at least {minimum}, got {v}", f"write {minimum} or more"
            )
            return None
        if maximum is not None and v > maximum[0]:
            self.error(
                node,
                key,
                f"must be at most {maximum[0]}, got {v}",
                f"write {maximum[0]} or fewer: {maximum[1]}",
            )
            return None
        return v

    def boolean(self, node: YNode, key: str) -> bool | None:
        """``true`` or ``false``."""
        if isinstance(node, YScalar) and isinstance(node.value, bool):
            return node.value
        self.wrong_type(node, key, "true or false")
        return None

    def duration(self, node: YNode, key: str, positive: bool = False) -> float | None:
        """Seconds from ``30s``, ``5m``, ``1h30m``, ``250ms`` or a plain number."""
        if not isinstance(node, YScalar):
            self.error(node, key, f"{type_name(node)} is not a duration", DURATION_HELP)
            return None
        v = node.value
        seconds = parse_duration(v)
        if seconds is None:
            self.error(node, key, *_not_a_duration(node, positive))
            return None
        if positive and seconds <= 0:
            self.error(node, key, "must be longer than zero", DURATION_HELP)
            return None
        return seconds

    def seq(self, node: YNode, key: str, single_ok: bool = False) -> list[YNode] | None:
        """A list; with ``single_ok`` a lone scalar counts as a list of one."""
        if isinstance(node, YSeq):
            return node.items
        if isinstance(node, YScalar) and node.value is None:
            return []
        if single_ok and isinstance(node, YScalar):
            return [node]
        self.wrong_type(node, key, "a list")
        return None

    def listed_twice(self, node: YNode, key: str) -> None:
        """Report each text listed a second time in the list at ``node`` (its type and
        items checked already)."""
        seen: set[str] = set()
        for i, item in enumerate(node.items if isinstance(node, YSeq) else ()):
            if isinstance(item, YScalar) and isinstance(item.value, str):
                if item.value in seen:
                    self.error(
                        item,
                        join(key, i),
                        f"{as_written(item.value)} is listed twice",
                        "list it once",
                    )
                seen.add(item.value)

    def names(self, node: YNode, key: str, single_ok: bool = False) -> list[tuple[str, YNode]]:
        """A list of unique non-empty strings, each with its node."""
        out: list[tuple[str, YNode]] = []
        seen: set[str] = set()
        for i, item in enumerate(self.seq(node, key, single_ok) or []):
            s = self.string(item, join(key, i))
            if s is None:
                continue
            if s in seen:
                self.error(item, join(key, i), f"{as_written(s)} is listed twice", "list it once")
                continue
            seen.add(s)
            out.append((s, item))
        return out


def finite(value: float) -> bool:
    """Neither NaN nor infinite."""
    return math.isfinite(value)
