"""The run page as JSON-ready data: the grid, waves, pools, outputs, the next
command, and the timeline (measured by the HTML report's own ``build_report``).

Blocking (SQLite, files, plan loading): called on worker threads. Text passes
the run's redactor; names stay data for the page to insert as text.

Both are read lean, so that the first look at a run of 50,000 attempts stays
well under a second: the plan is loaded, never expanded (``Plans``); rows come
as ``sqlite3``'s own tuples; what is only counted is counted by SQLite; a run
too large to measure on each look gets its latest bars alone.
"""

from __future__ import annotations

import json
import shlex
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fleetrun.report import build_report
from fleetrun.state import RunRecord, process_alive
from fleetrun.ui._plans import Plans, RunPlan
from fleetrun.ui._runs import first_failure, plan_label
from fleetrun.ui._store import LiveReader, Store

TIMELINE_BARS = 4000
"""Most attempts the timeline draws (the latest ones when a run has more)."""

MEASURED_UP_TO = 5000
"""Runs of up to this many attempts get the report's measurements on their
timeline (critical path, queued time by reason); larger ones the bars alone,
so that their page stays quick."""


def is_live(run: RunRecord) -> bool:
    """Whether ``run`` is still running here (its process is this host's and alive)."""
    return (
        run.ended_at is None
        and run.host == socket.gethostname()
        and process_alive(run.pid, run.pid_start)
    )


def run_data(store: Store, run: RunRecord, plans: Plans) -> dict[str, Any]:
    """Everything the run page shows but the timeline."""
    reader = store.reader()
    plan = plans.of(run)
    redact = plan.redactor.redact
    instances = _instances(reader, run)
    tally = _tally(reader, run)
    kind, plan_path = plan_label(run)
    live = is_live(run)
    seq = reader.conn.execute("SELECT max(seq) FROM events WHERE run_id=?", (run.id,)).fetchone()
    waves = _waves(reader, run, plan, live)
    children = [
        r[0]
        for r in reader.conn.execute(
            "SELECT id FROM runs WHERE parent_id=? ORDER BY started_at", (run.id,)
        )
    ]
    return {
        "run": {
            "id": run.id,
            "parent_id": run.parent_id,
            "retried_by": children,
            "plan_name": run.plan_name,
            "plan_path": plan_path,
            "plan_key": run.plan_path,
            "kind": kind,
            "status": run.status,
            "mode": run.mode,
            "parallelism": run.options.get("parallelism"),
            "started_at": run.started_at,
            "ended_at": run.ended_at,
            "counts": dict(run.counts),
            "user": run.user,
            "host": run.host,
            "pid": run.pid,
            "live": live,
            "state_dir": str(store.state_dir),
        },
        "grid": _grid(instances, redact),
        "waves": waves,
        "pools": _pools(reader, run, plan),
        "outputs": [
            {"key": i[0], "outputs": {redact(k): redact(v) for k, v in _outputs(i[7]).items()}}
            for i in instances
            if i[7] and i[7] != "{}"
        ],
        "next": _next(store, reader, run, plans, live, waves["waiting"]),
        "notes": list(plan.notes),
        "first_failed": tally.first_failed,
        "running": tally.running,
        "attempts": tally.total,
        "seq": seq[0] if seq else None,
        "now": time.time(),
    }


_Row = tuple[str, str, str | None, str, int, int | None, str, str | Mapping[str, str]]
"""An instance as the page reads it: key, task, target, status, attempts,
exit code, reason, outputs (their JSON text as the journal holds it, or the
mapping itself)."""


def _instances(reader: LiveReader, run: RunRecord) -> list[_Row]:
    """The run's instances in node order: the reader's records for a run whose
    process died (as recovery will record them), else the rows as they are
    (tuples made by ``sqlite3`` itself: the quickest way to 50,000 of them)."""
    if run.computed:
        return [
            (i.key, i.task, i.target, i.status, i.attempts, i.exit_code, i.reason, i.outputs)
            for i in reader.instances(run.id)
        ]
    rows: list[_Row] = reader.conn.execute(
        "SELECT key, task, target, status, attempts, exit_code, reason, outputs"
        " FROM instances WHERE run_id=? ORDER BY node",
        (run.id,),
    ).fetchall()
    return rows


