"""Target patterns: what ``--targets``/``-t`` of ``apply``, ``plan`` and ``exec`` select.

One parser for the three commands, in the manner of Ansible's host patterns.
A selection is a list of terms (the values given, split on ``,`` and ``:``):

- a target name, a group name, ``all`` or ``*``;
- a glob (``web*``, ``db-?``, ``eu-[nw]*``) over target and group names: a
  group that matches brings its members;
- a comparison of an attribute, ``geo==europe``, ``validators>=2``,
  ``role!=admin``: a bare word after the operator is text (``europe``), a
  number a number, ``true``/``false``/``null`` themselves; quoted text
  (``"geo == 'eu west'"``) and whole ``where`` expressions (with ``and``,
  ``or``, ``not``) work too, as in a group's ``where``;
- ``&TERM``: only targets that are also in TERM (intersection);
- ``!TERM``: leave out the targets of TERM (exclusion).

The targets of the plain terms are joined (``web:db`` is both groups; none
at all stands for every target, so ``!admin`` alone is "all but admin"),
then each ``&`` term narrows them and each ``!`` term removes its targets,
whatever order they were written in. A value that is exactly a known target
or group name is that name, even with ``,``, ``:``, ``*`` or ``!`` in it.

Mistakes are ``UsageError`` naming the term: an unknown name (with the
closest one), a glob that matches nothing, an attribute that no target has,
an expression that does not parse.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Collection, Iterable

from fleetrun.errors import UsageError
from fleetrun.plan._expr import (
    ExprError,
    attribute_values,
    compile_where,
    unknown_names,
)
from fleetrun.plan._model import ALL_TARGETS, Plan

_GLOB = re.compile(r"[*?\[]")
_COMPARE = re.compile(r"==|!=|<=|>=|<|>")
PATTERN_HELP = (
    "targets, groups or patterns: web* (glob), geo==europe (attribute), a:b (either), "
    "a:&b (both), !admin (not); comma-separated, repeatable"
)
"""What ``--targets``/``-t`` accepts, in the words of every command's help."""
_LISTED = 8
"""An unknown name's error lists this many of the valid names, then a count."""


def _names_error(unknown: str, known: Iterable[str]) -> UsageError:
    """``unknown target or group 'x' (did you mean 'y'?)``, or the valid names."""
    names = list(known)
    close = difflib.get_close_matches(unknown, names, n=1)
    if close:
        return UsageError(f"unknown target or group {unknown!r} (did you mean {close[0]!r}?)")
    shown = ", ".join(names[:_LISTED]) + (
        f", ... ({len(names)} in all)" if len(names) > _LISTED else ""
    )
    return UsageError(f"unknown target or group {unknown!r}; known: {shown or 'none'}")


def split_terms(values: Iterable[str], known: Collection[str] = ()) -> list[str]:
    """The terms of ``values`` (names, as ``split_names`` gives them): each split
    on ``:`` outside quotes (``&`` and ``!`` stay on the term they start), except
    a value that is exactly one of ``known``. Blanks around terms are dropped,
    and so are empty terms."""
    out: list[str] = []
    for value in values:
        if value.strip() in known:
            out.append(value.strip())
            continue
        out.extend(t.strip() for t in _split_colons(value) if t.strip())
    return out


def _split_colons(text: str) -> list[str]:
    """``text`` split on the colons that stand outside '...' and "..."."""
    parts, start, quote = [], 0, ""
    for i, c in enumerate(text):
        if quote:
            quote = "" if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == ":":
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def select_targets(plan: Plan, terms: Iterable[str]) -> set[str]:
    """The targets that ``terms`` (``split_terms``) select in ``plan``; raises
    ``UsageError`` for a term that is wrong (see the module doc)."""
    union: set[str] = set()
    plain = False
    narrow: list[set[str]] = []
    leave: set[str] = set()
    for term in terms:
        if term in plan.targets or term in plan.groups:
            union |= _term(plan, term)
            plain = True
        elif term.startswith("&"):
            narrow.append(_term(plan, term[1:].strip()))
        elif term.startswith("!"):
            leave |= _term(plan, term[1:].strip())
        else:
            union |= _term(plan, term)
            plain = True
    chosen = union if plain else set(plan.targets)
    for only in narrow:
        chosen &= only
    return chosen - leave


def _term(plan: Plan, term: str) -> set[str]:
    """The targets of one term (no ``&``/``!``)."""
    if not term:
        raise UsageError("a target pattern has an empty term (after '&' or '!')")
    if term in plan.targets:
        return {term}
    if term in plan.groups:
        return set(plan.groups[term])
    if term in (ALL_TARGETS, "*"):
        return set(plan.targets)
    if _COMPARE.search(term) or " " in term.strip():
        return _where(plan, term)
    if _GLOB.search(term):
        found = {t for t in plan.targets if fnmatch.fnmatchcase(t, term)}
        for group in (g for g in plan.groups if fnmatch.fnmatchcase(g, term)):
            found.update(plan.groups[group])
        if not found and not any(fnmatch.fnmatchcase(g, term) for g in plan.groups):
            raise UsageError(f"the pattern {term!r} matches no target or group")
        return found
    raise _names_error(term, [*plan.targets, *plan.groups])


def _where(plan: Plan, term: str) -> set[str]:
    """The targets an attribute comparison (``geo==europe``) or expression selects;
    a bare word right of an operator that is no attribute is text there."""
    attrs = attribute_values(t.attrs for t in plan.targets.values())
    try:
        where = compile_where(term, lambda w: w not in attrs and w != "name")
    except ExprError as e:
        raise UsageError(f"cannot read the target pattern {term!r}: {e.message}") from None
    for unknown in unknown_names(where, attrs, strict=True):
        raise UsageError(f"the target pattern {term!r}: {unknown.message}; {unknown.fix}")
    try:
        return {t.name for t in plan.targets.values() if where.matches(t.name, t.attrs)}
    except ExprError as e:
        raise UsageError(f"the target pattern {term!r}: {e.message}") from None
