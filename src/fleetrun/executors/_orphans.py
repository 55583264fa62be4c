"""Finding and ending what dead runs left on this machine, on any POSIX system.

The rules live here once; how processes are read is a ``ProcessView`` given by
the platform (``_procfs``: ``/proc`` on Linux; ``_posix_procs``: psutil
elsewhere):

- a pid alone does not identify a process (the kernel reuses pids); a pid
  plus its start time (in clock ticks) does;
- a recorded process group counts only while its leader is the process
  recorded or, with the leader gone, while members that started after it
  remain;
- an attempt spawned just before its run died, before it reached the journal,
  is found by the ``FLEETRUN_RUN_ID`` in its processes' environment;
- so is every process that left its attempt's group (``setsid``, a double
  fork): it belongs to the attempt whose tag it carries, and is ended with
  that attempt's group, checked by its start time.

Nothing here imports anything specific to one operating system.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from fleetrun.executors._contract import Handle, Orphan, RecordedAttempt
from fleetrun.names import ATTEMPT_ENV, RUN_ID_ENV, TARGET_ENV, TASK_ENV

Table = dict[int, list[tuple[int, int]]]
"""Live (not zombie) processes by process group: ``pgid -> [(pid, start time)]``."""


class ProcessView(Protocol):
    """How one platform reads the process table."""

    def start_time(self, pid: int) -> int | None:
        """Start time of ``pid`` in clock ticks since boot, None when it is gone."""
        ...

    def table(self) -> Table:
        """Every live process by process group (a snapshot)."""
        ...

    def run_env(self, pid: int) -> Mapping[str, str] | None:
        """The environment of ``pid`` when it carries ``FLEETRUN_RUN_ID`` (None:
        it does not, or it cannot be read)."""
        ...


@dataclass(frozen=True, slots=True)
class Tagged:
    """A live process whose environment names the run that started it."""

    pid: int
    pgid: int
    run_id: str
    key: str  # task@target from FLEETRUN_TASK / FLEETRUN_TARGET
    attempt: int


@dataclass(frozen=True, slots=True)
class TaggedProcess:
    """A live process that carries a fleetrun attempt's tag."""

    pid: int
    run_id: str
    attempt_id: str
    pgid: int
    command: str


def processes_of_runs(view: ProcessView, run_ids: Iterable[str], table: Table) -> list[Tagged]:
    """Live processes whose ``FLEETRUN_RUN_ID`` is one of ``run_ids``.

    Every attempt's environment carries its run id, so this finds what a run
    started even when it died before journaling the attempt. Processes whose
    environment cannot be read (another user's) are passed over.
    """
    wanted = set(run_ids)
    found: list[Tagged] = []
    if not wanted:
        return found
    for pgid, members in table.items():
        for pid, _ in members:
            env = view.run_env(pid)
            if env is None or env.get(RUN_ID_ENV) not in wanted:
                continue
            task = env.get(TASK_ENV, "?")
            target = env.get(TARGET_ENV, "")
            attempt = env.get(ATTEMPT_ENV, "0")
            found.append(
                Tagged(
                    pid=pid,
                    pgid=pgid,
                    run_id=env[RUN_ID_ENV],
                    key=f"{task}@{target}" if target else task,
                    attempt=int(attempt) if attempt.isdigit() else 0,
                )
            )
    return found


def group_members(
    view: ProcessView, pgid: int, leader_start: int | None, table: Table | None = None
) -> tuple[int, ...]:
    """Live pids in process group ``pgid`` that belong to the recorded group.

    If a process with pid ``pgid`` exists but started at another time, the
    group id was reused by an unrelated process: nothing of ours is left.
    Members that started before the recorded leader cannot be ours either.
    ``table`` is a snapshot to reuse across many groups.
    """
    if leader_start is not None:
        now = view.start_time(pgid)
        if now is not None and now != leader_start:
            return ()
    members = (table if table is not None else view.table()).get(pgid, [])
    return tuple(
        sorted(pid for pid, start in members if leader_start is None or start >= leader_start)
    )


