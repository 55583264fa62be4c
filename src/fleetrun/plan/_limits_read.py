"""Reading ``pools`` (limits, throttle rules, adaptive settings) and ``rollout``.

Every problem is recorded on the ``Ctx`` with file:line:column and a fix; a
regular expression that does not compile is reported at the character where
Python's ``re`` gave up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from fractions import Fraction

from fleetrun.plan._fields import Ctx, join
from fleetrun.plan._model import (
    ALL_TARGETS,
    AdaptiveSettings,
    Pool,
    Rollout,
    ThrottleRule,
)
from fleetrun.plan._spec import AdaptiveSpec, PoolSpec, RolloutSpec, keys_of
from fleetrun.plan._validate import validate_node
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
    text = ctx.string(node, key)
    if text is None:
        return None
    try:
        compiled = re.compile(text)
    except re.error as e:
        ctx.error_at(
            ctx.inner_loc(node, e.pos or 0),
            key,
            f"{text!r} is not a valid regular expression: {e.msg}",
            "write a Python regular expression (escape ( ) [ ] . * + ? with a backslash "
            "to match them literally)",
        )
        return None
    if compiled.groups < groups:
        ctx.error(
            node,
            key,
            f"{text!r} has no group for the delay",
            r"put the seconds in a group, as in 'Retry-After: (\d+)'",
        )
        return None
    return text


def _size(
    ctx: Ctx, item: YNode, key: str, groups: Mapping[str, tuple[str, ...]]
) -> str | int | Fraction | None:
    value = item.value if isinstance(item, YScalar) else None
    if isinstance(value, int) and not isinstance(value, bool):
        if value >= 1:
            return value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith("%"):
            pct = _pct(text[:-1])
            if pct is not None and pct > 0:
                return pct / 100
        elif text in groups or text == ALL_TARGETS:
            return text
        else:
            ctx.error(
                item,
                key,
                f"{text!r} is neither a group nor a percentage",
                "name a group from 'groups', or write a count (8) or a percentage ('25%')",
            )
            return None
    ctx.error(
        item,
        key,
        f"{value!r} is not a wave size",
        "write a group name, a count of at least 1 or a percentage in (0%, 100%]",
    )
    return None


def read_rollout(ctx: Ctx, node: YNode, groups: Mapping[str, tuple[str, ...]]) -> Rollout | None:
    """``rollout: {waves: [canary, 8, "100%"], max_failed: "10%", pause: false}``."""
    key = "rollout"
    m = ctx.mapping(node, key, allow_null=False)
    if m is None:
        return None
    waves: list[str | int | Fraction] = []
    max_failed: int | Fraction = 0
    fraction = False
    pause = False
    for k, v in ctx.items(m, key, ROLLOUT_KEYS):
        sub = join(key, k)
        if k == "waves":
            for i, item in enumerate(ctx.seq(v, sub, single_ok=True) or []):
                size = _size(ctx, item, join(sub, i), groups)
                if size is not None:
                    waves.append(size)
        elif k == "pause":
            pause = bool(ctx.boolean(v, sub))
        else:
            value = v.value if isinstance(v, YScalar) else None
            text = value.strip() if isinstance(value, str) else ""
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                max_failed = value
            elif text.endswith("%") and (pct := _pct(text[:-1])) is not None:
                max_failed, fraction = pct / 100, True
            else:
                ctx.error(
                    v,
                    sub,
                    f"{value!r} is neither a count nor a percentage",
                    "write a count of failed targets (0, 2) or a percentage ('10%')",
                )
    if "waves" not in m.entries:
        ctx.error(m, key, "the rollout has no 'waves'", "add waves: [canary, 8, '100%']")
    return Rollout(tuple(waves), max_failed, fraction, pause, ctx.loc(m))


_DECIMAL = re.compile(r"\s*(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*")
"""A percentage's number: a plain decimal (no sign, exponent or fraction bar)."""


def _pct(text: str) -> Fraction | None:
    """The percentage written ``text`` (before its ``%``), exactly, in [0, 100]; else None."""
    if not _DECIMAL.fullmatch(text):
        return None
    pct = Fraction(text.strip())
    return pct if pct <= 100 else None
