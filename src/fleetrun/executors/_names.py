"""File names for names chosen by users (targets, tasks): any length, any characters.

A target or task name becomes part of a log or output file name. A file
system takes at most 255 bytes per path component, and some characters
(``/``, NUL) not at all, so ``file_name`` gives a component that depends
neither on the length nor on the characters of the name: short plain names
stay as they are (``uksouth``), others become a readable prefix plus a hash
of the whole name (``a-very-long-name…~3f2a9c41d07e``), which keeps distinct
names distinct.
"""

from __future__ import annotations

import hashlib
import re

MAX_BYTES = 100
"""Most bytes of a ``file_name`` (leaves room for ``.<attempt>.outputs`` and more)."""

_PLAIN = re.compile(r"[A-Za-z0-9@%+=:,._-]+")
_UNSAFE = re.compile(r"[^A-Za-z0-9@%+=:,._-]")


def file_name(name: str) -> str:
    """``name`` as one safe path component of at most ``MAX_BYTES`` bytes (ASCII).

    The same name always gives the same component; distinct names give
    distinct components (names that are not kept as they are carry a hash).
    """
    if len(name) <= MAX_BYTES and _PLAIN.fullmatch(name) and name not in (".", ".."):
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    prefix = _UNSAFE.sub("_", name)[: MAX_BYTES - len(digest) - 1].lstrip(".")
    return f"{prefix}~{digest}"
