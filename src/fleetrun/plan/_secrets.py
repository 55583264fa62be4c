"""Which environment names are secret, and the values that must be redacted."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Mapping


def matches_secret_pattern(name: str, patterns: Iterable[str]) -> bool:
    """True when ``name`` matches a pattern, case-insensitively.

    A pattern with ``*``, ``?`` or ``[`` is a glob (``*_PASSWORD``); one
    without is a substring (``TOKEN`` matches ``GITHUB_TOKEN``).
    """
    upper = name.upper()
    for p in patterns:
        p = p.upper()
        if any(c in p for c in "*?["):
            if fnmatch.fnmatchcase(upper, p):
                return True
        elif p in upper:
            return True
    return False


def secret_names_and_values(
    listed: Iterable[str], patterns: Iterable[str], envs: Iterable[Mapping[str, str]]
) -> tuple[set[str], set[str]]:
    """Secret names and values from the plan's environments and the process environment.

    Names: those ``listed`` plus every environment name matching ``patterns``.
    Values: the non-empty values of those names in ``envs``, plus the process
    environment's values of the ``listed`` names (a task inherits them).
    """
    patterns = tuple(patterns)
    names = set(listed)
    values: set[str] = set()
    for env in envs:
        for k, v in env.items():
            if k in names or matches_secret_pattern(k, patterns):
                names.add(k)
                if v:
                    values.add(v)
    for k in listed:
        found = os.environ.get(k)
        if found:
            values.add(found)
    return names, values
