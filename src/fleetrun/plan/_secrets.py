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

    Names: those ``listed`` plus every name in ``envs`` or the process
    environment matching ``patterns``. Values: the non-empty values of those
    names in ``envs`` and in the process environment (a task inherits it).
    """
    patterns = tuple(patterns)
    names = set(listed)
    values: set[str] = set()
    # The process environment too: tasks inherit it, so a DEPLOY_TOKEN set
    # where fleetrun runs must be masked like one set in the plan.
    for env in (*envs, os.environ):
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
