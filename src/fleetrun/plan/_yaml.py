"""YAML reading that keeps the line and column of every key and value.

PyYAML's parser (libyaml's C parser when available) yields events; this
module composes them straight into small ``YMap``/``YSeq``/``YScalar`` objects
that carry 1-based positions, resolving scalars with YAML's safe rules (no
intermediate node tree: memory is proportional to the text). An alias shares
its anchor's object; the alias-bomb guard counts what aliases would add if
expanded, not the values written. Keys
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

MAX_ALIAS_VALUES = 1_000_000
"""Aliases may add this many values when expanded (or ten times what the text
writes, whichever is more); past that the document is an alias bomb, not a plan.
Written values are not limited: memory grows with the text, one ``YNode`` each."""

_TAG = "tag:yaml.org,2002:"
_STR, _NULL, _MERGE = _TAG + "str", _TAG + "null", _TAG + "merge"
_SCALAR_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null")}
_constructor = SafeConstructor()
_SHARED_LEN = 16
"""Scalars up to this length are shared between equal values while composing."""
_IMPLICIT = {k: tuple(v) for k, v in _Loader.yaml_implicit_resolvers.items()}


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


class _Abort(Exception):
    def __init__(self, message: str, line: int, column: int, fix: str = "simplify the document"):
        super().__init__(message)
        self.line = line
        self.column = column
        self.fix = fix


def _resolve(value: str, implicit: tuple[bool, bool], memo: dict[str, str]) -> str:
    """YAML's safe tag of a plain scalar (memoised: fleets repeat the same values)."""
    if not implicit[0]:
        return _STR
    tag = memo.get(value)
    if tag is None:
        tag = _STR
        for t, regexp in _IMPLICIT.get(value[:1], ()):
            if regexp.match(value):
                tag = t
                break
        memo[value] = tag
    return tag


class _Frame:
    """A mapping or sequence being built: its start, anchor, children and size so far."""

    __slots__ = ("anchor", "column", "is_map", "items", "line", "size")

    def __init__(self, is_map: bool, line: int, column: int, anchor: str | None) -> None:
        self.is_map = is_map
        self.line = line
        self.column = column
        self.anchor = anchor
        self.items: list[YNode] = []
        self.size = 1


