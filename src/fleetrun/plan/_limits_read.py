"""Reading ``pools`` (limits, throttle rules, adaptive settings) and ``rollout``.

Every problem is recorded on the ``Ctx`` with file:line:column and a fix; a
regular expression that does not compile is reported at the character where
Python's ``re`` gave up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from fractions import Fraction
from typing import cast

from fleetrun.plan._fields import Ctx, join
from fleetrun.plan._model import (
    ALL_TARGETS,
    AdaptiveSettings,
    Pool,
    Rollout,
    ThrottleRule,
)
from fleetrun.plan._spec import AdaptiveSpec, PoolSpec, RolloutSpec, Wave, keys_of, percent
from fleetrun.plan._validate import good_items, validate_fields, validate_node
from fleetrun.plan._written import as_written
from fleetrun.plan._yaml import YMap, YNode, YScalar, YSeq

ROLLOUT_KEYS = keys_of(RolloutSpec)


def read_pool(ctx: Ctx, name: str, knode: YNode, pm: YMap, key: str) -> Pool:
    """One entry of ``pools`` (``pm`` is its mapping): its values checked by ``PoolSpec``,
    then what the model cannot say (a limit given, regular expressions that compile)."""
    spec = validate_node(ctx, PoolSpec, pm, key)
    if "concurrency" not in pm.entries and "rate" not in pm.entries:
        ctx.error(knode, key, "the pool limits nothing", "give it a concurrency, a rate, or both")
    if "burst" in pm.entries and "rate" not in pm.entries:
        ctx.error(
            pm.entries["burst"][0],
            join(key, "burst"),
            "burst needs a rate",
            "add a rate such as 10/s, or remove burst",
        )
    throttle = None
    if "throttle" in pm.entries:
        throttle = _throttle(ctx, pm.entries["throttle"][1], join(key, "throttle"), spec)
    if spec is None:
        return Pool(name)
    adaptive = spec.adaptive
    return Pool(
        name,
        concurrency=spec.concurrency,
        rate=spec.rate,
        burst=spec.burst or 1,
        adaptive=(
            AdaptiveSettings(**adaptive.model_dump(exclude_none=True))
            if isinstance(adaptive, AdaptiveSpec)
            else AdaptiveSettings()
            if adaptive
            else None
        ),
        throttle=throttle,
        shared=spec.shared,
    )


def _throttle(ctx: Ctx, node: YNode, key: str, spec: PoolSpec | None) -> ThrottleRule | None:
    """The pool's ``throttle``: its regular expressions compiled (each problem reported
    at its character), then the rule from the checked values."""
    outputs: list[str] = []
    retry_after = None
    if isinstance(node, YMap):
        if not node.entries:
            ctx.error(node, key, "lists no signal", "give exit, output or retry_after")
        if "output" in node.entries:
            out, sub = node.entries["output"][1], join(key, "output")
            items = out.items if isinstance(out, YSeq) else [out]
            for i, item in enumerate(items):
                if isinstance(item, YScalar) and isinstance(item.value, str):
                    pattern = _regex(ctx, item, join(sub, i))
                    if pattern is not None:
                        outputs.append(pattern)
        if "retry_after" in node.entries:
            ra = node.entries["retry_after"][1]
            if isinstance(ra, YScalar) and isinstance(ra.value, str):
                retry_after = _regex(ctx, ra, join(key, "retry_after"), groups=1)
    t = spec.throttle if spec is not None else None
    if t is None:
        return None
    codes = [t.exit] if isinstance(t.exit, int) else t.exit or []
    return ThrottleRule(frozenset(codes), tuple(outputs), retry_after, t.attempts or 5)


def check_shared(ctx: Ctx, node: YMap, pools: Mapping[str, Pool]) -> None:
    """Two pools of one plan may not share one shared pool (a task drawing on
    both would take two of its slots); ``node`` is the ``pools`` mapping."""
    first: dict[str, str] = {}
    for name, pool in pools.items():
        if pool.shared is None:
            continue
        if pool.shared not in first:
            first[pool.shared] = name
            continue
        pm = node.entries[name][1]
        at = pm.entries["shared"][1] if isinstance(pm, YMap) else pm
        ctx.error(
            at,
            join(join("pools", name), "shared"),
            f"pool {first[pool.shared]!r} already shares {pool.shared!r}",
            f"use pool {first[pool.shared]!r} in the tasks of pool {name!r}, "
            "or give this pool another shared name",
        )


def _regex(ctx: Ctx, node: YNode, key: str, groups: int = 0) -> str | None:
    """The regular expression at ``node``, compiled to check it; with ``groups``,
    it must have exactly that many capturing groups (None after a diagnostic)."""
    text = ctx.string(node, key)
    if text is None:
        return None
    try:
        compiled = re.compile(text)
    except re.error as e:
        ctx.error_at(
            ctx.inner_loc(node, e.pos or 0),
            key,
            f"{as_written(text)} is not a valid regular expression: {e.msg}",
            "write a Python regular expression (escape ( ) [ ] . * + ? with a backslash "
            "to match them literally)",
        )
        return None
    import regex  # here, not at the top: only plans with throttle patterns load it

    try:
        # As the engine searches output: the ``regex`` module (for its time
        # bound), on bytes. A few patterns ``re`` takes are refused there.
        regex.compile(text.encode())
    except (regex.error, ValueError, TypeError, OverflowError) as e:
        ctx.error(
            node,
            key,
            f"{as_written(text)} cannot be searched in output: {getattr(e, 'msg', e)}",
            "write it without inline flags such as (?u) or (?t); the output is searched as bytes",
        )
        return None
    if compiled.groups < groups:
        ctx.error(
            node,
            key,
            f"{as_written(text)} has no group for the delay",
            r"put the seconds in a group, as in 'Retry-After: (\d+)'",
        )
        return None
    if groups and compiled.groups > groups:
        # Only the first group is read as the delay: another one is a slip.
        ctx.error(
            node,
            key,
            f"{as_written(text)} has {compiled.groups} capturing groups; exactly one, "
            "the delay's, is read",
            "make the others non-capturing with (?:...), as in "
            r"'(?:Retry|Wait)-After: (\d+)'",
        )
        return None
    return text


def read_rollout(ctx: Ctx, node: YNode, groups: Mapping[str, tuple[str, ...]]) -> Rollout | None:
    """``rollout: {waves: [canary, 8, "100%"], max_failed: "10%", pause: false}``, checked
    by ``RolloutSpec``; a wave named by a group must name one."""
    key = "rollout"
    spec, bad = validate_fields(ctx, RolloutSpec, node, key)
    if not isinstance(node, YMap):
        return None
    waves: list[str | int | Fraction] = []
    wnode = node.entries["waves"][1] if "waves" in node.entries else None
    given: list[tuple[int | str, YNode]] = []
    if wnode is not None and "waves" in bad:
        given = good_items(Wave, wnode)
    elif isinstance(spec.waves, list):
        given = list(zip(spec.waves, cast(YSeq, wnode).items, strict=True))
    elif spec.waves is not None and wnode is not None:
        given = [(spec.waves, wnode)]
    items = wnode.items if isinstance(wnode, YSeq) else [wnode]
    for size, item in given:
        if isinstance(size, int):
            waves.append(size)
        elif (share := percent(size)) is not None:
            waves.append(share)
        elif size in groups or size == ALL_TARGETS:
            waves.append(size)
        else:
            ctx.error(
                item,
                join(join(key, "waves"), next(i for i, n in enumerate(items) if n is item)),
                f"{as_written(size)} is neither a group nor a percentage",
                "name a group from 'groups', or write a count (8) or a percentage ('25%')",
            )
    max_failed: int | Fraction = 0
    fraction = False
    if isinstance(spec.max_failed, int):
        max_failed = spec.max_failed
    elif isinstance(spec.max_failed, str):
        max_failed, fraction = percent(spec.max_failed) or Fraction(0), True
    return Rollout(tuple(waves), max_failed, fraction, bool(spec.pause), ctx.loc(node))
