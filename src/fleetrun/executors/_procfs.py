"""Processes seen through ``/proc``: is a recorded pid still the same process, and
which process groups did a dead run leave behind.

A pid alone does not identify a process: the kernel reuses pids. A pid plus
its start time (field 22 of ``/proc/<pid>/stat``, clock ticks since boot) does.
Where ``/proc`` is missing, liveness falls back to ``kill(pid, 0)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fleetrun.executors._contract import Handle, Orphan, RecordedAttempt
from fleetrun.names import ATTEMPT_ENV, RUN_ID_ENV, TARGET_ENV, TASK_ENV

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


def process_table() -> dict[int, list[tuple[int, int]]]:
    """Live (not zombie) processes by process group: ``pgid -> [(pid, start time)]``."""
    table: dict[int, list[tuple[int, int]]] = {}
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


@dataclass(frozen=True, slots=True)
class Tagged:
    """A live process whose environment names the run that started it."""

    pid: int
    pgid: int
    run_id: str
    key: str  # task@target from FLEETRUN_TASK / FLEETRUN_TARGET
    attempt: int


def processes_of_runs(
    run_ids: Iterable[str], table: dict[int, list[tuple[int, int]]]
) -> list[Tagged]:
    """Live processes whose ``FLEETRUN_RUN_ID`` is one of ``run_ids``.

    Every attempt's environment carries its run id, so this finds what a run
    started even when it died before journaling the attempt. Processes whose
    environment cannot be read (another user's) are passed over.
    """
    wanted = {r.encode() for r in run_ids}
    found: list[Tagged] = []
    if not wanted:
        return found
    for pgid, members in table.items():
        for pid, _ in members:
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    raw = f.read()
            except OSError:
                continue
            if _RUN_ID + b"=" not in raw:
                continue
            env = dict(v.partition(b"=")[::2] for v in raw.split(b"\0") if b"=" in v)
            run = env.get(_RUN_ID)
            if run not in wanted:
                continue
            task = env.get(TASK_ENV.encode(), b"?").decode(errors="replace")
            target = env.get(TARGET_ENV.encode(), b"").decode(errors="replace")
            attempt = env.get(ATTEMPT_ENV.encode(), b"0")
            found.append(
                Tagged(
                    pid=pid,
                    pgid=pgid,
                    run_id=run.decode(),
                    key=f"{task}@{target}" if target else task,
                    attempt=int(attempt) if attempt.isdigit() else 0,
                )
            )
    return found


def group_members(
    pgid: int, leader_start: int | None, table: dict[int, list[tuple[int, int]]] | None = None
) -> tuple[int, ...]:
    """Live pids in process group ``pgid`` that belong to the recorded group.

    If a process with pid ``pgid`` exists but started at another time, the
    group id was reused by an unrelated process: nothing of ours is left.
    Members that started before the recorded leader cannot be ours either.
    ``table`` is a ``process_table()`` snapshot to reuse across many groups.
    """
    leader = _stat_fields(pgid)
    if leader is not None and leader_start is not None and int(leader[19]) != leader_start:
        return ()
    members = (table if table is not None else process_table()).get(pgid, [])
    return tuple(
        sorted(pid for pid, start in members if leader_start is None or start >= leader_start)
    )


def kill_groups(pgids: Iterable[int], grace: float) -> None:
    """End process groups the trio way: SIGTERM, wait up to ``grace``, SIGKILL,
    then wait until they are gone."""
    groups = list(pgids)
    for g in groups:
        _killpg(g, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while groups and time.monotonic() < deadline:
        table = process_table()
        groups = [g for g in groups if group_members(g, None, table)]
        if groups:
            time.sleep(0.05)
    for g in groups:
        _killpg(g, signal.SIGKILL)
    # SIGKILL is delivered asynchronously: wait (bounded) until the groups are gone.
    deadline = time.monotonic() + 5.0
    while groups and time.monotonic() < deadline:
        table = process_table()
        groups = [g for g in groups if group_members(g, None, table)]
        if groups:
            time.sleep(0.02)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class LocalOrphanFinder:
    """Finds and ends the process groups that dead runs left on this machine.

    A recorded group counts only while its leader is the process recorded
    (pid plus start time) or, with the leader gone, while members that started
    after it remain. An attempt spawned just before its run died, before it
    reached the journal, is found by the ``FLEETRUN_RUN_ID`` in its processes'
    environment.
    """

    kind = "local"

    def find_now(
        self, attempts: Sequence[RecordedAttempt], dead_runs: Sequence[str]
    ) -> list[Orphan]:
        """``find`` without the event loop (reads ``/proc``)."""
        found: list[Orphan] = []
        rows = [a for a in attempts if a.handle.kind == "local" and a.handle.pgid is not None]
        table = process_table() if rows or dead_runs else {}
        for a in rows:
            pgid, start = a.handle.pgid, a.handle.start_time
            assert pgid is not None
            if start is None and process_start_time(pgid) is not None:
                # The leader had exited before its start time was read, and a
                # process with its pid exists now: the id was reused.
                continue
            pids = group_members(pgid, start, table)
            if pids:
                found.append(Orphan(a.run_id, a.key, a.attempt, a.handle, pids))
        known = {o.handle.pgid for o in found}
        known.add(os.getpgrp())  # never this process's own group
        extra: dict[int, list[Tagged]] = {}
        for t in processes_of_runs(dead_runs, table):
            if t.pgid not in known:
                extra.setdefault(t.pgid, []).append(t)
        host = socket.gethostname()
        for pgid, tagged in sorted(extra.items()):
            first = min(tagged, key=lambda t: t.pid)
            pids = tuple(sorted(p for p, _ in table.get(pgid, [])))
            handle = Handle("local", host, first.pid, pgid)
            found.append(Orphan(first.run_id, first.key, first.attempt, handle, pids))
        return found

    async def find(
        self, attempts: Sequence[RecordedAttempt], dead_runs: Sequence[str]
    ) -> list[Orphan]:
        """Live process groups among ``attempts`` and tagged with ``dead_runs``."""
        return await asyncio.to_thread(self.find_now, attempts, dead_runs)

    async def end(self, orphans: Sequence[Orphan], grace: float) -> None:
        """SIGTERM each group, ``grace`` seconds, SIGKILL, wait until gone."""
        pgids = [o.handle.pgid for o in orphans if o.handle.pgid is not None]
        await asyncio.to_thread(kill_groups, pgids, grace)