def _outputs(out: str | Mapping[str, str]) -> Mapping[str, str]:
    """An instance's outputs, read from their JSON text when need be."""
    if isinstance(out, str):
        parsed: dict[str, str] = json.loads(out)
        return parsed
    return out


@dataclass(frozen=True, slots=True)
class _Tally:
    """The run's attempts, counted: all, those still running, the first failed
    (in start order) as ``{"key", "n"}``."""

    total: int
    running: int
    first_failed: dict[str, Any] | None


def _tally(reader: LiveReader, run: RunRecord) -> _Tally:
    """``_Tally`` of the run's attempts: from the reader's records for a run whose
    process died, else counted by SQLite (no row of 50,000 reaches Python)."""
    if run.computed:
        attempts = reader.attempts(run.id)
        failed = next((a for a in attempts if a.outcome == "failed"), None)
        return _Tally(
            len(attempts),
            sum(a.outcome is None for a in attempts),
            None if failed is None else {"key": failed.key, "n": failed.n},
        )
    total, running = reader.conn.execute(
        "SELECT count(*), count(*) - count(outcome) FROM attempts WHERE run_id=?", (run.id,)
    ).fetchone()
    row = reader.conn.execute(
        "SELECT key, n FROM attempts WHERE run_id=? AND outcome='failed'"
        " ORDER BY started_at, key, n LIMIT 1",
        (run.id,),
    ).fetchone()
    return _Tally(total, running, None if row is None else {"key": row[0], "n": row[1]})


def _grid(instances: Sequence[_Row], redact: Any) -> dict[str, Any]:
    """Tasks (columns, plan order) by targets (rows, fleet order; unfanned
    instances in a last row of their own): one cell per instance."""
    tasks: dict[str, int] = {}
    targets: dict[str | None, int] = {}
    for i in instances:
        tasks.setdefault(i[1], len(tasks))
        if i[2] is not None:
            targets.setdefault(i[2], len(targets))
    if any(i[2] is None for i in instances):
        targets[None] = len(targets)
    cells = [
        [tasks[task], targets[target], key, status, attempts, exit_code,
         redact(reason) if reason else ""]
        for key, task, target, status, attempts, exit_code, reason, _ in instances
    ]  # fmt: skip
    return {"tasks": list(tasks), "targets": list(targets), "cells": cells}


def _waves(reader: LiveReader, run: RunRecord, plan: RunPlan, live: bool) -> dict[str, Any]:
    """The rollout's waves as the engine announced them (``WaveChanged``), each
    in its latest state, and whether one waits for a promotion."""
    rollout = plan.plan.rollout if plan.plan is not None else None
    # Only a rollout's gate announces waves: the run of a plan without one has
    # none to look for (and looking reads every event of the run).
    look = rollout is not None or plan.plan is None
    announced = reader.event_data(run.id, "WaveChanged") if look else []
    latest: dict[int, dict[str, Any]] = {}
    total = 0
    for ev in announced:
        total = max(total, int(ev.get("waves", 0)))
        latest[int(ev["wave"])] = {
            "wave": int(ev["wave"]),
            "state": ev.get("state"),
            "targets": list(ev.get("targets", ())),
            "reason": ev.get("reason", ""),
            "at": ev.get("at"),
        }
    waiting = live and any(w["state"] == "waiting" for w in latest.values())
    return {
        "total": total,
        "list": [latest[k] for k in sorted(latest)],
        "pause": bool(rollout is not None and rollout.pause),
        "rollout": rollout is not None,
        "waiting": waiting,
    }


