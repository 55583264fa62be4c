"""Processes seen through psutil: the portable counterpart of ``_procfs`` and of the
tag search of ``_reaper`` (any POSIX system psutil supports).

Start times are clock ticks, exact for one process whenever they are read:

- on Linux, since boot, as on the Linux path (psutil's creation time is the
  kernel's tick count plus the boot time it subtracts again), so a journal or
  a lock written by one path is read the same by the other;
- elsewhere, since the epoch: the kernel keeps a process's start as a wall
  clock time, while the boot time moves when the clock is set. Process groups come from
``os.getpgid``; environments from psutil's ``environ()`` where the system lets
this user read them (another user's processes, and on some systems every
process, are passed over).

psutil is imported on first use: importing fleetrun does not pay for it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from fleetrun.executors import _orphans
from fleetrun.executors._orphans import TaggedProcess
from fleetrun.names import ATTEMPT_ID, RUN_ID_ENV

TICKS = os.sysconf("SC_CLK_TCK") if "SC_CLK_TCK" in os.sysconf_names else 100
"""Clock ticks a second."""
_SINCE_BOOT = sys.platform.startswith("linux")
_PSUTIL: list[Any] = []


def _psutil() -> Any:
    """The psutil module (imported once, on first use)."""
    if not _PSUTIL:
        import psutil  # type: ignore[import-untyped]  # no type information shipped

        _PSUTIL.append(psutil)
    return _PSUTIL[0]


def _errors() -> tuple[type[BaseException], ...]:
    """What reading another process may raise: gone, not ours, or not supported here."""
    ps = _psutil()
    return (ps.Error, OSError, NotImplementedError)


def ticks(create_time: float, boot: float | None = None) -> int:
    """A psutil creation time as a start time (``boot``: the boot time, if read)."""
    if not _SINCE_BOOT:
        return round(create_time * TICKS)
    if boot is None:
        boot = _psutil().boot_time()
    return round((create_time - boot) * TICKS)


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks (see the module docstring), None if it is gone."""
    try:
        return ticks(_psutil().Process(pid).create_time())
    except _errors():
        return None


def process_alive(pid: int, start_time: int | None) -> bool:
    """True when ``pid`` runs and, if ``start_time`` is known, is the same process."""
    ps = _psutil()
    try:
        p = ps.Process(pid)
        if p.status() in (ps.STATUS_ZOMBIE, ps.STATUS_DEAD):
            return False
        return start_time is None or ticks(p.create_time()) == start_time
    except ps.NoSuchProcess:
        return False
    except (ps.Error, OSError):
        # Not ours to read (AccessDenied): it exists; the start time cannot be checked.
        return True


def _live() -> Iterator[tuple[int, int, int, str]]:
    """``(pid, pgid, start ticks, name)`` of every live (not zombie) process."""
    ps = _psutil()
    errors = _errors()
    dead = (ps.STATUS_ZOMBIE, ps.STATUS_DEAD)
    boot = ps.boot_time() if _SINCE_BOOT else 0.0
    for p in ps.process_iter(["create_time", "status", "name"]):
        info = p.info
        if info["status"] in dead or info["create_time"] is None:
            continue
        try:
            pgid = os.getpgid(p.pid)
        except errors:
            continue
        yield p.pid, pgid, ticks(info["create_time"], boot), info["name"] or "?"


def process_table() -> _orphans.Table:
    """Live (not zombie) processes by process group: ``pgid -> [(pid, start time)]``."""
    table: _orphans.Table = {}
    for pid, pgid, start, _ in _live():
        table.setdefault(pgid, []).append((pid, start))
    return table


def environ(pid: int) -> dict[str, str] | None:
    """The environment of ``pid``; None when it cannot be read."""
    try:
        env: dict[str, str] = _psutil().Process(pid).environ()
    except _errors():
        return None
    return env


def _run_env(pid: int) -> dict[str, str] | None:
    env = environ(pid)
    return env if env is not None and RUN_ID_ENV in env else None


class _PsutilView:
    """The process table as psutil shows it (see ``_orphans.ProcessView``)."""

    __slots__ = ()

    start_time = staticmethod(process_start_time)
    table = staticmethod(process_table)
    run_env = staticmethod(_run_env)


VIEW = _PsutilView()


def kill_groups(pgids: Iterable[int], grace: float) -> None:
    """End process groups the trio way: SIGTERM, wait up to ``grace``, SIGKILL,
    then wait until they are gone."""
    _orphans.kill_groups(VIEW, pgids, grace)


class LocalOrphanFinder(_orphans.OrphanFinderBase):
    """Finds and ends the process groups that dead runs left on this machine
    (``_orphans``), reading the process table through psutil."""

    view = VIEW


def group_members(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that still run (zombies left out): a full scan."""
    return [pid for pid, g, _, _ in _live() if g == pgid]


def describe(pid: int) -> str:
    """``1234 (sleep)``: a process as the log names it."""
    with contextlib.suppress(*_errors()):
        return f"{pid} ({_psutil().Process(pid).name()})"
    return str(pid)


def _newer(since: float) -> Iterator[Any]:
    """psutil's processes that started at ``since`` (seconds since the epoch) or later.

    A creation time is read once per process (psutil keeps it), so a scan costs
    little more than listing the pids and reading the new processes.
    """
    errors = _errors()
    for p in _psutil().process_iter():
        try:
            if p.create_time() >= since:
                yield p
        except errors:
            continue


def tagged_by_attempt(since: float) -> dict[str, list[int]]:
    """Live processes started at ``since`` (seconds since the epoch) or later that
    carry an attempt tag, by tag (one scan for every attempt that asks at once).

    A zombie's environment cannot be read: zombies are never found.
    """
    me = os.getpid()
    errors = _errors()
    out: dict[str, list[int]] = {}
    for p in _newer(since):
        if p.pid == me:
            continue
        try:
            tag = p.environ().get(ATTEMPT_ID)
        except errors:
            continue
        if tag is not None:
            out.setdefault(tag, []).append(p.pid)
    return out


def tagged_since(tag: str, since: float) -> list[int]:
    """Live processes started at ``since`` (seconds since the epoch) or later whose
    environment carries ``FLEETRUN_ATTEMPT_ID=tag``."""
    return tagged_by_attempt(since).get(tag, [])


def tagged_processes(run_ids: Iterable[str]) -> list[TaggedProcess]:
    """Live processes whose ``FLEETRUN_RUN_ID`` is one of ``run_ids`` and that carry an
    attempt tag (a full scan; unreadable environments are passed over).

    For ``--kill-orphans``: the processes of a dead run, wherever they went.
    """
    wanted = set(run_ids)
    me = os.getpid()
    out = []
    for pid, pgid, _, name in _live():
        if pid == me:
            continue
        env = environ(pid)
        if env is None:
            continue
        run, tag = env.get(RUN_ID_ENV), env.get(ATTEMPT_ID)
        if run in wanted and tag is not None:
            out.append(TaggedProcess(pid, run, tag, pgid, name))
    return out
