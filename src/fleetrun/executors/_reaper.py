"""What an attempt leaves behind: finding it by its tag, ending it, reaping it.

A command may start processes that leave its process group (``setsid``, a
double fork). Two things make them findable and endable:

- fleetrun makes itself a *child subreaper* (``prctl(PR_SET_CHILD_SUBREAPER)``):
  a process whose parent dies is re-parented to fleetrun instead of to init,
  so everything an attempt started is, once the processes between were gone,
  a child of fleetrun's main thread (``/proc/self/task/<pid>/children``);
- every attempt's environment carries ``FLEETRUN_ATTEMPT_ID`` (beside
  ``FLEETRUN_RUN_ID``), which its descendants inherit.

At the end of an attempt (``LocalExecutor``), the children of fleetrun that
carry its attempt id are ended: SIGTERM (to their process group too when they
lead one), the grace period, SIGKILL; their own children come to fleetrun in
turn and are ended the same way. The children list is one small file read,
shared by every attempt that ends in the same turn of the loop (``Children``):
the fast path (a command that leaves nothing) pays nothing else.

``tagged_processes`` searches the whole process table by the tag, for
``--kill-orphans`` (a run that died can no longer be anyone's parent).

The Linux path (``_platform``); where ``prctl`` or the children file is missing,
only the process group is ended (the tag still lets ``tagged_processes`` find
the rest). ``_posix_local`` does without a subreaper.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
from collections.abc import Iterable

from fleetrun.executors._cspawn import LIBC_NAME
from fleetrun.executors._orphans import TaggedProcess
from fleetrun.names import ATTEMPT_ID as ATTEMPT_ID
from fleetrun.names import RUN_ID_ENV

_ATTEMPT_KEY = ATTEMPT_ID.encode() + b"="
_RUN_KEY = RUN_ID_ENV.encode() + b"="
_PR_SET_CHILD_SUBREAPER = 36
_POLL = 0.02
_SUBREAPER: list[bool] = []


def attempt_id(run_id: str, node: int, attempt: int) -> str:
    """The tag of attempt ``attempt`` of node ``node`` in run ``run_id``."""
    return f"{run_id}.{node}.{attempt}"


_PR_GET_CHILD_SUBREAPER = 37


def can_subreap() -> bool:
    """True when this kernel has child subreapers (asked without becoming one)."""
    flag = ctypes.c_int(0)
    try:
        libc = ctypes.CDLL(LIBC_NAME, use_errno=True)
        return bool(libc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (once); True on success."""
    if not _SUBREAPER:
        ok = False
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(LIBC_NAME, use_errno=True)
            ok = libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
        _SUBREAPER.append(ok)
    return _SUBREAPER[0]


_CHILDREN: dict[int, int] = {}
"""This process's open ``children`` file, by pid (a forked child opens its own)."""


def children() -> list[int] | None:
    """The children of this process's main thread (where orphans are re-parented).

    None when the kernel does not list them. The file stays open: reading it
    again from offset 0 costs about 2 µs, opening it about 10.
    """
    me = os.getpid()
    fd = _CHILDREN.get(me)
    try:
        if fd is None:
            fd = _CHILDREN[me] = os.open(
                f"/proc/self/task/{me}/children", os.O_RDONLY | os.O_CLOEXEC
            )
        data = os.pread(fd, 1 << 16, 0)
        if len(data) == 1 << 16:  # a long list: read it whole
            with open(f"/proc/self/task/{me}/children", "rb") as f:
                data = f.read()
        return [int(p) for p in data.split()]
    except (OSError, ValueError):
        return None


def _stat(pid: int) -> tuple[str, int, str] | None:
    """``(state, pgrp, comm)`` of ``pid``, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    close = raw.rfind(b")")
    fields = raw[close + 2 :].split()
    comm = raw[raw.find(b"(") + 1 : close].decode("utf-8", "replace")
    return fields[0].decode(), int(fields[2]), comm


def _environ(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _tag(raw: bytes, key: bytes) -> bytes | None:
    i = raw.find(b"\0" + key)
    if i >= 0:
        i += 1
    elif raw.startswith(key):
        i = 0
    else:
        return None
    end = raw.find(b"\0", i)
    return raw[i + len(key) : end if end >= 0 else len(raw)]


def describe(pid: int) -> str:
    """``1234 (sleep)``: a process as the log names it."""
    st = _stat(pid)
    return f"{pid} ({st[2]})" if st else str(pid)


def group_members(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that still run (zombies left out): a full scan."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None and st[1] == pgid and st[0] not in ("Z", "X"):
                out.append(int(name))
    return out


def reap(pids: Iterable[int]) -> None:
    """Reap those of ``pids`` that are exited children of this process (never blocks)."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def reap_group(pgid: int, exclude: frozenset[int] | set[int] = frozenset()) -> None:
    """Reap this process's exited children that belonged to group ``pgid``."""
    kids = children()
    if not kids:
        return
    for pid in kids:
        st = None if pid in exclude else _stat(pid)
        if st is not None and st[0] == "Z" and st[1] == pgid:
            reap((pid,))


