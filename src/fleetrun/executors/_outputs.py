"""The outputs rule, one for every executor: what a task publishes is passed on
whole and unchanged, or refused.

A task publishes ``key=value`` lines (in ``$FLEETRUN_OUTPUT``). Blank lines and
``#`` comments are ignored and a later key wins. A line that is not UTF-8
text, or a key or value holding a NUL (no environment variable can carry one),
fails the attempt with ``OutputRefused`` naming the task and the key: nothing
is ever passed on as replacement characters or cut short.

Whatever the executor, the copy of the outputs file left on disk is
redacted (a task may publish a secret: dependents get the value, the disk does
not).
"""

from __future__ import annotations

import os

from fleetrun.redact import Redactor

__all__ = [
    "OutputRefused",
    "parse_output_bytes",
    "parse_outputs",
    "read_output_file",
    "redact_output_file",
]

_READ = 1 << 20  # read size of the outputs file (the whole file is read)


class OutputRefused(ValueError):
    """A published output cannot be passed on unchanged (not UTF-8 text, or a NUL)."""


def parse_output_bytes(data: bytes, who: str = "the task") -> dict[str, str]:
    """``key=value`` lines as ``parse_outputs``, from bytes, refusing what would change.

    Raises ``OutputRefused`` naming ``who`` and the key when a line is not
    UTF-8 or a value holds a NUL (no environment variable can carry one).
    """
    out: dict[str, str] = {}
    for raw in data.split(b"\n"):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            key = raw.partition(b"=")[0].strip().decode("utf-8", "backslashreplace")
            raise OutputRefused(
                f"{who}: output {key!r} is not UTF-8 text (byte 0x{raw[e.start]:02x} at "
                f"offset {e.start} of its line); outputs are passed on unchanged or not at all"
            ) from None
        found = parse_outputs(line)
        for key, value in found.items():
            if "\0" in value or "\0" in key:
                raise OutputRefused(
                    f"{who}: output {key.replace(chr(0), '?')!r} holds a NUL byte, "
                    "which no environment variable can carry"
                )
        out.update(found)
    return out


def parse_outputs(text: str) -> dict[str, str]:
    """``key=value`` lines (blank lines and ``#`` comments ignored; later keys win)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip()
        if key:
            out[key] = value.strip()
    return out


def read_output_file(path: str, redactor: Redactor, who: str = "the task") -> dict[str, str]:
    """Parse an attempt's outputs file; leave only a redacted copy of it on disk."""
    data = redact_output_file(path, redactor)
    return {} if data is None else parse_output_bytes(data, who)


def redact_output_file(path: str, redactor: Redactor) -> bytes | None:
    """Leave only a redacted copy of the file at ``path``; return what it held
    (None: there is no such file)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    try:
        chunks: list[bytes] = []
        while chunk := os.read(fd, _READ):
            chunks.append(chunk)
        data = b"".join(chunks)
        clean = redactor.redact_bytes(data)
        if clean != data:
            os.ftruncate(fd, 0)
            os.pwrite(fd, clean, 0)
    finally:
        os.close(fd)
    return data
