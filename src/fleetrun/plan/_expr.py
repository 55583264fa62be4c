"""The ``where`` language of groups: a tiny, safe filter over target attributes.

Grammar (nothing is ever passed to ``eval``)::

    expr    := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | compare
    compare := primary [("==" | "!=" | "<" | "<=" | ">" | ">=") primary
                        | ["not"] "in" list]
    primary := literal | identifier | "(" expr ")"
    list    := "[" [literal ("," literal)* [","]] "]"
    literal := 'text' | "text" | integer | float | true | false | null

An identifier is a target attribute (``name`` is the target's name); a missing
attribute is ``null``, but a bare word right of an operator that is no
attribute of any target is most likely text written without quotes (``role ==
admin``): ``unknown_names`` finds those, and misspelt attributes, for the
loader and the CLI to refuse. ``==``/``!=`` never raise:
values of different types are simply unequal (``true`` is not ``1``). Ordering
needs two numbers or two strings; with ``null`` on either side it is false;
other mixes raise ``ExprError`` naming the values, which the loader reports
with the group and target.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fleetrun.plan._written import as_written

Value = str | int | float | bool | None
Env = Mapping[str, Value]
Evaluator = Callable[[str, Env], Value]


class ExprError(Exception):
    """A syntax or type error; ``column`` is 1-based within the expression text."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(message)
        self.message = message
        self.column = column


_TOKEN = re.compile(
    r"""\s*(?:
      (?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
    | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    | (?P<op>==|!=|<=|>=|<|>|\(|\)|\[|\]|,)
    | (?P<name>[A-Za-z_][\w-]*)
    )""",
    re.X,
)
_KEYWORDS = {"and", "or", "not", "in", "true", "false", "null"}
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", "'": "'", '"': '"'}


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # num, str, op, name, kw, end
    text: str
    column: int
    value: Value = None


def _unescape(body: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), body)


def tokenize(text: str) -> list[_Tok]:
    """Split ``text`` into tokens; raise ``ExprError`` at the first unreadable character."""
    toks: list[_Tok] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            toks.append(_Tok("end", "", pos + 1))
            return toks
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ExprError(f"unexpected character {as_written(text[pos])}", pos + 1)
        col = pos + 1
        pos = m.end()
        kind = m.lastgroup or ""
        tok = m.group(kind)
        if kind == "num":
            num: Value = float(tok) if any(c in tok for c in ".eE") else int(tok)
            toks.append(_Tok("num", tok, col, num))
        elif kind == "str":
            toks.append(_Tok("str", tok, col, _unescape(tok[1:-1])))
        elif kind == "name" and tok in _KEYWORDS:
            toks.append(_Tok("kw", tok, col))
        else:
            toks.append(_Tok(kind, tok, col))


def _describe(v: Value) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    return f"{'string' if isinstance(v, str) else 'number'} {v!r}"


def _same_kind(a: Value, b: Value) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    if isinstance(a, int | float) and isinstance(b, int | float):
        return True
    return type(a) is type(b)


def equal(a: Value, b: Value) -> bool:
    """Type-strict equality: ``true != 1``, ``1 == 1.0``, ``null == null``."""
    return _same_kind(a, b) and a == b


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _or(a: Evaluator, b: Evaluator) -> Evaluator:
    return lambda n, e: bool(a(n, e)) or bool(b(n, e))


def _and(a: Evaluator, b: Evaluator) -> Evaluator:
    return lambda n, e: bool(a(n, e)) and bool(b(n, e))


