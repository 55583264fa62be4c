"""``posix_spawn`` from libc, called with the GIL released.

glibc's ``posix_spawn`` returns only once the child has exec'd (vfork
semantics: the calling thread is suspended meanwhile). CPython's
``os.posix_spawn`` holds the GIL for that whole call, so a spawner thread that
uses it stops every other thread of the process, the event loop included, for
each exec; a thread could not help at all. A foreign call through ``ctypes``
releases the GIL, so here the loop goes on while a spawner thread waits for
its child to exec. (Shown by ``tests/engine/test_local_executor.py``: a child
whose spawn blocks opening a FIFO does not stop another thread, which then
opens the FIFO's other end.)

``spawn`` takes the same arguments as ``os.posix_spawn`` with ``setpgroup=0``
and the file actions the executor uses (``POSIX_SPAWN_OPEN`` and
``POSIX_SPAWN_DUP2``). Where libc cannot be loaded or lacks a symbol,
``available()`` is False and callers use ``os.posix_spawn``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Mapping, Sequence

_SETPGROUP = 0x02
"""``POSIX_SPAWN_SETPGROUP`` (the same value in glibc and musl)."""

_OPAQUE = 1024
"""Bytes reserved for ``posix_spawnattr_t`` / ``posix_spawn_file_actions_t``
(336 and 80 on glibc x86-64; generous for any libc)."""


def _load() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        for name in (
            "posix_spawn",
            "posix_spawnattr_init",
            "posix_spawnattr_setflags",
            "posix_spawnattr_setpgroup",
            "posix_spawnattr_destroy",
            "posix_spawn_file_actions_init",
            "posix_spawn_file_actions_addopen",
            "posix_spawn_file_actions_adddup2",
            "posix_spawn_file_actions_destroy",
        ):
            getattr(libc, name)
    except (OSError, AttributeError):
        return None
    libc.posix_spawnattr_setflags.argtypes = (ctypes.c_void_p, ctypes.c_short)
    libc.posix_spawnattr_setpgroup.argtypes = (ctypes.c_void_p, ctypes.c_int)
    libc.posix_spawn_file_actions_addopen.argtypes = (
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_uint,
    )
    libc.posix_spawn_file_actions_adddup2.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_int)
    libc.posix_spawn.argtypes = (
        ctypes.POINTER(ctypes.c_int),
        ctypes.c_char_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
    )
    return libc


_LIBC = _load()


def available() -> bool:
    """True when ``spawn`` can be used on this system."""
    return _LIBC is not None


def _strings(items: Sequence[bytes]) -> ctypes.Array[ctypes.c_char_p]:
    return (ctypes.c_char_p * (len(items) + 1))(*items, None)


def spawn(
    path: str,
    argv: Sequence[str],
    env: Mapping[str, str] | Sequence[bytes],
    file_actions: Sequence[tuple[int, ...] | tuple[int, int, str, int, int]],
) -> int:
    """Start ``path`` in a new process group of its own; return its pid.

    ``env`` is a mapping, or its ``b"NAME=value"`` entries already encoded.
    ``file_actions`` as for ``os.posix_spawn`` (OPEN and DUP2 only). Raises
    ``OSError`` like ``os.posix_spawn`` (for example ENOENT when ``path`` is
    missing). Call only when ``available()``.
    """
    libc = _LIBC
    assert libc is not None
    fsencode = os.fsencode
    c_argv = _strings([fsencode(a) for a in argv])
    entries = (
        [fsencode(k) + b"=" + fsencode(v) for k, v in env.items()]
        if isinstance(env, Mapping)
        else env
    )
    c_env = _strings(entries)
    attr = ctypes.create_string_buffer(_OPAQUE)
    actions = ctypes.create_string_buffer(_OPAQUE)
    libc.posix_spawnattr_init(attr)
    libc.posix_spawn_file_actions_init(actions)
    try:
        libc.posix_spawnattr_setflags(attr, _SETPGROUP)
        libc.posix_spawnattr_setpgroup(attr, 0)
        for act in file_actions:
            if act[0] == os.POSIX_SPAWN_OPEN:
                _, fd, name, flags, mode = act
                err = libc.posix_spawn_file_actions_addopen(
                    actions, fd, fsencode(str(name)), flags, mode
                )
            elif act[0] == os.POSIX_SPAWN_DUP2:
                err = libc.posix_spawn_file_actions_adddup2(actions, act[1], act[2])
            else:
                raise ValueError(f"unsupported file action {act!r}")
            if err:
                raise OSError(err, os.strerror(err))
        pid = ctypes.c_int(0)
        # The GIL is released for this call: other threads run while the
        # child execs.
        err = libc.posix_spawn(ctypes.byref(pid), fsencode(path), actions, attr, c_argv, c_env)
    finally:
        libc.posix_spawn_file_actions_destroy(actions)
        libc.posix_spawnattr_destroy(attr)
    if err:
        raise OSError(err, os.strerror(err), path)
    return pid.value
