"""Processes seen through ``/proc`` (the Linux path; ``_posix_procs`` elsewhere): is
a recorded pid still the same process, and which process groups did a dead run
leave behind (the rules: ``_orphans``).

A pid alone does not identify a process: the kernel reuses pids. A pid plus
its start time (field 22 of ``/proc/<pid>/stat``, clock ticks since boot) does.
Where ``/proc`` is missing, liveness falls back to ``kill(pid, 0)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from fleetrun.executors import _orphans
from fleetrun.names import RUN_ID_ENV

_RUN_ID = RUN_ID_ENV.encode()


def _stat_fields(pid: int) -> list[str] | None:
    # os.open/os.read: this runs once per attempt on the journal's thread, and
    # the buffered file object costs more than the read itself.
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    except OSError:
        return None
    try:
        raw = os.read(fd, 4096).decode("utf-8", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)
    # The command name (field 2) may contain spaces and parentheses: split after
    # the last ')'. fields[0] is then field 3 (state).
    return raw[raw.rfind(")") + 2 :].split()


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None if it is gone."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    return int(fields[19])


def process_alive(pid: int, start_time: int | None) -> bool:
    """True when ``pid`` runs and, if ``start_time`` is known, is the same process."""
    fields = _stat_fields(pid)
    if fields is None:
        if os.path.isdir("/proc/self"):
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    if fields[0] in ("Z", "X"):
        return False
    return start_time is None or int(fields[19]) == start_time


def process_table() -> _orphans.Table:
    """Live (not zombie) processes by process group: ``pgid -> [(pid, start time)]``."""
    table: _orphans.Table = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return table
    for name in entries:
        if not name.isdigit():
            continue
        fields = _stat_fields(int(name))
        # fields[2] is the process group (field 5), fields[19] the start time.
        if fields is None or len(fields) < 20 or fields[0] in ("Z", "X"):
            continue
        table.setdefault(int(fields[2]), []).append((int(name), int(fields[19])))
    return table


def _run_env(pid: int) -> dict[str, str] | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    if _RUN_ID + b"=" not in raw:
        return None
    return {
        k.decode(errors="replace"): v.decode(errors="replace")
        for k, _, v in (e.partition(b"=") for e in raw.split(b"\0") if b"=" in e)
    }


class _ProcView:
    """The process table as ``/proc`` shows it (see ``_orphans.ProcessView``)."""

    __slots__ = ()

    start_time = staticmethod(process_start_time)
    table = staticmethod(process_table)
    run_env = staticmethod(_run_env)


VIEW = _ProcView()


def kill_groups(pgids: Iterable[int], grace: float) -> None:
    """End process groups the trio way: SIGTERM, wait up to ``grace``, SIGKILL,
    then wait until they are gone."""
    _orphans.kill_groups(VIEW, pgids, grace)


class LocalOrphanFinder(_orphans.OrphanFinderBase):
    """Finds and ends the process groups that dead runs left on this machine
    (``_orphans``), reading ``/proc``."""

    view = VIEW
