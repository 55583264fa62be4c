"""The runs page and the trends page, as JSON-ready data.

Every function here is blocking (SQLite, files) and runs on a worker thread.
Names, reasons and log lines are returned as data, never as markup: the page
puts them into the document as text.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from fleetrun.errors import StateError
from fleetrun.report import first_error_line
from fleetrun.session import EXEC_SUFFIX
from fleetrun.state import RunRecord
from fleetrun.ui._plans import Plans
from fleetrun.ui._store import LiveReader, Store, Stores

RUNS_SHOWN = 500
"""Most runs the runs page lists (newest first)."""

TREND_RUNS = 30
"""How many of a plan's latest runs the trends page covers."""

TAIL_BYTES = 8192
"""Bytes read from the end of a log for its first error line."""

STATUSES = ("running", "succeeded", "failed", "interrupted")


def plan_label(run: RunRecord) -> tuple[str, str]:
    """``(kind, plan path)`` as the pages show them: ``exec`` runs are recorded
    under their fleet file's path with ``EXEC_SUFFIX``."""
    if run.plan_path.endswith(EXEC_SUFFIX):
        return "exec", run.plan_path[: -len(EXEC_SUFFIX)]
    return run.kind, run.plan_path


def log_tail(path: str, limit: int = TAIL_BYTES) -> list[str]:
    """The last lines of the log file ``path`` (none when it is gone); never
    follows a symbolic link."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        size = os.fstat(fd).st_size
        os.lseek(fd, max(0, size - limit), os.SEEK_SET)
        data = os.read(fd, limit)
    except OSError:
        return []
    finally:
        os.close(fd)
    return data.decode("utf-8", errors="replace").splitlines()[-40:]


def first_failure(reader: LiveReader, run: RunRecord, plans: Plans) -> dict[str, Any] | None:
    """The run's first failed instance: its key, reason and its last attempt's
    first error line (redacted), or None."""
    row = reader.conn.execute(
        "SELECT key, reason FROM instances WHERE run_id=? AND status='failed'"
        " ORDER BY ended_at, node LIMIT 1",
        (run.id,),
    ).fetchone()
    if row is None:
        return None
    key, reason = row
    a = reader.conn.execute(
        "SELECT n, log_path FROM attempts WHERE run_id=? AND key=? ORDER BY n DESC LIMIT 1",
        (run.id, key),
    ).fetchone()
    line = first_error_line(log_tail(a[1])) if a is not None else ""
    redact = plans.of(run).redactor.redact
    return {
        "key": key,
        "n": a[0] if a is not None else None,
        "reason": redact(reason or ""),
        "line": redact(line),
    }


def run_row(store: Store, reader: LiveReader, run: RunRecord, plans: Plans) -> dict[str, Any]:
    """One row of the runs page."""
    kind, plan_path = plan_label(run)
    end = run.ended_at if run.ended_at is not None else time.time()
    failed = None
    if run.counts.get("failed"):
        # An ended run's first failure never changes: computed once.
        if run.ended_at is not None:
            failed = store.cached(
                ("failure", run.id, run.ended_at), lambda: first_failure(reader, run, plans)
            )
        else:
            failed = first_failure(reader, run, plans)
    return {
        "id": run.id,
        "parent_id": run.parent_id,
        "plan_name": run.plan_name,
        "plan_path": plan_path,
        "plan_key": run.plan_path,
        "kind": kind,
        "status": run.status,
        "counts": dict(run.counts),
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "duration": max(0.0, end - run.started_at),
        "failed": failed,
        "store": store.index,
    }


def runs_data(
    stores: Stores, plans: Plans, plan: str | None, status: str | None, limit: int = RUNS_SHOWN
) -> dict[str, Any]:
    """The runs page: runs newest first (of ``plan`` and with ``status`` when
    given), the plans on record, and what keeps a state directory from showing."""
    rows: list[dict[str, Any]] = []
    known_plans: dict[str, dict[str, str]] = {}
    problems: list[str] = []
    children: dict[str, list[str]] = {}
    for store in stores.all:
        try:
            reader = store.reader()
        except StateError as e:
            problems.append(str(e))
            continue
        for path, name in reader.conn.execute(
            "SELECT plan_path, plan_name FROM runs GROUP BY plan_path ORDER BY max(started_at) DESC"
        ):
            known_plans.setdefault(
                path, {"key": path, "name": name, "path": path.removesuffix(EXEC_SUFFIX)}
            )
        for child, parent in reader.conn.execute(
            "SELECT id, parent_id FROM runs WHERE parent_id IS NOT NULL ORDER BY started_at"
        ):
            children.setdefault(parent, []).append(child)
        for run in reader.runs(plan, limit=None if status else limit):
            if status and run.status != status:
                continue
            rows.append(run_row(store, reader, run, plans))
            if len(rows) >= limit * len(stores.all):
                break
    rows.sort(key=lambda r: (r["started_at"], r["id"]), reverse=True)
    rows = rows[:limit]
    for r in rows:
        r["retried_by"] = children.get(r["id"], [])
    return {
        "runs": rows,
        "plans": list(known_plans.values()),
        "statuses": list(STATUSES),
        "state_dirs": [str(s.state_dir) for s in stores.all],
        "problems": problems,
        "limit": limit,
    }


def trends_data(stores: Stores, plan: str, task: str | None) -> dict[str, Any]:
    """A task's duration across the plan's latest runs (oldest first): per run,
    the instances that ran, their median, mean and longest time (the sum of
    their attempts' durations), and how many failed; ``tasks`` lists the tasks
    on record for the plan."""
    points: list[dict[str, Any]] = []
    tasks: list[str] = []
    name = ""
    for store in stores.all:
        try:
            reader = store.reader()
        except StateError:
            continue
        runs = reader.runs(plan, limit=TREND_RUNS)
        if not runs:
            continue
        name = name or runs[0].plan_name
        ids = [r.id for r in runs]
        marks = ",".join("?" * len(ids))
        tasks += [
            t
            for (t,) in reader.conn.execute(
                f"SELECT DISTINCT task FROM instances WHERE run_id IN ({marks}) ORDER BY task", ids
            )
            if t not in tasks
        ]
        if task is None:
            continue
        per_run = _task_times(reader, ids, task)
        for r in runs:
            times, failed = per_run.get(r.id, ([], 0))
            if not times and not failed:
                continue
            points.append(
                {
                    "run": r.id,
                    "started_at": r.started_at,
                    "status": r.status,
                    "instances": len(times),
                    "median": _median(times),
                    "mean": sum(times) / len(times) if times else None,
                    "max": max(times) if times else None,
                    "failed": failed,
                }
            )
    points.sort(key=lambda p: p["started_at"])
    return {"plan": plan, "plan_name": name, "task": task, "tasks": tasks, "points": points}


def _task_times(
    reader: LiveReader, run_ids: Sequence[str], task: str
) -> dict[str, tuple[list[float], int]]:
    """Per run: the task's instances' times (attempt durations summed, for the
    instances whose attempts all ended) and how many of them failed."""
    marks = ",".join("?" * len(run_ids))
    out: dict[str, tuple[list[float], int]] = {}
    rows = reader.conn.execute(
        "SELECT i.run_id, i.status, sum(a.ended_at - a.started_at), count(a.n),"
        " count(a.ended_at)"
        " FROM instances i JOIN attempts a ON a.run_id = i.run_id AND a.key = i.key"
        f" WHERE i.task = ? AND i.run_id IN ({marks}) GROUP BY i.run_id, i.key",
        [task, *run_ids],
    )
    for run_id, status, total, n, ended in rows:
        times, failed = out.get(run_id, ([], 0))
        if n == ended and total is not None:
            times.append(max(0.0, float(total)))
        out[run_id] = (times, failed + (status == "failed"))
    return out


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
