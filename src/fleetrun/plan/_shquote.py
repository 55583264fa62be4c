"""Where a template placeholder stands in POSIX sh, and quoting a value for that place.

A command template is shell text with ``{{ ... }}`` holes. Each hole is
quoted for the context it stands in, so the command receives exactly the
value whatever it holds:

- ``bare``: an unquoted word (or part of one): ``shlex.quote``;
- ``double``: inside ``"..."``: ``\\``, ``"``, ``$`` and backtick get a backslash;
- ``single``: inside ``'...'``: each ``'`` becomes ``'\\''`` (close, escaped
  quote, reopen).

``scan`` walks the literal text once, at parse time, tracking quotes,
backslash escapes, ``$(...)`` nesting (whose inside is a fresh command, even
within double quotes), ``${...}``, ``$((...))``, backticks, comments and
here-documents. A hole in a place no quoting makes safe gets a reason
instead of a context, and the plan is refused. Invariant: the hole itself
never changes the scanner's state; to the shell it is one word character.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Sequence

BARE, DOUBLE, SINGLE = "bare", "double", "single"

_WORD_END = frozenset(" \t\n;&|()<>")
_HEREDOC_WORD = re.compile(r"(-?)[ \t]*((?:[^\s;&|()<>'\"\\]|'[^']*'|\"[^\"]*\"|\\.)+)")


def quote_bare(value: str) -> str:
    """``value`` as one shell word: unchanged when plain, else single-quoted."""
    return shlex.quote(value)


def quote_double(value: str) -> str:
    """``value`` for the inside of ``"..."``: backslash before ``\\ " $`` and backtick."""
    if not any(c in value for c in '\\"$`'):
        return value
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("`", "\\`")


def quote_single(value: str) -> str:
    """``value`` for the inside of ``'...'``: each ``'`` closes, is escaped, reopens."""
    return value.replace("'", "'\\''")


QUOTERS: dict[str, Callable[[str], str]] = {
    BARE: shlex.quote,  # quote_bare itself: one call fewer per value rendered
    DOUBLE: quote_double,
    SINGLE: quote_single,
}
"""The quoting function of each context."""

# Frame kinds of the scanner's stack.
_CMD, _DQ, _SQ, _ANSI, _BQ, _PARAM, _ARITH = "cmd", "dq", "sq", "ansi", "bq", "param", "arith"

_UNSAFE = {
    _ANSI: "inside $'...' (its escapes differ between shells)",
    _BQ: "inside backticks (they rewrite backslashes before the inner command runs)",
    _PARAM: "inside ${...} (its inner quoting rules differ between shells)",
    _ARITH: "inside arithmetic ((...)) (a value there is evaluated, not quoted)",
}


