"""Reading ``pools`` (limits, throttle rules, adaptive settings) and ``rollout``.

Every problem is recorded on the ``Ctx`` with file:line:column and a fix; a
regular expression that does not compile is reported at the character where
Python's ``re`` gave up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from fleetrun.plan._fields import Ctx, join
from fleetrun.plan._model import (
    ALL_TARGETS,
    MAX_ATTEMPTS,
    MAX_ATTEMPTS_WHY,
    AdaptiveSettings,
    Pool,
    Rollout,
    ThrottleRule,
)
from fleetrun.plan._spec import AdaptiveSpec, PoolSpec, RolloutSpec, ThrottleSpec, keys_of
from fleetrun.plan._units import RATE_HELP, parse_rate
from fleetrun.plan._yaml import YMap, YNode, YScalar

POOL_KEYS = keys_of(PoolSpec)
THROTTLE_KEYS = keys_of(ThrottleSpec)
ADAPTIVE_KEYS = keys_of(AdaptiveSpec)
ROLLOUT_KEYS = keys_of(RolloutSpec)

SHARED_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
"""A shared pool's name (``pools.X.shared``): it names the pool on the whole
machine, in ``fleetrun pools`` and in the coordination file. Matched with
``fullmatch``: Python's ``$`` alone lets a trailing newline through, which would
name another pool. (The anchors stay for the JSON Schema's ``pattern``.)"""

SHARED_HELP = (
    "use at most 64 letters, digits, '.', '_' and '-', starting with a letter or digit, "
    "such as azure-subscription-1"
)

MAX_VERIFY = (
    10_000,
    "the pool keeps that many attempts' endings in memory to judge each decrease",
)
"""The largest ``adaptive.verify`` and why (said in the plan error's fix)."""

# Each adaptive number: (lowest, highest, open at the low end, help).
_ADAPTIVE_RANGES: dict[str, tuple[float, float, bool, str]] = {
    "decrease": (0.0, 1.0, True, "a factor in (0, 1), such as 0.9"),
    "max_drop": (0.0, 1.0, True, "a factor in (0, 1], such as 0.5"),
    "increase": (0.0, 1.0, True, "a fraction in (0, 1], such as 0.02"),
    "probe": (0.0, 3600.0, True, "a plain number of seconds between two increases, such as 1"),
    "floor": (0.0, 1.0, True, "a fraction of the configured values in (0, 1], such as 0.01"),
    "hold": (
        0.0,
        3600.0,
        True,
        "a plain number of seconds at the plateau before probing past it, such as 5",
    ),
    "margin": (0.0, 0.5, True, "a fraction under the limit found in (0, 0.5], such as 0.03"),
}


def read_pool(ctx: Ctx, name: str, knode: YNode, pm: YMap, key: str) -> Pool:
    """One entry of ``pools`` (``pm`` is its mapping)."""
    f: dict[str, Any] = {}
    for k, v in ctx.items(pm, key, POOL_KEYS):
        sub = join(key, k)
        if k == "rate":
            f[k] = parse_rate(v.value) if isinstance(v, YScalar) else None
            if f[k] is None:
                ctx.error(v, sub, "not a rate above zero", RATE_HELP)
        elif k == "adaptive":
            f[k] = read_adaptive(ctx, v, sub)
        elif k == "throttle":
            f[k] = read_throttle(ctx, v, sub)
        elif k == "shared":
            f[k] = _shared_name(ctx, v, sub)
        else:
            f[k] = ctx.integer(v, sub, minimum=1)
    if "concurrency" not in pm.entries and "rate" not in pm.entries:
        ctx.error(knode, key, "the pool limits nothing", "give it a concurrency, a rate, or both")
    if "burst" in pm.entries and "rate" not in pm.entries:
        ctx.error(
            pm.entries["burst"][0],
            join(key, "burst"),
            "burst needs a rate",
            "add a rate such as 10/s, or remove burst",
        )
    return Pool(
        name,
        concurrency=f.get("concurrency"),
        rate=f.get("rate"),
        burst=f.get("burst") or 1,
        adaptive=f.get("adaptive"),
        throttle=f.get("throttle"),
        shared=f.get("shared"),
    )


def _shared_name(ctx: Ctx, node: YNode, key: str) -> str | None:
    text = ctx.string(node, key)
    if text is None:
        return None
    if not SHARED_NAME.fullmatch(text):
        ctx.error(node, key, f"{text!r} is not a valid shared pool name", SHARED_HELP)
        return None
    return text


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


def read_adaptive(ctx: Ctx, node: YNode, key: str) -> AdaptiveSettings | None:
    """``adaptive: true`` (the defaults), ``false``, or a mapping of the algorithm's numbers."""
    if isinstance(node, YScalar) and isinstance(node.value, bool):
        return AdaptiveSettings() if node.value else None
    if not isinstance(node, YMap):
        ctx.wrong_type(node, key, "true, false or a mapping", "write true, or {decrease: 0.9}")
        return None
    given: dict[str, Any] = {}
    for k, v in ctx.items(node, key, ADAPTIVE_KEYS):
        sub = join(key, k)
        if k == "verify":
            given[k] = ctx.integer(v, sub, minimum=1, maximum=MAX_VERIFY)
            continue
        if k == "initial":
            given[k] = ctx.integer(v, sub, minimum=1)
            continue
        value = v.value if isinstance(v, YScalar) else None
        low, high, _, help_ = _ADAPTIVE_RANGES[k]
        number = (
            float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
        )
        if number is None:
            ctx.error(v, sub, f"{value!r} is not a number", f"write {help_}")
            continue
        if not low < number <= high or (k == "decrease" and number >= 1):
            ctx.error(v, sub, f"{value!r} is out of range", f"write {help_}")
            continue
        given[k] = number
    return AdaptiveSettings(**{k: v for k, v in given.items() if v is not None})


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


def read_throttle(ctx: Ctx, node: YNode, key: str) -> ThrottleRule | None:
    """``throttle: {exit: [75], output: [regex, ..], retry_after: regex, attempts: 5}``."""
    m = ctx.mapping(node, key, allow_null=False)
    if m is None:
        return None
    codes: set[int] = set()
    outputs: list[str] = []
    retry_after: str | None = None
    attempts = 5  # ThrottleRule's default
    for k, v in ctx.items(m, key, THROTTLE_KEYS):
        sub = join(key, k)
        if k == "exit":
            for i, item in enumerate(ctx.seq(v, sub, single_ok=True) or []):
                code = ctx.integer(item, join(sub, i), minimum=1)
                if code is not None:
                    codes.add(code)
        elif k == "output":
            for i, item in enumerate(ctx.seq(v, sub, single_ok=True) or []):
                pattern = _regex(ctx, item, join(sub, i))
                if pattern is not None:
                    outputs.append(pattern)
        elif k == "retry_after":
            retry_after = _regex(ctx, v, sub, groups=1)
        else:
            most = (MAX_ATTEMPTS, MAX_ATTEMPTS_WHY)
            attempts = ctx.integer(v, sub, minimum=1, maximum=most) or attempts
    if not m.entries:
        ctx.error(m, key, "lists no signal", "give exit, output or retry_after")
    return ThrottleRule(frozenset(codes), tuple(outputs), retry_after, attempts)


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
