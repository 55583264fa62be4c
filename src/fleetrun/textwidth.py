"""How wide text is on a terminal, and padding by that width: the one rule every
table and aligned column fleetrun prints uses.

A character counts as the columns a terminal gives it: East Asian wide and
fullwidth characters (Chinese, Japanese, Korean; ``unicodedata.east_asian_width``
``W`` or ``F``) count 2, combining marks and zero-width characters 0, every
other character 1. ``len`` would count "東京" as 2 and break the alignment of
every row after it. Standard library only, so every package may import it.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

__all__ = ["clip", "display_width", "ljust", "rjust"]

_ZERO_WIDTH = frozenset("\u200b\u200c\u200d\u2060\ufeff")


@lru_cache(maxsize=4096)
def _char_width(c: str) -> int:
    if unicodedata.combining(c) or c in _ZERO_WIDTH:
        return 0
    return 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1


def display_width(text: str) -> int:
    """The number of terminal columns ``text`` takes (see the module doc)."""
    if text.isascii():
        return len(text)
    return sum(_char_width(c) for c in text)


def ljust(text: str, width: int) -> str:
    """``text`` padded with spaces on the right to ``width`` columns."""
    return text + " " * max(0, width - display_width(text))


def rjust(text: str, width: int) -> str:
    """``text`` padded with spaces on the left to ``width`` columns."""
    return " " * max(0, width - display_width(text)) + text


def clip(text: str, width: int, *, ellipsis: str = "…") -> str:
    """``text`` cut to at most ``width`` columns, ending with ``ellipsis`` when cut
    (a wide character is never split in half)."""
    if display_width(text) <= width:
        return text
    room = width - display_width(ellipsis)
    out, used = [], 0
    for c in text:
        w = _char_width(c)
        if used + w > room:
            break
        out.append(c)
        used += w
    return "".join(out) + ellipsis
