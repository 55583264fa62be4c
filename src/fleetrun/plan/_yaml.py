"""YAML reading that keeps the line and column of every key and value.

PyYAML's composer (the libyaml C parser when available) builds a node tree with
marks; this module turns it into small ``YMap``/``YSeq``/``YScalar`` objects
that carry 1-based positions, resolving scalars with YAML's safe rules. Keys
stay the text written in the file (so ``on:`` is the key ``"on"``, not
``True``). Duplicate keys, unsupported tags, recursive aliases and absurd
nesting are reported as ``PlanError`` diagnostics rather than exceptions.
"""

from __future__ import annotations

import gc
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor

from fleetrun.errors import Diagnostic, Location, PlanError

try:  # The C parser is about ten times faster on large fleets.
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

Scalar = str | int | float | bool | None

MAX_DEPTH = 64
"""Deeper nesting than this is certainly not a plan (and would exhaust the stack)."""

MAX_NODES = 2_000_000
"""Alias expansion past this many nodes is an alias bomb, not a plan."""

_TAG = "tag:yaml.org,2002:"
_STR, _NULL = _TAG + "str", _TAG + "null"
_SCALAR_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null")}
_constructor = SafeConstructor()
_IMPLICIT = {k: tuple(v) for k, v in _Loader.yaml_implicit_resolvers.items()}


class _FastLoader(_Loader):
    """The safe loader with a leaner tag resolver (no path resolvers are ever used).

    Resolution runs once per node from inside the C parser and dominates the
    load time of large fleets; plain scalars are memoised because fleets
    repeat the same attribute names and values thousands of times.
    """

    def __init__(self, stream: str | bytes) -> None:
        super().__init__(stream)
        self._memo: dict[str, str] = {}

    def descend_resolver(self, current_node: object, current_index: object) -> None:
        """Path resolvers are never registered: nothing to track."""

    def ascend_resolver(self) -> None:
        """Path resolvers are never registered: nothing to track."""

    def resolve(self, kind: type[yaml.Node], value: str, implicit: tuple[bool, bool]) -> str:
        if kind is yaml.ScalarNode:
            if not implicit[0]:
                return _STR
            tag = self._memo.get(value)
            if tag is None:
                tag = _STR
                for t, regexp in _IMPLICIT.get(value[:1], ()):
                    if regexp.match(value):
                        tag = t
                        break
                self._memo[value] = tag
            return tag
        return _TAG + ("seq" if kind is yaml.SequenceNode else "map")


class YNode:
    """A node of the document with its 1-based position."""

    __slots__ = ("column", "line")

    def __init__(self, line: int, column: int) -> None:
        self.line = line
        self.column = column

    kind = "value"


class YScalar(YNode):
    """A scalar: its resolved value, its source text and its quoting style."""

    __slots__ = ("multiline", "source", "style", "value")
    kind = "scalar"

    def __init__(
        self, line: int, column: int, value: Scalar, source: str, style: str | None, multiline: bool
    ) -> None:
        super().__init__(line, column)
        self.value = value
        self.source = source
        self.style = style
        self.multiline = multiline

    @property
    def type_name(self) -> str:
        """The value's type in plan words (string, integer, ...)."""
        return type_name(self.value)


class YSeq(YNode):
    """A sequence of nodes."""

    __slots__ = ("items",)
    kind = "list"

    def __init__(self, line: int, column: int, items: list[YNode]) -> None:
        super().__init__(line, column)
        self.items = items


class YMap(YNode):
    """A mapping, in file order: key text -> (key node, value node)."""

    __slots__ = ("entries",)
    kind = "mapping"

    def __init__(self, line: int, column: int, entries: dict[str, tuple[YScalar, YNode]]) -> None:
        super().__init__(line, column)
        self.entries = entries


def type_name(value: Any) -> str:
    """Plan-level name of a Python value's type, for messages."""
    if isinstance(value, YMap):
        return "a mapping"
    if isinstance(value, YSeq):
        return "a list"
    if isinstance(value, YScalar):
        value = value.value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    return "a string"