def _pool_attempts(reader: LiveReader, run: RunRecord) -> list[tuple[Any, ...]]:
    """The run's attempts in start order, each as ``(task, started_at, ended_at,
    outcome, throttled)``."""
    if run.computed:
        task_of = {i.key: i.task for i in reader.instances(run.id)}
        return [
            (task_of.get(a.key, ""), a.started_at, a.ended_at, a.outcome, a.throttled)
            for a in reader.attempts(run.id)
        ]
    return reader.conn.execute(
        "SELECT i.task, a.started_at, a.ended_at, a.outcome, a.throttled FROM attempts a"
        " JOIN instances i ON i.run_id = a.run_id AND i.key = a.key"
        " WHERE a.run_id=? ORDER BY a.started_at, a.key, a.n",
        (run.id,),
    ).fetchall()


def _pools(reader: LiveReader, run: RunRecord, plan: RunPlan) -> list[dict[str, Any]]:
    """Each pool of the plan: its configured limits, its effective rate and
    concurrency over time (``PoolChanged``), its throttles and pauses, and
    what is in flight now."""
    if plan.plan is None or not plan.plan.pools:
        return []
    pools = plan.plan.pools
    attempts = _pool_attempts(reader, run)
    series: dict[str, list[list[Any]]] = {name: [] for name in pools}
    for ev in reader.event_data(run.id, "PoolChanged"):
        name = ev.get("pool")
        if name in series:
            series[name].append(
                [ev.get("at"), ev.get("rate"), ev.get("concurrency"), ev.get("paused", 0.0),
                 plan.redactor.redact(str(ev.get("reason", "")))]
            )  # fmt: skip
    out = []
    for name, pool in pools.items():
        mine = [a for a in attempts if name in plan.pools_of(a[0])]
        out.append(
            {
                "name": name,
                "concurrency": pool.concurrency,
                "rate": pool.rate,
                "adaptive": pool.adaptive is not None,
                "series": series[name],
                "starts": [a[1] for a in mine],
                "throttles": [a[2] for a in mine if a[4] and a[2] is not None],
                "in_flight": sum(a[3] is None for a in mine),
                "attempts": len(mine),
            }
        )
    return out


def _next(
    store: Store, reader: LiveReader, run: RunRecord, plans: Plans, live: bool, waiting: bool
) -> list[dict[str, str]]:
    """The commands to type next, each with what it does."""
    where = f"{shlex.quote(run.id)} --state-dir {shlex.quote(str(store.state_dir))}"
    if live:
        out = [{"cmd": f"fleetrun cancel {where}", "why": "stops it as Ctrl-C would"}]
        if waiting:
            out.append({"cmd": f"fleetrun promote {where}", "why": "opens the next wave"})
        return out
    if run.ended_at is None and run.status == "running":
        return [{"cmd": f"fleetrun show {where}", "why": "it runs on another host"}]
    not_ok = sum(n for s, n in run.counts.items() if s not in ("succeeded", "reused"))
    if not not_ok:
        return [
            {
                "cmd": f"fleetrun report {where} --format html -o report.html",
                "why": "the report with its timeline",
            }
        ]
    out = [{"cmd": f"fleetrun retry {where}", "why": f"re-runs the {not_ok} that did not succeed"}]
    failure = first_failure(reader, run, plans)
    if failure is not None:
        out.append(
            {
                "cmd": f"fleetrun logs {shlex.quote(failure['key'])} --run {where}",
                "why": "the first failure's log",
            }
        )
    return out


def _bar(a: Any, redact: Any) -> list[Any]:
    """One attempt as the page's timeline reads it (a positional row: compact)."""
    return [
        a.key, a.task, a.target, a.n, a.started_at, a.ended_at, a.outcome, a.ready_at,
        redact(a.queued_reason or ""), a.throttled, redact(a.retry_reason or ""), a.exit_code,
    ]  # fmt: skip


