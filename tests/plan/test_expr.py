"""The ``where`` language: what each expression selects, and where errors point."""

from __future__ import annotations

import pytest

from fleetrun.plan._expr import ExprError, compile_where, equal, tokenize

ATTRS: dict[str, dict[str, str | int | float | bool | None]] = {
    "north": {"role": "validator", "validators": 2, "geo": "eu", "weight": 1.5, "gpu": True},
    "south": {"role": "validator", "validators": 4, "geo": "us", "weight": 0.5, "gpu": False},
    "admin": {"role": "admin", "geo": "eu"},
    "o'brien": {"role": "validator", "validators": 0, "geo": "eu"},
}


def select(expr: str) -> list[str]:
    where = compile_where(expr)
    return [n for n, a in ATTRS.items() if where.matches(n, a)]


@pytest.mark.parametrize(
    ("expr", "selected"),
    [
        ("role != 'admin'", ["north", "south", "o'brien"]),
        ('role == "admin"', ["admin"]),
        ("validators >= 2", ["north", "south"]),
        ("validators > 2", ["south"]),
        ("validators < 2", ["o'brien"]),
        ("validators <= 2", ["north", "o'brien"]),
        ("weight > 1", ["north"]),
        ("weight == 0.5", ["south"]),
        ("validators == 2.0", ["north"]),
        ("validators == null", ["admin"]),
        ("validators != null", ["north", "south", "o'brien"]),
        ("missing == null", ["north", "south", "admin", "o'brien"]),
        ("gpu", ["north"]),
        ("gpu == true", ["north"]),
        ("gpu == 1", []),
        ("not gpu", ["south", "admin", "o'brien"]),
        ("validators", ["north", "south"]),
        ("name == 'o\\'brien'", ["o'brien"]),
        ("name in ['north', 'admin']", ["north", "admin"]),
        ("name not in ['north', 'admin',]", ["south", "o'brien"]),
        ("validators in [0, 4]", ["south", "o'brien"]),
        ("validators in []", []),
        ("geo == 'eu' and role == 'validator'", ["north", "o'brien"]),
        ("geo == 'us' or role == 'admin'", ["south", "admin"]),
        ("not (geo == 'eu') or validators == 0", ["south", "o'brien"]),
        ("geo == 'eu' and (validators > 1 or role == 'admin')", ["north", "admin"]),
        ("not not gpu", ["north"]),
        ("true", ["north", "south", "admin", "o'brien"]),
        ("false or null", []),
        ("validators > -1 and validators < 1e1", ["north", "south", "o'brien"]),
        ("'a' < 'b'", ["north", "south", "admin", "o'brien"]),
        ("role-x == null", ["north", "south", "admin", "o'brien"]),
    ],
)
def test_selects(expr: str, selected: list[str]) -> None:
    assert select(expr) == selected


@pytest.mark.parametrize(
    ("expr", "column", "fragment"),
    [
        ("", 1, "expected an expression"),
        ("role ==", 8, "expected a literal"),
        ("role = 'a'", 6, "unexpected character '='"),
        ("role == 'a", 9, "unexpected character"),
        ("(role == 'a'", 13, "expected ')'"),
        ("role == 'a')", 12, "expected 'and', 'or' or the end"),
        ("name in 'a'", 9, "expected '[' starting a list"),
        ("name in ['a' 'b']", 14, "expected ',' or ']'"),
        ("name in [role]", 10, "expected a literal"),
        ("and", 1, "expected a literal"),
        ("role == 'a' and", 16, "expected a literal"),
        ("a == b == c", 8, "expected 'and', 'or' or the end"),
        ("__import__('os')", 11, "expected 'and', 'or' or the end"),
        ("a.b", 2, "unexpected character '.'"),
        ("a ! b", 3, "unexpected character '!'"),
    ],
)
def test_syntax_errors_name_the_column(expr: str, column: int, fragment: str) -> None:
    with pytest.raises(ExprError) as info:
        compile_where(expr)
    assert info.value.column == column
    assert fragment in info.value.message


@pytest.mark.parametrize(
    ("expr", "attrs", "fragment", "column"),
    [
        ("size > 2", {"size": "big"}, "cannot compare string 'big' > number 2", 6),
        ("size < 'x'", {"size": 3}, "cannot compare number 3 < string 'x'", 6),
        ("flag >= true", {"flag": True}, "cannot compare true >= true", 6),
        ("(x == 1) or flag <= 1", {"flag": False}, "cannot compare false <= number 1", 18),
    ],
)
def test_ordering_mixed_types_is_an_error(
    expr: str, attrs: dict[str, str | int | bool], fragment: str, column: int
) -> None:
    where = compile_where(expr)
    with pytest.raises(ExprError) as info:
        where.matches("t", attrs)
    assert fragment in info.value.message
    assert info.value.column == column  # the comparison operator's


def test_ordering_with_null_is_false_not_an_error() -> None:
    assert compile_where("size > 2").matches("t", {}) is False
    assert compile_where("size <= 2").matches("t", {}) is False
    assert compile_where("not (size <= 2)").matches("t", {}) is True


def test_and_or_short_circuit_skip_type_errors() -> None:
    where = compile_where("role == 'validator' and size > 2")
    assert where.matches("a", {"role": "admin", "size": "big"}) is False
    where = compile_where("role == 'admin' or size > 2")
    assert where.matches("a", {"role": "admin", "size": "big"}) is True


def test_equality_is_type_strict() -> None:
    assert equal(1, 1.0) is True
    assert equal(True, 1) is False
    assert equal(0, False) is False
    assert equal(None, None) is True
    assert equal("1", 1) is False


def test_tokens_and_escapes() -> None:
    toks = tokenize('a != "x\\"y" and b in [1, 2.5, -3]')
    kinds = [t.kind for t in toks]
    assert kinds == [
        "name",
        "op",
        "str",
        "kw",
        "name",
        "kw",
        "op",
        "num",
        "op",
        "num",
        "op",
        "num",
        "op",
        "end",
    ]
    assert toks[2].value == 'x"y'
    assert [t.value for t in toks if t.kind == "num"] == [1, 2.5, -3]
    assert [t.column for t in toks][:3] == [1, 3, 6]