def _pos(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Converter:
    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Diagnostic] = []
        self.count = 0
        self.active: set[int] = set()
        self.memo: dict[tuple[str, str], Scalar] = {}
        self.done: dict[int, YNode] = {}

    def error(self, node: yaml.Node, message: str, fix: str = "") -> None:
        line, col = _pos(node)
        self.problems.append(Diagnostic(Location(self.file, line, col), message, fix=fix))

    def convert(self, node: yaml.Node, depth: int) -> YNode:
        # An alias is the very node of its anchor: convert it once and share the
        # result, so that alias bombs stay linear and repeated values cost nothing.
        done = self.done.get(id(node))
        if done is not None:
            return done
        result = self._convert(node, depth)
        self.done[id(node)] = result
        return result

    def _convert(self, node: yaml.Node, depth: int) -> YNode:
        self.count += 1
        if self.count > MAX_NODES:
            raise _Abort("the document expands to too many values (alias bomb?)", node)
        if depth > MAX_DEPTH:
            raise _Abort(f"nesting deeper than {MAX_DEPTH} levels", node)
        line, col = _pos(node)
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, line, col)
        if id(node) in self.active:
            raise _Abort("an alias refers to a value that contains it", node)
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                self.check_tag(node, _TAG + "seq")
                return YSeq(line, col, [self.convert(n, depth + 1) for n in node.value])
            assert isinstance(node, yaml.MappingNode)
            self.check_tag(node, _TAG + "map")
            return YMap(line, col, self.entries(node, depth))
        finally:
            self.active.discard(id(node))

    def check_tag(self, node: yaml.Node, expected: str) -> None:
        if node.tag != expected:
            self.error(node, f"unsupported YAML tag {node.tag!r}", "remove the tag")

    def scalar(self, node: yaml.ScalarNode, line: int, col: int) -> YScalar:
        value: Scalar
        if "\0" in node.value:
            # No command, argument, environment value or path can hold one. The
            # rest of the checks go on without it (the plan is rejected anyway).
            self.error(node, "a value holds a NUL character (\\0)", "remove it")
            node.value = node.value.replace("\0", "")
        multiline = node.end_mark.line != node.start_mark.line
        tag = node.tag
        if tag == _STR:
            value = node.value
        elif tag in _SCALAR_TAGS:
            memo = (tag, node.value)
            if memo in self.memo:
                value = self.memo[memo]
            else:
                try:
                    value = _constructor.construct_object(node)
                except (ConstructorError, ValueError, OverflowError):
                    value = node.value
                self.memo[memo] = value
        elif node.tag in (_TAG + "timestamp", _TAG + "merge"):
            value = node.value  # dates stay text: attributes are plain scalars
        else:
            self.error(
                node, f"unsupported YAML tag {node.tag!r}", "remove the tag or quote the value"
            )
            value = node.value
        return YScalar(line, col, value, node.value, node.style or None, multiline)

    def entries(self, node: yaml.MappingNode, depth: int) -> dict[str, tuple[YScalar, YNode]]:
        out: dict[str, tuple[YScalar, YNode]] = {}
        merged: set[str] = set()
        for knode, vnode in node.value:
            if knode.tag == _TAG + "merge":
                # ``<<: *base`` copies keys the mapping does not set itself.
                for src in self.merge_sources(vnode, depth):
                    for k, entry in src.entries.items():
                        if k not in out:
                            out[k] = entry
                            merged.add(k)
                continue
            if not isinstance(knode, yaml.ScalarNode) or knode.tag not in _SCALAR_TAGS:
                self.error(knode, "mapping keys must be plain strings", "write the key as text")
                continue
            kline, kcol = _pos(knode)
            key = YScalar(kline, kcol, knode.value, knode.value, knode.style or None, False)
            if knode.value in out and knode.value not in merged:
                first = out[knode.value][0]
                self.error(
                    knode,
                    f"duplicate key {knode.value!r} (first at line {first.line})",
                    "remove one of them: YAML keeps only one",
                )
                continue
            merged.discard(knode.value)
            out[knode.value] = (key, self.convert(vnode, depth + 1))
        return out

    def merge_sources(self, vnode: yaml.Node, depth: int) -> list[YMap]:
        items = vnode.value if isinstance(vnode, yaml.SequenceNode) else [vnode]
        out: list[YMap] = []
        for item in items:
            conv = self.convert(item, depth + 1)
            if isinstance(conv, YMap):
                out.append(conv)
            else:
                self.error(item, "'<<' merges mappings only", "merge an anchored mapping")
        return out


class _Abort(Exception):
    def __init__(self, message: str, node: yaml.Node) -> None:
        super().__init__(message)
        self.node = node


def load_yaml(text: str | bytes, file: str, problems: list[Diagnostic]) -> YNode | None:
    """Parse one YAML document; ``None`` when empty.

    Syntax errors raise ``PlanError`` (nothing after them can be trusted);
    duplicate keys and unsupported tags are appended to ``problems`` and the
    rest of the document is still returned, so that every problem is reported.
    """
    # The collector only slows down building many small acyclic objects.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _load(text, file, problems)
    finally:
        if was_enabled:
            gc.enable()


def _load(text: str | bytes, file: str, problems: list[Diagnostic]) -> YNode | None:
    try:
        node = yaml.compose(text, Loader=_FastLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file, 1, 1)
        what = " ".join(str(p) for p in (e.context, e.problem) if p)
        raise PlanError(
            [Diagnostic(loc, f"YAML syntax error: {what}", fix="fix the YAML syntax here")]
        ) from None
    except (yaml.YAMLError, UnicodeDecodeError, ValueError) as e:
        raise PlanError(
            [
                Diagnostic(
                    Location(file, 1, 1), f"cannot read YAML: {e}", fix="save it as UTF-8 YAML"
                )
            ]
        ) from None
    if node is None:
        return None
    conv = _Converter(file)
    try:
        result = conv.convert(node, 0)
    except _Abort as e:
        conv.error(e.node, str(e), "simplify the document")
        raise PlanError(problems + conv.problems) from None
    problems.extend(conv.problems)
    return result


def to_python(node: YNode | None) -> Any:
    """Plain Python data (dicts, lists, scalars) of a node tree, as JSON would hold it."""
    if isinstance(node, YMap):
        return {k: to_python(v) for k, (_, v) in node.entries.items()}
    if isinstance(node, YSeq):
        return [to_python(i) for i in node.items]
    return node.value if isinstance(node, YScalar) else None