def timeline_data(store: Store, run: RunRecord, plans: Plans) -> dict[str, Any]:
    """The timeline: one bar per attempt (the latest ``TIMELINE_BARS``) with its
    queued time and reason, retries and outcome, and the measured critical path,
    as the HTML report measures them."""
    reader = store.reader()
    redact = plans.of(run).redactor.redact
    total = reader.conn.execute(
        "SELECT count(*) FROM attempts WHERE run_id=?", (run.id,)
    ).fetchone()[0]
    if total > MEASURED_UP_TO and not run.computed:
        return _bars_only(reader, run, total, redact)
    report = build_report(reader, run.id)
    attempts = report.attempts
    shown = attempts[-TIMELINE_BARS:]
    tasks = list(dict.fromkeys(i.task for i in report.instances))
    critical = [s.key for s in report.critical_path]
    now = time.time()
    t1 = max(
        [report.started_at, *(a.ended_at or now for a in shown)]
        + ([report.ended_at] if report.ended_at is not None else [])
    )
    t0 = min([report.started_at, *(a.ready_at or a.started_at for a in shown)])
    return {
        "t0": t0,
        "t1": t1,
        "tasks": tasks,
        "total": len(attempts),
        "shown": len(shown),
        "bars": [_bar(a, redact) for a in shown],
        "critical": critical,
        "critical_path": [
            {"key": s.key, "started_at": s.started_at, "duration": s.duration, "waited": s.waited}
            for s in report.critical_path
        ],
        "queued": report.overall.queued,
        "queued_reasons": dict(report.overall.queued_reasons),
        "wall": report.overall.wall,
        "task_time": report.overall.task_time,
        "speedup": report.overall.speedup,
        "held_back": report.overall.held_back,
        "notes": [redact(n) for n in report.notes],
    }


def _bars_only(reader: LiveReader, run: RunRecord, total: int, redact: Any) -> dict[str, Any]:
    """The timeline of a run too large to measure on each look: its latest
    ``TIMELINE_BARS`` attempts, without the critical path."""
    # The latest are chosen on narrow rows first: sorting all the attempts with
    # every column (and their instances joined) costs twice as much.
    rows = reader.conn.execute(
        "WITH last AS (SELECT key, n, started_at FROM attempts WHERE run_id=:run"
        " ORDER BY started_at DESC LIMIT :bars)"
        " SELECT a.key, i.task, i.target, a.n, a.started_at, a.ended_at,"
        " a.outcome, a.ready_at, a.queued_reason, a.throttled, a.retry_reason, a.exit_code"
        " FROM last JOIN attempts a ON a.run_id = :run AND a.key = last.key AND a.n = last.n"
        " JOIN instances i ON i.run_id = :run AND i.key = last.key ORDER BY last.started_at",
        {"run": run.id, "bars": TIMELINE_BARS},
    ).fetchall()
    bars = [[*r[:8], redact(r[8] or ""), bool(r[9]), redact(r[10] or ""), r[11]] for r in rows]
    tasks = [t for (t,) in reader.conn.execute(
        "SELECT task FROM instances WHERE run_id=? GROUP BY task ORDER BY min(node)", (run.id,)
    )]  # fmt: skip
    now = time.time()
    t0 = min([run.started_at, *(b[7] or b[4] for b in bars)])
    t1 = max([run.started_at, *(b[5] or now for b in bars), run.ended_at or 0.0])
    return {
        "t0": t0, "t1": t1, "tasks": tasks, "total": total, "shown": len(bars), "bars": bars,
        "critical": [], "critical_path": [], "queued": sum(
            max(0.0, b[4] - b[7]) for b in bars if b[7] is not None
        ),
        "queued_reasons": {}, "wall": (run.ended_at or now) - run.started_at,
        "task_time": sum(max(0.0, (b[5] or now) - b[4]) for b in bars), "speedup": 0.0,
        "held_back": "",
        "notes": [
            f"{total:,} attempts: the timeline draws the latest {len(bars):,}, without the "
            f"critical path (measured up to {MEASURED_UP_TO:,}; `fleetrun report` measures all)"
        ],
    }  # fmt: skip
