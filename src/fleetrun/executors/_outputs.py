"""The outputs rule, one for every executor: what a task publishes is passed on
whole and unchanged, or refused.

A task publishes ``key=value`` lines (in ``$FLEETRUN_OUTPUT``). Blank lines and
``#`` comments are ignored and a later key wins. The attempt fails with
``OutputRefused``, naming the task, the key and the rule, when

- a line is not UTF-8 text, or a key or value holds a NUL (no environment
  variable can carry one);
- a value is longer than ``MAX_VALUE_BYTES`` (64 KiB, UTF-8): a dependent
  receives each value as an environment variable and in its command, and the
  kernel takes at most 128 KiB for one of those;
- the outputs file is longer than ``MAX_OUTPUTS_BYTES`` (1 MiB) in all;
- two keys would reach a dependent as one environment variable (``k-1`` and
  ``k_1``: ``FLEETRUN_OUTPUT_<TASK>_K_1``), so one value would be lost.

Nothing is ever passed on as replacement characters or cut short, and no
later key is dropped. An executor that reads the file itself reads at most
``MAX_OUTPUTS_BYTES + 1`` bytes and hands them to ``parse_output_bytes``, or
calls ``check_outputs_size`` with the file's size.

Whatever the executor and the size, the copy of the outputs file left on
disk is redacted (a task may publish a secret: dependents get the value, the
disk does not).
"""

from __future__ import annotations

import os

from fleetrun.names import OUTPUT_ENV, env_name
from fleetrun.redact import Redactor

__all__ = [
    "MAX_OUTPUTS_BYTES",
    "MAX_VALUE_BYTES",
    "OutputRefused",
    "check_outputs_size",
    "parse_output_bytes",
    "parse_outputs",
    "read_output_file",
    "redact_output_file",
]

MAX_VALUE_BYTES = 64 << 10
"""Longest output value, in UTF-8 bytes (64 KiB)."""

MAX_OUTPUTS_BYTES = 1 << 20
"""Longest outputs file of one attempt, in bytes (1 MiB)."""

_CHUNK = 1 << 20  # how an outputs file over the limit is redacted: chunk by chunk


class OutputRefused(ValueError):
    """A published output cannot be passed on whole and unchanged (not UTF-8
    text, a NUL, or over a size limit)."""


def _size(n: int) -> str:
    """``n`` bytes as the documentation writes a limit (``64 KiB``, ``1 MiB``)."""
    return f"{n >> 20} MiB" if n % (1 << 20) == 0 else f"{n >> 10} KiB"


def check_outputs_size(size: int, who: str = "the task") -> None:
    """Refuse an outputs file of ``size`` bytes over ``MAX_OUTPUTS_BYTES``."""
    if size > MAX_OUTPUTS_BYTES:
        raise OutputRefused(
            f"{who}: its outputs take more than {MAX_OUTPUTS_BYTES} bytes "
            f"({_size(MAX_OUTPUTS_BYTES)}), the limit for one attempt; publish a path or a "
            "digest of large data instead"
        )


def parse_output_bytes(data: bytes, who: str = "the task") -> dict[str, str]:
    """``key=value`` lines as ``parse_outputs``, from bytes, refusing what would change.

    Raises ``OutputRefused`` naming ``who`` (and the key) when ``data`` is over
    ``MAX_OUTPUTS_BYTES``, a line is not UTF-8, a value holds a NUL (no
    environment variable can carry one) or is over ``MAX_VALUE_BYTES``.
    """
    check_outputs_size(len(data), who)
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
            size = len(value.encode("utf-8", "surrogatepass"))
            if size > MAX_VALUE_BYTES:
                raise OutputRefused(
                    f"{who}: output {key!r} is {size} bytes, more than the limit of "
                    f"{MAX_VALUE_BYTES} bytes ({_size(MAX_VALUE_BYTES)}) for one value; "
                    "publish a path or a digest of large data instead"
                )
        out.update(found)
    _check_names(out, who)
    return out


def _check_names(outputs: dict[str, str], who: str) -> None:
    """Refuse two keys that a dependent would receive as one environment variable
    (``k-1`` and ``k_1`` both arrive as ``FLEETRUN_OUTPUT_<TASK>_K_1``)."""
    seen: dict[str, str] = {}
    for key in outputs:
        name = env_name(key)
        other = seen.setdefault(name, key)
        if other != key:
            raise OutputRefused(
                f"{who}: outputs {other!r} and {key!r} would both arrive as "
                f"{OUTPUT_ENV}_<TASK>_{name}, and one value would be lost; "
                "give them names that differ in more than punctuation or case"
            )


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
    """Parse an attempt's outputs file (whole, or refused: see the module);
    leave only a redacted copy of it on disk."""
    data = redact_output_file(path, redactor)
    return {} if data is None else parse_output_bytes(data, who)


def redact_output_file(path: str, redactor: Redactor) -> bytes | None:
    """Leave only a redacted copy of the file at ``path``; return what it held
    (None: there is no such file). A file over ``MAX_OUTPUTS_BYTES`` is
    redacted all through, and only its first ``MAX_OUTPUTS_BYTES + 1`` bytes
    are returned (enough to refuse it)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    try:
        if os.fstat(fd).st_size > MAX_OUTPUTS_BYTES:
            return _redact_large(fd, redactor)
        chunks: list[bytes] = []
        while chunk := os.read(fd, _CHUNK):
            chunks.append(chunk)
        data = b"".join(chunks)
        if len(data) > MAX_OUTPUTS_BYTES:  # it grew meanwhile
            return _redact_large(fd, redactor)
        clean = redactor.redact_bytes(data)
        if clean != data:
            os.ftruncate(fd, 0)
            os.pwrite(fd, clean, 0)
    finally:
        os.close(fd)
    return data


def _redact_large(fd: int, redactor: Redactor) -> bytes:
    """Redact the open file ``fd`` in place, chunk by chunk (bounded memory);
    return its first ``MAX_OUTPUTS_BYTES + 1`` bytes as they were.

    In place is safe: a secret is at least as long as its mask, so what is
    written never passes what has been read.
    """
    head = os.pread(fd, MAX_OUTPUTS_BYTES + 1, 0)
    if not redactor:
        return head
    stream = redactor.stream()
    read = written = 0
    while chunk := os.pread(fd, _CHUNK, read):
        read += len(chunk)
        clean = stream.feed(chunk)
        os.pwrite(fd, clean, written)
        written += len(clean)
    clean = stream.flush()
    os.pwrite(fd, clean, written)
    os.ftruncate(fd, written + len(clean))
    return head
