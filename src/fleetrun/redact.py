"""Secret redaction: replace secret values with ``***`` in text and in byte streams.

``Redactor.redact`` handles whole strings (commands, reasons, reports).
``Redactor.stream()`` returns a ``StreamRedactor`` for output that arrives in
chunks: it holds back just enough trailing bytes that a secret split across two
writes is still caught, so a log file never receives a secret's bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"

DEFAULT_SECRET_NAME_PATTERNS: tuple[str, ...] = ("PASSWORD", "TOKEN", "SECRET", "KEY")
"""Environment variable names containing any of these (case-insensitive) are secret."""

MIN_SECRET_LENGTH = 3
"""Shorter values are not redacted: masking every ``1`` or ``on`` would wreck logs."""


def is_secret_name(name: str, patterns: Iterable[str] = DEFAULT_SECRET_NAME_PATTERNS) -> bool:
    """True when an environment variable name marks its value as secret."""
    upper = name.upper()
    return any(p.upper() in upper for p in patterns)


class Redactor:
    """Replaces every known secret value with ``***``."""

    __slots__ = ("_bytes_re", "_max_len", "_str_re", "values")

    def __init__(self, values: Iterable[str] = ()) -> None:
        vals = sorted(
            {v for v in values if v and len(v) >= MIN_SECRET_LENGTH}, key=len, reverse=True
        )
        self.values: tuple[str, ...] = tuple(vals)
        self._str_re = re.compile("|".join(map(re.escape, vals))) if vals else None
        self._bytes_re = (
            re.compile(b"|".join(re.escape(v.encode()) for v in vals)) if vals else None
        )
        self._max_len = max((len(v.encode()) for v in vals), default=0)

    def __bool__(self) -> bool:
        return bool(self.values)

    def redact(self, text: str) -> str:
        """``text`` with every secret value replaced."""
        if self._str_re is None or not text:
            return text
        return self._str_re.sub(MASK, text)

    def redact_bytes(self, data: bytes) -> bytes:
        """``data`` with every secret value (UTF-8 encoded) replaced."""
        if self._bytes_re is None or not data:
            return data
        return self._bytes_re.sub(MASK.encode(), data)

    def for_json(self) -> Redactor:
        """A redactor that also catches each secret as encoded inside JSON text
        (``"``, ``\\`` and non-ASCII characters escaped, as ``json.dumps`` writes them)."""
        import json

        return Redactor([*self.values, *(json.dumps(v)[1:-1] for v in self.values)])

    def stream(self) -> StreamRedactor:
        """A redactor for one chunked byte stream."""
        return StreamRedactor(self)


class StreamRedactor:
    """Redacts a byte stream fed in arbitrary chunks.

    Invariant: bytes returned by ``feed`` can never be the start of a secret
    that continues in a later chunk; up to ``max_len - 1`` bytes are held back.
    """

    __slots__ = ("_buf", "_r")

    def __init__(self, redactor: Redactor) -> None:
        self._r = redactor
        self._buf = b""

    def feed(self, chunk: bytes) -> bytes:
        """Add ``chunk``; return the bytes that are safe to write now."""
        r = self._r
        if r._bytes_re is None:
            return chunk
        data = r.redact_bytes(self._buf + chunk)
        keep = r._max_len - 1
        # Hold back a suffix only if it could begin a secret.
        cut = len(data)
        for i in range(max(0, len(data) - keep), len(data)):
            tail = data[i:]
            if any(v.encode().startswith(tail) for v in r.values):
                cut = i
                break
        self._buf = data[cut:]
        return data[:cut]

    def flush(self) -> bytes:
        """Return whatever is held back (the stream ended)."""
        out, self._buf = self._r.redact_bytes(self._buf), b""
        return out
