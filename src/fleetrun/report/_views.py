"""Views of the record for ``history``, ``show`` and ``outputs``: text tables,
JSON-ready data, ``KEY=VALUE`` lines, from the journal's records. Each function
returns a string or plain data; printing is the CLI's business.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import shlex
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fleetrun.names import env_name
from fleetrun.report._text import format_counts, format_span, format_time, text_table
from fleetrun.state import AttemptRecord, InstanceRecord, RunRecord

_SUMMARY_FIELDS = (
    "id", "parent_id", "kind", "status", "plan_path", "plan_name", "plan_hash", "mode",
    "options", "started_at", "ended_at", "counts", "user", "host", "pid",
)  # fmt: skip


def run_summary(run: RunRecord) -> dict[str, Any]:
    """A run as JSON-ready data (without the plan snapshot)."""
    return {k: getattr(run, k) for k in _SUMMARY_FIELDS}


def history_text(runs: Sequence[RunRecord]) -> str:
    """The ``history`` table, newest first."""
    rows = [
        [
            r.id,
            r.parent_id or "-",
            r.kind,
            r.status,
            format_time(r.started_at),
            format_span(
                r.started_at,
                r.ended_at or (time.time() if r.status == "running" else None),
            ),
            format_counts(r.counts) or "-",
        ]
        for r in runs
    ]
    return text_table(["RUN", "PARENT", "KIND", "STATUS", "STARTED", "DURATION", "INSTANCES"], rows)


def show_data(
    run: RunRecord, instances: Sequence[InstanceRecord], attempts: Sequence[AttemptRecord]
) -> dict[str, Any]:
    """The ``show --format json`` data: the run's summary, then every instance
    (its journal columns) with its attempts under ``attempt_list``."""
    per_key: dict[str, list[dict[str, Any]]] = {}
    for a in attempts:
        per_key.setdefault(a.key, []).append(dataclasses.asdict(a))
    return {
        "run": run_summary(run),
        "instances": [
            {**dataclasses.asdict(i), "attempt_list": per_key.get(i.key, [])} for i in instances
        ],
    }


def show_text(
    run: RunRecord, instances: Sequence[InstanceRecord], attempts: Sequence[AttemptRecord]
) -> str:
    """The ``show`` view: the run's header, then one row per instance."""
    per_key: dict[str, list[AttemptRecord]] = {}
    for a in attempts:
        per_key.setdefault(a.key, []).append(a)
    head = [
        f"run      {run.id}" + (f" ({run.kind} of {run.parent_id})" if run.parent_id else ""),
        f"plan     {run.plan_name} ({run.plan_path})",
        f"status   {run.status}  started {format_time(run.started_at)}"
        f"  took {format_span(run.started_at, run.ended_at)}",
        f"by       {run.user}@{run.host} pid {run.pid}, mode {run.mode}",
        f"counts   {format_counts(run.counts) or '-'}",
        "",
    ]
    rows = []
    for i in instances:
        tries = per_key.get(i.key, [])
        exits = ",".join(_exit_text(a) for a in tries) or "-"
        rows.append(
            [
                i.key,
                i.status,
                str(len(tries)),
                format_span(i.started_at, i.ended_at) if tries else "-",
                exits,
                i.reason or "",
            ]
        )
    return (
        "\n".join(head)
        + "\n"
        + text_table(["INSTANCE", "STATE", "ATTEMPTS", "DURATION", "EXIT", "REASON"], rows)
    )


def _exit_text(a: AttemptRecord) -> str:
    if a.timed_out:
        return "timeout"
    if a.signal is not None:
        return f"sig{a.signal}"
    if a.exit_code is not None:
        return str(a.exit_code)
    return a.outcome or "running"


def outputs_data(instances: Sequence[InstanceRecord]) -> dict[str, dict[str, str]]:
    """``{instance key: {output: value}}`` for instances that published outputs."""
    return {i.key: dict(i.outputs) for i in instances if i.outputs}


def outputs_env(instances: Sequence[InstanceRecord]) -> str:
    """``TASK_KEY=value`` lines (``TASK_TARGET_KEY`` for a fanned task), shell-quoted.

    Names follow ``fleetrun.names.env_name``, the rule of the variables tasks
    receive."""
    lines = []
    for i in instances:
        for k, v in i.outputs.items():
            lines.append(f"{env_name(i.task, i.target or '', k)}={shlex.quote(v)}")
    return "\n".join(lines) + ("\n" if lines else "")


def outputs_text(instances: Sequence[InstanceRecord]) -> str:
    """The outputs table: instance, output key, value."""
    rows = [[i.key, k, v] for i in instances for k, v in i.outputs.items()]
    return text_table(["INSTANCE", "OUTPUT", "VALUE"], rows)


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically, under ``<path>.lock``.

    Readers see the old file or the new one, never a part; two writers never
    interleave (the flock serializes them).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        os.close(lock_fd)