def kill_groups(view: ProcessView, pgids: Iterable[int], grace: float) -> None:
    """End process groups the trio way: SIGTERM, wait up to ``grace``, SIGKILL,
    then wait until they are gone."""
    groups = list(pgids)
    for g in groups:
        _killpg(g, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while groups and time.monotonic() < deadline:
        table = view.table()
        groups = [g for g in groups if group_members(view, g, None, table)]
        if groups:
            time.sleep(0.05)
    for g in groups:
        _killpg(g, signal.SIGKILL)
    # SIGKILL is delivered asynchronously: wait (bounded) until the groups are gone.
    deadline = time.monotonic() + 5.0
    while groups and time.monotonic() < deadline:
        table = view.table()
        groups = [g for g in groups if group_members(view, g, None, table)]
        if groups:
            time.sleep(0.02)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def kill_all(
    view: ProcessView,
    pgids: Iterable[int],
    procs: Mapping[int, int],
    run_ids: Iterable[str],
    grace: float,
) -> None:
    """End process groups and single processes (``pid -> start time``) the trio
    way: SIGTERM, up to ``grace``, SIGKILL, then wait (bounded) until they are gone.

    A process is signalled only while its start time is the one given: a pid
    reused meanwhile is never touched. Processes that carry one of ``run_ids``
    (started meanwhile, or found only now) are ended with them.
    """
    groups = list(pgids)
    alone = dict(procs)
    runs = list(run_ids)
    own = (os.getpid(), os.getpgrp())

    def look() -> None:
        table = view.table()
        now = {pid: start for members in table.values() for pid, start in members}
        groups[:] = [g for g in groups if group_members(view, g, None, table)]
        for p in [p for p, start in alone.items() if now.get(p) != start]:
            del alone[p]
        for t in processes_of_runs(view, runs, table):
            if t.pid not in own and t.pgid != own[1] and t.pid not in alone:
                alone[t.pid] = now[t.pid]
                _signal_same(view, t.pid, now[t.pid], sig)

    sig = signal.SIGTERM
    for g in groups:
        _killpg(g, sig)
    for pid, start in alone.items():
        _signal_same(view, pid, start, sig)
    for sig, limit, poll in ((signal.SIGTERM, grace, 0.05), (signal.SIGKILL, 5.0, 0.02)):
        deadline = time.monotonic() + limit
        look()
        if sig == signal.SIGKILL:
            for g in groups:
                _killpg(g, sig)
            for pid, start in alone.items():
                _signal_same(view, pid, start, sig)
        while (groups or alone) and time.monotonic() < deadline:
            time.sleep(poll)
            look()


def _signal_same(view: ProcessView, pid: int, start: int, sig: int) -> None:
    """Signal ``pid`` (and the group it leads, if it leads one) while it is the
    process that started at ``start``."""
    if view.start_time(pid) != start:
        return
    with contextlib.suppress(OSError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
    with contextlib.suppress(OSError):
        os.kill(pid, sig)


class OrphanFinderBase:
    """Finds and ends what dead runs left on this machine (the rules of the module
    docstring, on the platform's ``view``): each attempt's process group and
    every process that left it but still carries the attempt's tag."""

    kind = "local"
    view: ProcessView

    def __init__(self) -> None:
        self._starts: dict[int, int] = {}
        """Start times of the processes found outside their attempt's group."""

    def find_now(
        self, attempts: Sequence[RecordedAttempt], dead_runs: Sequence[str]
    ) -> list[Orphan]:
        """``find`` without the event loop (reads the process table)."""
        view = self.view
        rows = [a for a in attempts if a.handle.kind == "local" and a.handle.pgid is not None]
        runs = set(dead_runs) | {a.run_id for a in rows}
        table = view.table() if runs else {}
        starts = {pid: start for members in table.values() for pid, start in members}
        # Per attempt: its handle and its group's live members.
        groups: dict[tuple[str, str, int], tuple[Handle, tuple[int, ...]]] = {}
        for a in rows:
            pgid, start = a.handle.pgid, a.handle.start_time
            assert pgid is not None
            if start is None and view.start_time(pgid) is not None:
                # The leader had exited before its start time was read, and a
                # process with its pid exists now: the id was reused.
                pids: tuple[int, ...] = ()
            else:
                pids = group_members(view, pgid, start, table)
            groups[(a.run_id, a.key, a.attempt)] = (a.handle, pids)
        own = (os.getpid(), os.getpgrp())  # never this process, nor its group
        tagged: dict[tuple[str, str, int], list[Tagged]] = {}
        for t in processes_of_runs(view, runs, table):
            if t.pid not in own and t.pgid != own[1]:
                tagged.setdefault((t.run_id, t.key, t.attempt), []).append(t)
        host = socket.gethostname()
        for at, procs in tagged.items():
            if at not in groups:
                # Not journaled (the run died first): its group is that of its
                # first process.
                first = min(procs, key=lambda t: t.pid)
                members = tuple(sorted(p for p, _ in table.get(first.pgid, [])))
                groups[at] = (Handle("local", host, first.pid, first.pgid), members)
        found: list[Orphan] = []
        for (run_id, key, attempt), (handle, pids) in groups.items():
            outside = tuple(
                sorted(t.pid for t in tagged.get((run_id, key, attempt), []) if t.pid not in pids)
            )
            for pid in outside:
                self._starts[pid] = starts[pid]
            if pids or outside:
                found.append(Orphan(run_id, key, attempt, handle, pids, outside))
        return found

    async def find(
        self, attempts: Sequence[RecordedAttempt], dead_runs: Sequence[str]
    ) -> list[Orphan]:
        """Live process groups among ``attempts`` and tagged with ``dead_runs``, and
        the processes that left them."""
        return await asyncio.to_thread(self.find_now, attempts, dead_runs)

    async def end(self, orphans: Sequence[Orphan], grace: float) -> None:
        """SIGTERM each group and what left it, ``grace``, SIGKILL, wait until gone.

        What left a group is signalled only while it is the process found (the
        same start time), and whatever else carries the tag of one of their
        runs by then is ended with it.
        """
        pgids = [o.handle.pgid for o in orphans if o.handle.pgid is not None and o.pids]
        procs = {p: self._starts[p] for o in orphans for p in o.outside if p in self._starts}
        runs = {o.run_id for o in orphans}
        await asyncio.to_thread(kill_all, self.view, pgids, procs, runs, grace)