class _Parser:
    def __init__(self, text: str, words: Callable[[str], bool] | None = None) -> None:
        self.toks = tokenize(text)
        self.i = 0
        # Attributes used: name, column, and whether right of a comparison operator.
        self.names: list[tuple[str, int, bool]] = []
        self.words = words  # which bare words after an operator are text
        self.right = False

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        if tok.kind != "end":
            self.i += 1
        return tok

    def accept(self, kind: str, text: str) -> bool:
        tok = self.peek()
        if tok.kind == kind and tok.text == text:
            self.i += 1
            return True
        return False

    def fail(self, expected: str) -> ExprError:
        tok = self.peek()
        found = "the end" if tok.kind == "end" else repr(tok.text)
        return ExprError(f"expected {expected}, found {found}", tok.column)

    def parse(self) -> Evaluator:
        if self.peek().kind == "end":
            raise self.fail("an expression")
        node = self.or_()
        if self.peek().kind != "end":
            raise self.fail("'and', 'or' or the end")
        return node

    def or_(self) -> Evaluator:
        left = self.and_()
        while self.accept("kw", "or"):
            left = _or(left, self.and_())
        return left

    def and_(self) -> Evaluator:
        left = self.not_()
        while self.accept("kw", "and"):
            left = _and(left, self.not_())
        return left

    def not_(self) -> Evaluator:
        if self.accept("kw", "not"):
            inner = self.not_()
            return lambda n, e: not inner(n, e)
        return self.compare()

    def compare(self) -> Evaluator:
        left = self.primary()
        tok = self.peek()
        if tok.kind == "op" and tok.text in ("==", "!="):
            self.take()
            right = self.operand()
            if tok.text == "==":
                return lambda n, e: equal(left(n, e), right(n, e))
            return lambda n, e: not equal(left(n, e), right(n, e))
        if tok.kind == "op" and tok.text in _ORDER:
            self.take()
            return self.ordering(left, tok, self.operand())
        negate = False
        if tok.kind == "kw" and tok.text == "not":
            nxt = self.toks[self.i + 1]
            if nxt.kind == "kw" and nxt.text == "in":
                self.take()
                negate = True
        if self.accept("kw", "in"):
            items = self.list_()
            if negate:
                return lambda n, e: not any(equal(left(n, e), v) for v in items)
            return lambda n, e: any(equal(left(n, e), v) for v in items)
        return left

    @staticmethod
    def ordering(left: Evaluator, op: _Tok, right: Evaluator) -> Evaluator:
        compare = _ORDER[op.text]

        def run(n: str, e: Env) -> Value:
            a, b = left(n, e), right(n, e)
            if a is None or b is None:
                return False
            if not _same_kind(a, b) or isinstance(a, bool):
                raise ExprError(
                    f"cannot compare {_describe(a)} {op.text} {_describe(b)}", op.column
                )
            return bool(compare(a, b))

        return run

    def list_(self) -> tuple[Value, ...]:
        if not self.accept("op", "["):
            raise self.fail("'[' starting a list after 'in'")
        items: list[Value] = []
        while not self.accept("op", "]"):
            items.append(self.literal())
            if not self.accept("op", ","):
                if not self.accept("op", "]"):
                    raise self.fail("',' or ']'")
                break
        return tuple(items)

    def literal(self) -> Value:
        tok = self.peek()
        if tok.kind in ("num", "str"):
            self.take()
            return tok.value
        if tok.kind == "kw" and tok.text in ("true", "false", "null"):
            self.take()
            return {"true": True, "false": False, "null": None}[tok.text]
        raise self.fail("a literal ('text', number, true, false or null)")

    def operand(self) -> Evaluator:
        """The right side of a comparison: with ``words``, a bare word it accepts is text."""
        tok = self.peek()
        if tok.kind == "name" and self.words is not None and self.words(tok.text):
            self.take()
            return lambda n, e: tok.text
        self.right = True
        try:
            return self.primary()
        finally:
            self.right = False

    def primary(self) -> Evaluator:
        tok = self.peek()
        if self.accept("op", "("):
            inner = self.or_()
            if not self.accept("op", ")"):
                raise self.fail("')'")
            return inner
        if tok.kind == "name":
            self.take()
            attr = tok.text
            if attr == "name":
                return lambda n, e: n
            self.names.append((attr, tok.column, self.right))
            return lambda n, e: e.get(attr)
        value = self.literal()
        return lambda n, e: value


@dataclass(frozen=True, slots=True)
class Where:
    """A compiled ``where`` expression."""

    source: str
    _eval: Evaluator
    names: tuple[tuple[str, int, bool], ...] = ()
    """The attributes it reads (``name`` aside): each with its 1-based column and
    whether it stands right of a comparison operator (where text is likelier)."""

    def matches(self, name: str, attrs: Env) -> bool:
        """Whether the target ``name`` with ``attrs`` is selected; may raise ``ExprError``."""
        return bool(self._eval(name, attrs))


def compile_where(text: str, words: Callable[[str], bool] | None = None) -> Where:
    """Parse ``text``; raise ``ExprError`` (with a 1-based column) when malformed.

    ``words``: which bare words right of a comparison operator are text rather
    than attributes (``geo==europe`` on the command line); None: none are."""
    parser = _Parser(text, words)
    evaluate = parser.parse()
    return Where(text, evaluate, tuple(parser.names))


def attribute_values(attrs: Iterable[Env]) -> dict[str, set[Value]]:
    """Every attribute of the targets whose ``attrs`` are given, with the values they give it."""
    out: dict[str, set[Value]] = {}
    for one in attrs:
        for k, v in one.items():
            out.setdefault(k, set()).add(v)
    return out


@dataclass(frozen=True, slots=True)
class UnknownName:
    """A word of an expression that is no attribute of any target: the word, its
    1-based column, the message and the fix."""

    word: str
    column: int
    message: str
    fix: str


def unknown_names(
    where: Where, attrs: Mapping[str, Collection[Value]], strict: bool = False
) -> list[UnknownName]:
    """The words of ``where`` that are no attribute of any target and most likely
    mistakes.

    ``attrs`` maps every attribute some target has to the values targets give
    it (``attribute_values``). A bare word right of a comparison operator
    (``role == admin``) is nearly always text written without quotes: it reads
    the attribute ``admin``, null everywhere, and silently selects nothing. A
    word elsewhere close to an attribute's name is nearly always a misspelling
    (``rol == 'admin'``). Other attributes no target has are left alone (null:
    a group kept for targets yet to come), unless ``strict`` (the command line,
    where no such reason holds). The message says what it may have meant.
    """
    out: list[UnknownName] = []
    values = {v for vs in attrs.values() for v in vs if isinstance(v, str)}
    for word, column, right in where.names:
        if word in attrs:
            continue
        close = difflib.get_close_matches(word, list(attrs), n=1)
        known = ", ".join(sorted(attrs)) or "none"
        fix = f"name an attribute the targets have: {known}"
        if close and not right:
            hint = f" (did you mean the attribute {close[0]!r}?)"
        elif right or word in values:
            hint = f" (did you mean the string '{word}'?)"
            fix = f"quote text: '{word}' (a bare word names an attribute; attributes: {known})"
        elif strict:
            hint = ""
        else:
            continue
        message = f"{as_written(word)} is no attribute of any target{hint}"
        out.append(UnknownName(word, column, message, fix))
    return out