class _Composer:
    """Builds ``YNode`` trees straight from parser events.

    No intermediate node tree (with two ``Mark`` objects per node) is ever
    built, so memory is the ``YNode`` tree alone: proportional to the text.
    An alias shares the ``YNode`` of its anchor; what it would add if the
    document were expanded (the anchor's ``size`` in values) is counted in
    ``expanded``, which is what the alias-bomb guard limits.
    """

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Diagnostic] = []
        self.written = 0  # values written in the text
        self.expanded = 0  # values that aliases add when expanded
        self.anchors: dict[str, tuple[YNode, int]] = {}
        self.open_anchors: dict[str, tuple[int, int]] = {}  # anchored values being built
        self.memo: dict[tuple[str, str], Scalar] = {}
        self.tags: dict[str, str] = {}
        self.strings: dict[str, str] = {}
        # Scalars tagged merge, timestamp or unknown, by id; held so no id is reused.
        self.special: dict[int, YScalar] = {}

    def error(self, line: int, column: int, message: str, fix: str = "") -> None:
        self.problems.append(Diagnostic(Location(self.file, line, column), message, fix=fix))

    def compose(self, loader: _Loader) -> YNode | None:
        """The single document of the stream, or None when there is none."""
        loader.get_event()  # StreamStart
        if loader.check_event(yaml.StreamEndEvent):
            return None
        loader.get_event()  # DocumentStart
        root = self.document(loader)
        loader.get_event()  # DocumentEnd
        if not loader.check_event(yaml.StreamEndEvent):
            extra: Any = loader.get_event()
            mark = extra.start_mark
            raise _Abort(
                "expected a single document, found another ('---')",
                mark.line + 1,
                mark.column + 1,
            )
        return root

    def document(self, loader: _Loader) -> YNode:
        stack: list[_Frame] = []
        get = loader.get_event
        result: YNode | None = None
        last_line = 0
        while result is None:
            event: Any = get()
            cls = type(event)
            size = 1
            node: YNode
            if cls is yaml.ScalarEvent:
                mark = event.start_mark
                line = mark.line + 1
                if line != last_line:
                    last_line = line
                else:
                    line = last_line  # one int object per line, not per value
                node = self.scalar(event, line, mark.column + 1)
                anchor = event.anchor
            elif cls is yaml.AliasEvent:
                mark = event.start_mark
                line, col = mark.line + 1, mark.column + 1
                name = event.anchor
                if name in self.open_anchors:
                    at = self.open_anchors[name]
                    raise _Abort("an alias refers to a value that contains it", *at)
                if name not in self.anchors:
                    fix = f"define the anchor (&{name}) before the alias, or fix the name"
                    raise _Abort(f"alias *{name} names no anchor before it", line, col, fix)
                node, size = self.anchors[name]
                self.expanded += size
                if self.expanded > MAX_ALIAS_VALUES and self.expanded > 10 * self.written:
                    raise _Abort(
                        f"aliases expand to more than {MAX_ALIAS_VALUES:,} values "
                        f"(alias bomb?), against {self.written:,} written",
                        line,
                        col,
                    )
                anchor = None
            elif cls is yaml.MappingStartEvent or cls is yaml.SequenceStartEvent:
                mark = event.start_mark
                is_map = cls is yaml.MappingStartEvent
                line, col = mark.line + 1, mark.column + 1
                if len(stack) > MAX_DEPTH:
                    raise _Abort(f"nesting deeper than {MAX_DEPTH} levels", line, col)
                expected = _TAG + ("map" if is_map else "seq")
                if event.tag not in (None, "!", expected):
                    self.error(line, col, f"unsupported YAML tag {event.tag!r}", "remove the tag")
                if event.anchor is not None:
                    self.open_anchors[event.anchor] = (line, col)
                stack.append(_Frame(is_map, line, col, event.anchor))
                self.written += 1
                continue
            else:  # MappingEnd / SequenceEnd
                frame = stack.pop()
                if frame.is_map:
                    node = YMap(frame.line, frame.column, self.entries(frame.items))
                else:
                    node = YSeq(frame.line, frame.column, frame.items)
                size = frame.size
                anchor = frame.anchor
                if anchor is not None:
                    del self.open_anchors[anchor]
            if anchor is not None:
                self.anchors[anchor] = (node, size)
            if stack:
                top = stack[-1]
                top.items.append(node)
                top.size += size
            else:
                result = node
        return result

    def scalar(self, event: Any, line: int, col: int) -> YScalar:
        self.written += 1
        text: str = event.value
        if len(text) <= _SHARED_LEN:
            # Fleets repeat the same short keys and values: keep one string of each.
            text = self.strings.setdefault(text, text)
        if "\0" in text:
            # No command, argument, environment value or path can hold one. The
            # rest of the checks go on without it (the plan is rejected anyway).
            self.error(line, col, "a value holds a NUL character (\\0)", "remove it")
            text = text.replace("\0", "")
        tag = event.tag
        if tag is None or tag == "!":
            tag = _resolve(text, event.implicit, self.tags)
        value: Scalar
        if tag == _STR:
            value = text
        elif tag in _SCALAR_TAGS:
            memo = (tag, text)
            if memo in self.memo:
                value = self.memo[memo]
            else:
                try:
                    value = _constructor.construct_object(yaml.ScalarNode(tag, text))
                except (ConstructorError, ValueError, OverflowError):
                    value = text
                self.memo[memo] = value
        elif tag in (_TAG + "timestamp", _MERGE):
            value = text  # dates stay text: attributes are plain scalars
        else:
            self.error(
                line, col, f"unsupported YAML tag {tag!r}", "remove the tag or quote the value"
            )
            value = text
        multiline = event.end_mark.line != event.start_mark.line
        node = YScalar(line, col, value, text, event.style or None, multiline)
        if tag not in _SCALAR_TAGS:
            self.special[id(node)] = node  # a merge key '<<', or a value that cannot be a key
        return node

    def entries(self, items: list[YNode]) -> dict[str, tuple[YScalar, YNode]]:
        out: dict[str, tuple[YScalar, YNode]] = {}
        merged: set[str] = set()
        for k in range(0, len(items) - 1, 2):
            knode, vnode = items[k], items[k + 1]
            special = id(knode) in self.special
            if special and isinstance(knode, YScalar) and knode.source == "<<":
                # ``<<: *base`` copies keys the mapping does not set itself.
                for src in self.merge_sources(vnode):
                    for name, entry in src.entries.items():
                        if name not in out:
                            out[name] = entry
                            merged.add(name)
                continue
            if not isinstance(knode, YScalar) or special:
                self.error(
                    knode.line,
                    knode.column,
                    "mapping keys must be plain strings",
                    "write the key as text",
                )
                continue
            key_text = knode.source
            # Keys stay the text written: ``on`` is "on", not True (a new node only then).
            key = knode
            if knode.value is not key_text:
                key = YScalar(knode.line, knode.column, key_text, key_text, knode.style, False)
            if key_text in out and key_text not in merged:
                first = out[key_text][0]
                self.error(
                    knode.line,
                    knode.column,
                    f"duplicate key {key_text!r} (first at line {first.line})",
                    "remove one of them: YAML keeps only one",
                )
                continue
            merged.discard(key_text)
            out[key_text] = (key, vnode)
        return out

    def merge_sources(self, vnode: YNode) -> list[YMap]:
        items = vnode.items if isinstance(vnode, YSeq) else [vnode]
        out: list[YMap] = []
        for item in items:
            if isinstance(item, YMap):
                out.append(item)
            else:
                self.error(
                    item.line, item.column, "'<<' merges mappings only", "merge an anchored mapping"
                )
        return out


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
    composer = _Composer(file)
    loader = _Loader(text)
    try:
        result = composer.compose(loader)
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
    except _Abort as e:
        composer.error(e.line, e.column, str(e), e.fix)
        raise PlanError(problems + composer.problems) from None
    finally:
        loader.dispose()
    problems.extend(composer.problems)
    return result


def to_python(node: YNode | None) -> Any:
    """Plain Python data (dicts, lists, scalars) of a node tree, as JSON would hold it."""
    if isinstance(node, YMap):
        return {k: to_python(v) for k, (_, v) in node.entries.items()}
    if isinstance(node, YSeq):
        return [to_python(i) for i in node.items]
    return node.value if isinstance(node, YScalar) else None
