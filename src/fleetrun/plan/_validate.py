"""Validating a section of the plan with its model, each problem at its place in the file.

The section's YAML node is turned into plain data and validated by the model
(``_spec.py``). Each of pydantic's errors is mapped back to a node by walking its
``loc`` through the node tree (union branch names in ``loc`` are skipped), and
rewritten in the plan's words: ``unknown key 'x' (did you mean 'y'?)``,
``expected an integer, got a string``, ``must be at least 1, got 0``; errors
raised by the models' own validators carry their text and fix. When a value
could be one of several shapes, only the branch that matches the value's own
shape speaks (``adaptive: {decrese: 1}`` is an unknown key, not "expected true
or false"); when none matches, one message names every shape accepted (or the
type's ``Expect`` words).

``validate_fields`` goes on past errors: the keys without one are validated again
on their own, so the checks the models cannot make (references to other
sections, templates, files) still see every good key and the loader reports
every problem of the file in one pass.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Sequence
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from fleetrun.plan._fields import Ctx, _not_a_duration, did_you_mean, join
from fleetrun.plan._spec import Expect, Why, is_duration
from fleetrun.plan._units import rate_problem
from fleetrun.plan._yaml import YMap, YNode, YScalar, YSeq, to_python

M = TypeVar("M", bound=BaseModel)

_TYPE_WORDS = {
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dict_type": "a mapping",
    "list_type": "a list",
}


def validate_node(ctx: Ctx, model: type[M], node: YNode, key: str) -> M | None:
    """``node`` validated by ``model``; None after recording every problem on ``ctx``."""
    try:
        return model.model_validate(to_python(node))
    except ValidationError as e:
        report(ctx, model, node, key, e.errors(include_url=False))
        return None


def _blank(model: type[M]) -> M:
    """The model with every key absent (None), after its value could not be read."""
    return model.model_construct(**dict.fromkeys(model.model_fields))


def validate_fields(ctx: Ctx, model: type[M], node: YNode, key: str) -> tuple[M, frozenset[str]]:
    """``node`` validated by ``model``, every problem recorded on ``ctx``; and the keys
    that had one, left out of the model (so absent from it, as if not written)."""
    data = to_python(node)
    try:
        return model.model_validate(data), frozenset()
    except ValidationError as e:
        errors = e.errors(include_url=False)
    report(ctx, model, node, key, errors)
    if not isinstance(data, dict) or any(not e["loc"] for e in errors):
        return _blank(model), frozenset(data if isinstance(data, dict) else ())
    bad = frozenset(str(e["loc"][0]) for e in errors)
    try:
        kept = {k: v for k, v in data.items() if k not in bad}
        return model.model_validate(kept), bad
    except ValidationError:
        return _blank(model), frozenset(data)


@functools.cache
def _field_adapter(model: type[BaseModel], name: str) -> TypeAdapter[Any]:
    field = model.model_fields[name]
    tp: Any = field.annotation
    if field.metadata:
        tp = Annotated[(tp, *field.metadata)]
    return TypeAdapter(tp, config=ConfigDict(strict=True))


def validate_key(ctx: Ctx, model: type[BaseModel], m: YMap, name: str, key: str) -> Any:
    """The value of one key of the section ``m`` (at ``key``), validated alone by its
    field of ``model``; None after recording every problem on ``ctx``."""
    node = m.entries[name][1]
    data = to_python(node)
    if data is None and name in getattr(model, "_nullable", ()):
        return None  # an empty list or mapping: as if left out
    if data is None:
        errors: list[Any] = [{"type": "null", "loc": (name,), "msg": "null", "input": None}]
    else:
        try:
            return _field_adapter(model, name).validate_python(data)
        except ValidationError as e:
            errors = [{**x, "loc": (name, *x["loc"])} for x in e.errors(include_url=False)]
    report(ctx, model, m, key, errors)
    return None


@functools.cache
def _adapter(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp)


def good_items(tp: Any, node: YNode) -> list[tuple[Any, YNode]]:
    """The items of a list that failed as a whole which ``tp`` accepts on their own
    (their problems are already reported), each with its node."""
    if not isinstance(node, YSeq):
        return []
    out = []
    for item in node.items:
        try:
            out.append((_adapter(tp).validate_python(to_python(item)), item))
        except ValidationError:
            continue
    return out


@functools.cache
def _entry_adapter(model: type[BaseModel], name: str) -> TypeAdapter[Any]:
    tp = next(
        b for b in _branches(model.model_fields[name].annotation) if typing.get_origin(b) is dict
    )
    return TypeAdapter(typing.get_args(tp)[1], config=ConfigDict(strict=True))


def validate_entry(ctx: Ctx, model: type[BaseModel], root: YMap, name: str, entry: str) -> Any:
    """The value of ``entry`` of the mapping at key ``name`` of the section ``root``,
    validated alone by the values' type of that field of ``model`` (a group of
    ``groups``); None after recording every problem on ``ctx``."""
    node = root.entries[name][1]
    assert isinstance(node, YMap)
    try:
        return _entry_adapter(model, name).validate_python(to_python(node.entries[entry][1]))
    except ValidationError as e:
        errors: list[Any] = [
            {**x, "loc": (name, entry, *x["loc"])} for x in e.errors(include_url=False)
        ]
    report(ctx, model, root, "", errors)
    return None


def report(
    ctx: Ctx, model: type[BaseModel], root: YNode, key: str, errors: Sequence[ErrorDetails]
) -> None:
    """Record pydantic's ``errors`` of ``model`` validating ``root`` as diagnostics."""
    placed = [_place(root, key, e) for e in errors]
    # Paths (of nodes) at or below which some branch of a union matched the value's
    # shape and failed on its content: the other branches' type mismatches there are
    # not what the writer meant.
    deeper = {p[:i] for p, _, _, _ in placed for i in range(len(p))}
    deeper |= {p for p, _, _, e in placed if e["type"] not in _TYPE_WORDS}
    # A required key left out of a mapping with an unknown key: that key is most
    # likely the one misspelt, and its did-you-mean says it all.
    misspelt = {p[:-1] for p, _, _, e in placed if e["type"] == "extra_forbidden"}
    mismatches: dict[tuple[Any, ...], list[str]] = {}
    for path, node, sub, e in placed:
        words = _TYPE_WORDS.get(e["type"])
        if words is not None:
            if path not in deeper:
                mismatches.setdefault(path, []).append(words)
            continue
        if e["type"] == "missing" and path in misspelt:
            continue
        _one(ctx, model, node, sub, e)
    for path, expected in mismatches.items():
        node, sub = _node_at(root, key, path)
        field = _field_at(model, path) if path else None
        expect = _expect(field)
        most = _at_most(field)
        if expect is not None:
            ctx.wrong_type(node, sub, expect.words, text=expect.text, most=most)
        else:
            ctx.wrong_type(node, sub, _either(expected), most=most)


