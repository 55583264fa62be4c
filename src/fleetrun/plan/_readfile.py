"""Reading the files a plan is made of: the plan file, its targets file, ``env_file``,
script files and ``--var-file`` files.

Each must be a regular file of at most ``MAX_FILE_BYTES``. A FIFO, a device
(``/dev/zero``, ``/dev/stdin`` on a pipe) or a directory is refused before a byte
is read: a stream may never end, and a FIFO nobody writes to would wait forever
(it is opened without waiting for a writer, so the refusal is immediate). A
file larger than the cap is refused by its size, or, when it grows while it is
read, after at most one byte more than the cap: memory stays bounded.
"""

from __future__ import annotations

import os
import stat

MAX_FILE_BYTES = 64 * 1024 * 1024
"""The most a plan, targets, env, script or variables file may hold: 64 MiB. A plan
of 700,000 targets with a few attributes each takes about 30 MB."""

_CHUNK = 1024 * 1024


class UnreadableFile(Exception):
    """Why a file cannot be read (``reason``), and what to do (``fix``; None when the
    path is wrong or the file unreadable, where the caller knows the fix best)."""

    def __init__(self, reason: str, fix: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fix = fix


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _size(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB" if n % (1024 * 1024) == 0 else f"{n} bytes"


def read_bounded(path: str | os.PathLike[str]) -> bytes:
    """The bytes of the regular file at ``path``; ``UnreadableFile`` when it cannot be
    opened, is not a regular file, or holds more than ``MAX_FILE_BYTES``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        raise UnreadableFile(e.strerror or type(e).__name__) from None
    try:
        st = os.fstat(fd)
        mode = st.st_mode
        if not stat.S_ISREG(mode):
            what = _kind(mode)
            fix = (
                "give the path of a file"
                if stat.S_ISDIR(mode)
                else "save what it gives to a regular file and give that file's path"
            )
            raise UnreadableFile(f"{what}, not a regular file", fix)
        chunks: list[bytes] = []
        total = 0
        while total <= MAX_FILE_BYTES and st.st_size <= MAX_FILE_BYTES:
            chunk = os.read(fd, min(_CHUNK, MAX_FILE_BYTES + 1 - total))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            total += len(chunk)
        raise UnreadableFile(
            f"more than {_size(MAX_FILE_BYTES)}, the most a plan's file may hold",
            "check the path, or split the file (targets may be given in a file of their own)",
        )
    except OSError as e:
        raise UnreadableFile(e.strerror or type(e).__name__) from None
    finally:
        os.close(fd)
