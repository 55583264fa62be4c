"""A task's ``runs_on`` and the keys its kind owns, through the kind's options class.

The kinds and their options classes live in ``fleetrun.runs_on``; the values are
validated by ``TaskSpec`` (each option type's model type is ``_spec.OPTION_TYPES``).
This module checks what the model cannot: that a fanned-out kind has a
``for_each``, and that a key is owned by the task's kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fleetrun.plan._fields import Ctx, join
from fleetrun.plan._spec import TaskSpec
from fleetrun.plan._yaml import YNode
from fleetrun.runs_on import (
    DEFAULT_KIND,
    KINDS,
    ExecutorOptions,
    Script,
    option_keys,
    options_for,
)

OPTION_KEYS = tuple(option_keys())
"""Every task key some kind owns, in kind order (``keep_running``, ``resources``)."""


def read_runs_on(
    ctx: Ctx, f: Mapping[str, YNode], spec: TaskSpec, bad: frozenset[str], key: str
) -> str | None:
    """The task's kind (``local`` when not given); None when its value was refused."""
    if "runs_on" not in f:
        return DEFAULT_KIND
    if "runs_on" in bad or spec.runs_on is None:
        return None
    given = spec.runs_on
    if KINDS[given].per_target and "for_each" not in f:
        ctx.error(
            f["runs_on"],
            join(key, "runs_on"),
            f"runs_on: {given} runs on each target, but the task has no for_each",
            "add for_each: <group> (or 'all'), or run it locally",
        )
    return given


def read_options(
    ctx: Ctx,
    f: Mapping[str, YNode],
    spec: TaskSpec,
    key: str,
    kind: str | None,
    script: Script | None,
) -> ExecutorOptions | None:
    """The task's options, typed by ``kind``'s class (None when ``kind`` is None).

    A key that ``kind`` does not own is a problem at that key."""
    values: dict[str, Any] = {}
    for name, (_, owners) in option_keys().items():
        if name not in f:
            continue
        if kind is not None and kind not in owners:
            ctx.error(
                f[name],
                join(key, name),
                f"{name} is read only by runs_on: {' or '.join(owners)}; this task runs on {kind}",
                f"remove {name}, or set runs_on: {owners[0]}",
            )
            continue
        value = getattr(spec, name)
        if value is not None:
            values[name] = value
    return options_for(kind, values, script) if kind is not None else None
