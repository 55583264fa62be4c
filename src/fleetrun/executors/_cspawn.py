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
``POSIX_SPAWN_DUP2``, and ``CHDIR`` where libc has it). An environment used
for many spawns is encoded once (``EnvBlock``). Where libc cannot be loaded or lacks a symbol,
``available()`` is False and callers use ``os.posix_spawn``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

_SETPGROUP = 0x02
"""``POSIX_SPAWN_SETPGROUP`` (the same value in glibc and musl)."""
_SETSIGDEF = 0x04
_SETSIGMASK = 0x08
"""``POSIX_SPAWN_SETSIGDEF`` / ``POSIX_SPAWN_SETSIGMASK`` (glibc and musl)."""

CLEAN_SIGNALS: dict[str, Any] = {
    "setsigdef": tuple(signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}),
    "setsigmask": (),
}
"""``os.posix_spawn`` arguments that start a child with every signal at its
default disposition and an empty mask: Python ignores SIGPIPE and SIGXFSZ,
and a child must not inherit that (``yes | head -1`` would never end)."""

_OPAQUE = 1024
"""Bytes reserved for ``posix_spawnattr_t`` / ``posix_spawn_file_actions_t``
(336 and 80 on glibc x86-64; generous for any libc)."""


LIBC_NAME = ctypes.util.find_library("c") or "libc.so.6"
"""The C library's file, looked up once per process: ``find_library`` runs
``ldconfig`` (a child process) each time it is asked."""