class Children:
    """The main thread's children, read at most once per batch of exits.

    ``token`` is the exit watcher's batch counter: every attempt that ends in
    one batch shares one read, made after the batch's exits were reported (so
    after their orphans were re-parented here).
    """

    __slots__ = ("_pids", "_token")

    def __init__(self) -> None:
        self._token = -1
        self._pids: list[int] | None = None

    def get(self, token: int) -> list[int] | None:
        """The children as of this batch (``token``)."""
        if token != self._token:
            self._token = token
            self._pids = children()
        return self._pids


def tagged_children(tag: str, kids: Iterable[int], exclude: set[int]) -> list[int]:
    """Those of ``kids`` that run with ``FLEETRUN_ATTEMPT_ID=tag`` (``exclude``: the
    leaders of running attempts, whose pids are also their groups' ids).

    Exited ones still in a running attempt's group are reaped. Others cannot
    be told apart from the children of other code in this process (a zombie's
    environment cannot be read), so they are left for whoever waits for them.
    """
    want = tag.encode()
    out = []
    for pid in kids:
        if pid in exclude:
            continue
        raw = _environ(pid)
        if not raw:
            st = _stat(pid)
            if st is not None and st[0] == "Z" and st[1] in exclude:
                reap((pid,))  # an orphan of an attempt's group: ours to reap
            continue
        if _tag(raw, _ATTEMPT_KEY) == want:
            out.append(pid)
    return out


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(OSError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)  # it leads a group (setsid): end the group with it
    with contextlib.suppress(OSError):
        os.kill(pid, sig)


class Leftovers:
    """Ends what one attempt left running outside its process group (see the module)."""

    __slots__ = ("_kill", "ended", "exclude", "tag")

    def __init__(self, tag: str, exclude: set[int]) -> None:
        self.tag = tag
        self.exclude = exclude
        self.ended: list[str] = []
        self._kill = False

    def kill_now(self) -> None:
        """Skip what is left of the grace period."""
        self._kill = True

    async def end(self, first: list[int] | None, grace: float) -> list[str]:
        """TERM, ``grace``, KILL everything tagged ``tag``; returns what was ended.

        ``first``: the children already read for this batch (None: read them).
        """
        loop = asyncio.get_running_loop()
        kids = first if first is not None else children()
        if kids is None:
            return []
        found = tagged_children(self.tag, kids, self.exclude)
        if not found:
            return []
        deadline = loop.time() + max(0.0, grace)
        seen: set[int] = set()
        cancelled = False
        while found:
            late = self._kill or loop.time() >= deadline
            for pid in found:
                if pid not in seen:
                    seen.add(pid)
                    self.ended.append(describe(pid))
                    _signal(pid, signal.SIGKILL if late else signal.SIGTERM)
                elif late:
                    _signal(pid, signal.SIGKILL)
            try:
                await asyncio.sleep(_POLL)
            except asyncio.CancelledError:
                # Cancelled again: no more grace, but they are still ended first.
                cancelled = self._kill = True
            kids = children() or []
            reap(p for p in kids if p in seen)
            found = tagged_children(self.tag, kids, self.exclude)
        if cancelled:
            raise asyncio.CancelledError
        return self.ended


def tagged_processes(run_ids: Iterable[str]) -> list[TaggedProcess]:
    """Live processes whose ``FLEETRUN_RUN_ID`` is one of ``run_ids`` and that carry an
    attempt tag (a full scan of ``/proc``; unreadable environments are passed over).

    For ``--kill-orphans``: the processes of a dead run, wherever they went.
    """
    wanted = {r.encode() for r in run_ids}
    out = []
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        pid = int(name)
        raw = _environ(pid)
        if _ATTEMPT_KEY not in raw:
            continue
        run = _tag(raw, _RUN_KEY)
        tag = _tag(raw, _ATTEMPT_KEY)
        st = _stat(pid)
        if run in wanted and tag is not None and st is not None and st[0] not in ("Z", "X"):
            out.append(TaggedProcess(pid, run.decode(), tag.decode(), st[1], st[2]))
    return out