class _Scanner:
    """One pass over the literal parts; records each hole's context or why it is unsafe."""

    def __init__(self) -> None:
        self.stack: list[list[int | str]] = [[_CMD, 0]]  # [kind, paren depth]
        self.word_start = True
        self.after_backslash = False
        self.after_dollar = False
        self.comment = False
        self.pending: list[tuple[str, bool]] = []  # here-documents to read: (delimiter, strip tabs)
        self.heredoc: tuple[str, bool] | None = None
        self.line = ""  # the here-document line read so far
        self.heredoc_word = False  # '<<' ends the literal: the hole is the delimiter

    def hole(self) -> tuple[str, str]:
        """(context, "") for a hole at the current position, or ("", reason) when unsafe."""
        kind = self.stack[-1][0]
        if self.heredoc_word:
            return "", "as a here-document delimiter"
        if self.heredoc is not None:
            return "", "inside a here-document (a value could end it early)"
        if self.comment:
            return "", "inside a comment (a newline in the value would end it)"
        if self.after_backslash:
            return "", "right after a backslash (it would escape the quoting)"
        if self.after_dollar:
            return "", "right after '$' (it would turn the quoting into an expansion)"
        # Inside backticks, ${...}, $((...)) or $'...' at any depth, nothing is safe.
        for f in reversed(self.stack):
            if f[0] in _UNSAFE:
                return "", _UNSAFE[str(f[0])]
        self.word_start = False
        if kind == _DQ:
            return DOUBLE, ""
        if kind == _SQ:
            return SINGLE, ""
        return BARE, ""

    def feed(self, text: str) -> None:
        """Advance over literal shell text."""
        i, n = 0, len(text)
        while i < n:
            i = self.step(text, i)

    def step(self, text: str, i: int) -> int:
        """One character (or construct) at ``i``; returns where to go on."""
        c = text[i]
        if self.heredoc is not None:
            if c == "\n":
                delim, strip = self.heredoc
                line = self.line.lstrip("\t") if strip else self.line
                self.line = ""
                if line == delim:
                    self.heredoc = self.pending.pop(0) if self.pending else None
            else:
                self.line += c
            return i + 1
        if self.comment:
            if c == "\n":
                self.comment = False
                self.newline()
            return i + 1
        frame = self.stack[-1]
        kind = frame[0]
        was_backslash, was_dollar = self.after_backslash, self.after_dollar
        self.after_backslash = self.after_dollar = False
        if kind == _SQ:
            if c == "'":
                self.stack.pop()
            return i + 1
        if was_backslash:
            return i + 1  # the escaped character is literal (or a line continuation)
        if c == "\\":
            self.after_backslash = True
            self.word_start = False
            return i + 1
        if kind == _ANSI:
            if c == "'":
                self.stack.pop()
            return i + 1
        if c == "$":
            if text.startswith("$((", i):
                self.stack.append([_ARITH, 0])
                return i + 3
            if text.startswith("$(", i):
                self.stack.append([_CMD, 0])
                self.word_start = True
                return i + 2
            if text.startswith("${", i):
                self.stack.append([_PARAM, 0])
                return i + 2
            if text.startswith("$'", i) and kind not in (_DQ, _PARAM, _ARITH):
                self.stack.append([_ANSI, 0])
                return i + 2
            self.after_dollar = not was_dollar
            self.word_start = False
            return i + 1
        if c == "`":
            if kind == _BQ:
                self.stack.pop()
            else:
                self.stack.append([_BQ, 0])
                self.word_start = True
            return i + 1
        if kind == _DQ:
            if c == '"':
                self.stack.pop()
            return i + 1
        if kind == _PARAM:
            if c == "}":
                self.stack.pop()
            elif c in "'\"":
                self.stack.append([_SQ if c == "'" else _DQ, 0])
            return i + 1
        if kind == _ARITH:
            if c == "(":
                frame[1] = int(frame[1]) + 1
            elif c == ")":
                if frame[1]:
                    frame[1] = int(frame[1]) - 1
                elif text.startswith("))", i):
                    self.stack.pop()
                    return i + 2
            return i + 1
        return self.command_char(text, i, c, frame)

    def command_char(self, text: str, i: int, c: str, frame: list[int | str]) -> int:
        """One character of command text (top level, ``$(...)`` or backticks)."""
        if c == "'":
            self.stack.append([_SQ, 0])
        elif c == '"':
            self.stack.append([_DQ, 0])
        elif c == "#" and self.word_start:
            self.comment = True
            return i + 1
        elif c == "\n":
            self.newline()
            return i + 1
        elif c == "(" and self.word_start and text.startswith("((", i):
            # bash's (( arithmetic )) evaluates what it is given, quoted or not.
            self.stack.append([_ARITH, 0])
            return i + 2
        elif c == "(":
            frame[1] = int(frame[1]) + 1
        elif c == ")":
            if frame[1]:
                frame[1] = int(frame[1]) - 1
            elif frame[0] == _CMD and len(self.stack) > 1:
                self.stack.pop()  # closes $(...)
                self.word_start = False
                return i + 1
        elif c == "<" and text.startswith("<<<", i):
            self.word_start = False  # a here-string: an ordinary word follows
            return i + 3
        elif c == "<" and text.startswith("<<", i):
            m = _HEREDOC_WORD.match(text, i + 2)
            if m is not None:
                word = m.group(2)
                delim = re.sub(r"\\(.)", r"\1", word.replace("'", "").replace('"', ""))
                self.pending.append((delim, bool(m.group(1))))
                self.word_start = False
                # A placeholder right after the word would be part of the delimiter.
                self.heredoc_word = m.end() == len(text)
                return m.end()
            if not text[i + 2 :].strip(" \t-"):
                # The delimiter is a placeholder: its body cannot be found. Refuse the hole.
                self.heredoc_word = True
                self.pending.append(("\0", False))
                return len(text)
        self.word_start = c in _WORD_END
        return i + 1

    def newline(self) -> None:
        self.word_start = True
        if self.pending and self.stack[-1][0] == _CMD:
            self.heredoc = self.pending.pop(0)


def scan(literals: Sequence[str]) -> list[tuple[str, str]]:
    """Context of each hole between ``literals`` (one more literal than holes).

    Returns ``(context, "")`` per hole, or ``("", reason)`` where no quoting
    is safe; ``reason`` completes "a placeholder stands ...".
    """
    scanner = _Scanner()
    out: list[tuple[str, str]] = []
    for k, text in enumerate(literals):
        scanner.feed(text)
        if k < len(literals) - 1:
            out.append(scanner.hole())
            scanner.after_backslash = scanner.after_dollar = scanner.heredoc_word = False
    return out


def fix_for(reason: str, shown: str) -> str:
    """The advice that goes with an unsafe-context ``reason`` for the placeholder ``shown``."""
    if "backticks" in reason:
        return "write $(...) instead of backticks"
    if "backslash" in reason:
        return "remove the backslash before the placeholder"
    if "'$'" in reason:
        return "write the '$' as \\$, or make it part of the value"
    if "comment" in reason:
        return "take the placeholder out of the comment"
    if "delimiter" in reason:
        return "write a fixed delimiter word such as EOF"
    hint = " ($FLEETRUN_TARGET already holds the target's name)" if "target.name" in shown else ""
    if "here-document" in reason:
        use = "$v in the here-document, whose delimiter is unquoted (<<EOF) so $v expands"
    else:
        use = '"$v" here'
    return (
        f"pass the value through a variable: v={shown} on a line before, then {use}{hint}; "
        "or write {{ raw ... }} if the value is meant as shell text"
    )