def _load() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(LIBC_NAME, use_errno=True)
        for name in (
            "posix_spawn",
            "posix_spawnattr_init",
            "posix_spawnattr_setflags",
            "posix_spawnattr_setpgroup",
            "posix_spawnattr_setsigdefault",
            "posix_spawnattr_setsigmask",
            "sigfillset",
            "sigemptyset",
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
    with contextlib.suppress(AttributeError):  # glibc 2.29 and later, musl 1.1.24 and later
        libc.posix_spawn_file_actions_addchdir_np.argtypes = (ctypes.c_void_p, ctypes.c_char_p)
    libc.posix_spawn.argtypes = (
        ctypes.POINTER(ctypes.c_int),
        ctypes.c_char_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
    )
    return libc


def _load_quick(libc: ctypes.CDLL | None) -> ctypes.PyDLL | ctypes.CDLL | None:
    """The calls that only fill memory (file actions, copying pointers), keeping the GIL.

    Every call through a ``CDLL`` releases the GIL and takes it back; while the
    event loop wants the GIL, each such call can hand it over and then wait to
    get it back (up to the interpreter's switch interval). Only ``posix_spawn``
    itself, which waits for the child to exec, is worth that.
    """
    if libc is None:
        return None
    try:
        quick: ctypes.PyDLL | ctypes.CDLL = ctypes.PyDLL(LIBC_NAME)
    except OSError:
        quick = libc
    for name, argtypes in (
        ("posix_spawn_file_actions_init", (ctypes.c_void_p,)),
        ("posix_spawn_file_actions_destroy", (ctypes.c_void_p,)),
        ("posix_spawn_file_actions_addopen", libc.posix_spawn_file_actions_addopen.argtypes),
        ("posix_spawn_file_actions_adddup2", libc.posix_spawn_file_actions_adddup2.argtypes),
        ("memmove", (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)),
    ):
        getattr(quick, name).argtypes = argtypes
    quick.memmove.restype = ctypes.c_void_p
    if hasattr(libc, "posix_spawn_file_actions_addchdir_np"):
        quick.posix_spawn_file_actions_addchdir_np.argtypes = (ctypes.c_void_p, ctypes.c_char_p)
    return quick


_LIBC = _load()
_QUICK = _load_quick(_LIBC)
_PTR = ctypes.sizeof(ctypes.c_char_p)
_FS_ENCODING = sys.getfilesystemencoding()
_FS_ERRORS = sys.getfilesystemencodeerrors()

CHDIR = -1
"""File action ``(CHDIR, path)``: the child changes to ``path`` (``can_chdir()``).

Put it last: the actions run in order, so paths opened before it are
relative to the caller's directory."""


def available() -> bool:
    """True when ``spawn`` can be used on this system."""
    return _LIBC is not None


def can_chdir() -> bool:
    """True when ``spawn`` takes the ``CHDIR`` file action."""
    return _LIBC is not None and hasattr(_LIBC, "posix_spawn_file_actions_addchdir_np")


def _strings(items: Sequence[bytes]) -> ctypes.Array[ctypes.c_char_p]:
    return (ctypes.c_char_p * (len(items) + 1))(*items, None)


class EnvBlock:
    """An environment encoded once, as the C array of ``NAME=value`` that libc takes.

    A spawn copies the array's pointers and appends its own entries
    (``spawn(extra_env=...)``), instead of converting every entry again. The
    entries stay alive as long as the block: keep it while it is in use.
    """

    __slots__ = ("_array", "_n")

    def __init__(self, env: Mapping[str, str]) -> None:
        fsencode = os.fsencode
        entries = [fsencode(k) + b"=" + fsencode(v) for k, v in env.items()]
        self._n = len(entries)
        self._array = (ctypes.c_char_p * self._n)(*entries)

    def array(self, extra: Sequence[bytes]) -> ctypes.Array[ctypes.c_char_p]:
        """The block's entries, then ``extra``, then the closing NULL."""
        n = self._n
        arr = (ctypes.c_char_p * (n + len(extra) + 1))()
        assert _QUICK is not None
        _QUICK.memmove(arr, self._array, n * _PTR)
        for k, entry in enumerate(extra, n):
            arr[k] = entry
        return arr


_THREAD = threading.local()


def _attr() -> ctypes.Array[ctypes.c_char]:
    """This thread's spawn attributes, made once per thread: a new process group,
    every signal at its default disposition, an empty signal mask.

    ``posix_spawn`` only reads them, and glibc's ``posix_spawnattr_destroy``
    frees nothing, so one set serves every spawn of the thread.
    """
    attr: ctypes.Array[ctypes.c_char] | None = getattr(_THREAD, "attr", None)
    if attr is None:
        libc = _LIBC
        assert libc is not None
        attr = _THREAD.attr = ctypes.create_string_buffer(_OPAQUE)
        libc.posix_spawnattr_init(attr)
        libc.posix_spawnattr_setflags(attr, _SETPGROUP | _SETSIGDEF | _SETSIGMASK)
        libc.posix_spawnattr_setpgroup(attr, 0)
        sigset = ctypes.create_string_buffer(_OPAQUE)
        libc.sigfillset(sigset)
        libc.posix_spawnattr_setsigdefault(attr, sigset)
        libc.sigemptyset(sigset)
        libc.posix_spawnattr_setsigmask(attr, sigset)
    return attr


def spawn(
    path: str,
    argv: Sequence[str],
    env: Mapping[str, str] | EnvBlock,
    file_actions: Sequence[tuple[Any, ...]],
    extra_env: Sequence[bytes] = (),
) -> int:
    """Start ``path`` in a new process group of its own; return its pid.

    ``env`` is a mapping or an ``EnvBlock``; ``extra_env`` adds encoded
    ``b"NAME=value"`` entries to a block. ``file_actions`` as for
    ``os.posix_spawn`` (OPEN and DUP2 only), plus ``(CHDIR, path)``. Raises
    ``OSError`` like ``os.posix_spawn`` (for example ENOENT when ``path`` is
    missing). Call only when ``available()``.
    """
    libc, quick = _LIBC, _QUICK
    assert libc is not None
    assert quick is not None
    fsencode = os.fsencode
    c_argv = _strings([a.encode(_FS_ENCODING, _FS_ERRORS) for a in argv])
    if isinstance(env, EnvBlock):
        c_env = env.array(extra_env)
    else:
        c_env = _strings([fsencode(k) + b"=" + fsencode(v) for k, v in env.items()])
    actions = ctypes.create_string_buffer(_OPAQUE)
    quick.posix_spawn_file_actions_init(actions)
    try:
        for act in file_actions:
            kind = act[0]
            if kind == os.POSIX_SPAWN_OPEN:
                _, fd, name, flags, mode = act
                err = quick.posix_spawn_file_actions_addopen(
                    actions, fd, fsencode(str(name)), flags, mode
                )
            elif kind == os.POSIX_SPAWN_DUP2:
                err = quick.posix_spawn_file_actions_adddup2(actions, act[1], act[2])
            elif kind == CHDIR and can_chdir():
                err = quick.posix_spawn_file_actions_addchdir_np(actions, fsencode(str(act[1])))
            else:
                raise ValueError(f"unsupported file action {act!r}")
            if err:
                raise OSError(err, os.strerror(err))
        pid = ctypes.c_int(0)
        # The GIL is released for this call: other threads run while the
        # child execs.
        err = libc.posix_spawn(ctypes.byref(pid), fsencode(path), actions, _attr(), c_argv, c_env)
    finally:
        quick.posix_spawn_file_actions_destroy(actions)
    if err:
        raise OSError(err, os.strerror(err), path)
    return pid.value