def _place(
    root: YNode, key: str, e: ErrorDetails
) -> tuple[tuple[Any, ...], YNode, str, ErrorDetails]:
    """The node an error is about, its key path and its path of entries."""
    path: list[Any] = []
    node, sub = root, key
    loc = e["loc"]
    for i, part in enumerate(loc):
        if isinstance(node, YMap) and isinstance(part, str) and part in node.entries:
            knode, value = node.entries[part]
            sub = join(sub, part)
            path.append(part)
            last = i == len(loc) - 1
            at_key = (last and e["type"] == "extra_forbidden") or (
                not last and loc[i + 1] == "[key]"
            )
            node = knode if at_key else value
        elif isinstance(node, YSeq) and isinstance(part, int) and 0 <= part < len(node.items):
            node, sub = node.items[part], join(sub, part)
            path.append(part)
    return tuple(path), node, sub, e


def _node_at(root: YNode, key: str, path: tuple[Any, ...]) -> tuple[YNode, str]:
    node, sub = root, key
    for part in path:
        if isinstance(node, YMap):
            node, sub = node.entries[part][1], join(sub, part)
        elif isinstance(node, YSeq):
            node, sub = node.items[part], join(sub, part)
    return node, sub


def _either(words: list[str]) -> str:
    """``true, false or a mapping`` from ``["true or false", "a mapping"]``."""
    flat: list[str] = []
    for w in words:
        for part in w.split(" or ") if len(words) > 1 else [w]:
            if part not in flat:
                flat.append(part)
    return flat[0] if len(flat) == 1 else ", ".join(flat[:-1]) + " or " + flat[-1]


