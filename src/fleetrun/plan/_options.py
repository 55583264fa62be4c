"""Reading a task's ``runs_on`` and the keys its kind owns, through the kind's options class.

The kinds and their options classes live in ``fleetrun.runs_on``; this module
knows only how each option type is written in YAML (``READERS``), so a new kind
whose keys use those types needs nothing here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fleetrun.plan._cluster import read_resources
from fleetrun.plan._fields import Ctx, did_you_mean, join
from fleetrun.plan._yaml import YNode
from fleetrun.runs_on import (
    DEFAULT_KIND,
    KINDS,
    RUNS_ON,
    ExecutorOptions,
    OptionType,
    Script,
    option_keys,
    options_for,
)

READERS: Mapping[OptionType, Callable[[Ctx, YNode, str], Any]] = {
    "boolean": lambda ctx, node, key: ctx.boolean(node, key),
    "resources": read_resources,
}
"""How a value of each option type is read (None, or a partial value, after reporting)."""

OPTION_KEYS = tuple(option_keys())
"""Every task key some kind owns, in kind order (``keep_running``, ``resources``)."""


def read_runs_on(ctx: Ctx, f: Mapping[str, YNode], key: str) -> str | None:
    """The task's kind (``local`` when not given); None after reporting an unknown one."""
    if "runs_on" not in f:
        return DEFAULT_KIND
    node, sub = f["runs_on"], join(key, "runs_on")
    given = ctx.string(node, sub)
    if given is None:
        return None
    kind = KINDS.get(given)
    if kind is None:
        ctx.error(
            node,
            sub,
            f"unknown executor {given!r}{did_you_mean(given, RUNS_ON)}",
            "use one of: " + ", ".join(RUNS_ON),
        )
        return None
    if kind.per_target and "for_each" not in f:
        ctx.error(
            node,
            sub,
            f"runs_on: {given} runs on each target, but the task has no for_each",
            "add for_each: <group> (or 'all'), or run it locally",
        )
    return given


def read_options(
    ctx: Ctx, f: Mapping[str, YNode], key: str, kind: str | None, script: Script | None
) -> ExecutorOptions | None:
    """The task's options, typed by ``kind``'s class (None when ``kind`` is None: then
    the values are still checked, so every problem is reported in one pass).

    A key that ``kind`` does not own is a problem at that key."""
    values: dict[str, Any] = {}
    for name, (decl, owners) in option_keys().items():
        if name not in f:
            continue
        node, sub = f[name], join(key, name)
        if kind is not None and kind not in owners:
            ctx.error(
                node,
                sub,
                f"{name} is read only by runs_on: {' or '.join(owners)}; this task runs on {kind}",
                f"remove {name}, or set runs_on: {owners[0]}",
            )
            continue
        value = READERS[decl.type](ctx, node, sub)
        if value is not None:
            values[name] = value
    return options_for(kind, values, script) if kind is not None else None