def _one(ctx: Ctx, model: type[BaseModel], node: YNode, sub: str, e: ErrorDetails) -> None:
    kind, value, info = e["type"], e["input"], e.get("ctx") or {}
    if kind == "extra_forbidden":
        name = str(e["loc"][-1])
        allowed = _keys_at(model, e["loc"][:-1])
        ctx.error(
            node,
            sub,
            f"unknown key {name!r}{did_you_mean(name, allowed)}",
            "use one of: " + ", ".join(allowed),
        )
    elif kind in ("duration", "duration_positive") and isinstance(node, YScalar):
        ctx.error(node, sub, *_not_a_duration(node, positive=kind == "duration_positive"))
    elif kind == "rate" and isinstance(node, YScalar) and not isinstance(node.value, str):
        # A number, boolean or null as written (1e400, not inf).
        ctx.error(node, sub, *rate_problem(node.value, node.source.strip()))
    elif kind == "missing":
        name = str(e["loc"][-1])
        owner = next(
            (
                b
                for b in _branches(_field_at(model, e["loc"][:-1]))
                if isinstance(b, type) and issubclass(b, BaseModel)
            ),
            None,
        )
        said = getattr(owner, "_missing", {}).get(name) if owner is not None else None
        if isinstance(said, tuple):
            ctx.error(node, sub, *said)
        else:
            ctx.error(node, sub, f"the key {name!r} is missing", f"add {name}: <value>")
    elif kind == "null":
        field = _field_at(model, e["loc"])
        if field is not None and is_duration(field) and isinstance(node, YScalar):
            ctx.error(node, sub, *_not_a_duration(node, positive=False))
        else:
            expect = _expect(field)
            words = expect.words if expect else _either(_words_of(field))
            ctx.wrong_type(node, sub, words, f"write {words} here, or leave the key out")
    elif kind in ("greater_than_equal", "greater_than"):
        least = info.get("ge", info.get("gt"))
        ctx.error(node, sub, f"must be at least {least}, got {value}", f"write {least} or more")
    elif kind in ("less_than_equal", "less_than"):
        most = info.get("le", info.get("lt"))
        why = _why(_field_at(model, e["loc"]))
        fix = f"write {most} or fewer" + (f": {why}" if why else "")
        ctx.error(node, sub, f"must be at most {most}, got {value}", fix)
    elif kind == "string_too_short":
        ctx.error(node, sub, "must not be empty", "write a value, or remove the key")
    elif kind == "too_short":
        ctx.error(node, sub, "must not be empty", "list at least one, or remove the key")
    else:
        # Our validators' own errors: their message and fix; pydantic's others as it says.
        ctx.error(node, sub, e["msg"], str(info.get("fix") or "see `fleetrun schema`"))


def _why(tp: Any) -> str:
    """The ``Why`` a type carries, or an empty string."""
    for m in getattr(tp, "__metadata__", ()):
        if isinstance(m, Why):
            return m.text
    return next((w for a in typing.get_args(tp) if (w := _why(a))), "")


def _at_most(tp: Any) -> float | None:
    """The largest value a numeric type takes (its ``le``), or None."""
    for m in getattr(tp, "__metadata__", ()):
        for c in (m, *getattr(m, "metadata", ())):
            le = getattr(c, "le", None)
            if isinstance(le, int | float) and not isinstance(le, bool):
                return le
    return next((le for a in typing.get_args(tp) if (le := _at_most(a)) is not None), None)


def _expect(tp: Any) -> Expect | None:
    """The ``Expect`` a type carries, or the one of an optional key's type; or None."""
    found = next((m for m in getattr(tp, "__metadata__", ()) if isinstance(m, Expect)), None)
    if found is None and typing.get_origin(tp) in (typing.Union, types.UnionType):
        return next((e for a in typing.get_args(tp) if (e := _expect(a))), None)
    return found


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _branches(tp: Any) -> list[Any]:
    tp = _unwrap(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [b for a in typing.get_args(tp) for b in _branches(a)]
    return [tp]


def _descend(tp: Any, part: Any) -> Any:
    """The type one step of ``loc`` down from ``tp`` (a branch name stays put)."""
    for branch in _branches(tp):
        if isinstance(branch, type) and issubclass(branch, BaseModel):
            if part in branch.model_fields:
                field = branch.model_fields[part]
                if field.metadata:  # pydantic keeps an Annotated field's extras apart
                    return Annotated[(field.annotation, *field.metadata)]
                return field.annotation
            if part == branch.__name__:
                return branch
        origin = typing.get_origin(branch)
        if origin is list and isinstance(part, int):
            return typing.get_args(branch)[0]
        if origin is dict and isinstance(part, str) and not part.startswith(("list[", "dict[")):
            return typing.get_args(branch)[1]
    return tp


def _keys_at(model: type[BaseModel], loc: Sequence[Any]) -> tuple[str, ...]:
    tp: Any = model
    for part in loc:
        tp = _descend(tp, part)
    for branch in _branches(tp):
        if isinstance(branch, type) and issubclass(branch, BaseModel):
            return tuple(branch.model_fields)
    return ()


def _field_at(model: type[BaseModel], loc: Sequence[Any]) -> Any:
    tp: Any = model
    for part in loc:
        tp = _descend(tp, part)
    return tp


def _words_of(tp: Any) -> list[str]:
    out: list[str] = []
    for branch in _branches(tp):
        origin = typing.get_origin(branch) or branch
        if origin is type(None):
            continue
        if (isinstance(origin, type) and issubclass(origin, BaseModel)) or origin is dict:
            out.append("a mapping")
        elif origin is list:
            out.append("a list")
        elif origin is bool:
            out.append("true or false")
        elif origin is int:
            out.append("an integer")
        elif origin is float:
            out.append("a number")
        else:
            out.append("a string")
    return out or ["a value"]
