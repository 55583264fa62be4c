"""Views of the record for ``history``, ``show`` and ``outputs``: text tables,
JSON-ready data, ``KEY=VALUE`` lines. Each function returns a string or plain
data; printing is the CLI's business.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shlex
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

STATE_ORDER = (
    "succeeded", "reused", "failed", "skipped", "cancelled", "interrupted", "not_started",
    "running", "pending",
)  # fmt: skip


def fmt_time(at: float | None) -> str:
    """Local wall-clock time, to the second."""
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def fmt_duration(start: float | None, end: float | None) -> str:
    """``1.25s``, ``42s``, ``3m 05s``, ``1h 02m``; ``-`` when unknown."""
    if start is None or end is None:
        return "-"
    s = max(0.0, end - start)
    if s < 10:
        return f"{s:.2f}s"
    if s < 60:
        return f"{s:.0f}s"
    m, sec = divmod(round(s), 60)
    if m < 60:
        return f"{m}m {sec:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m"


def fmt_counts(counts: Mapping[str, int]) -> str:
    """``12 succeeded, 2 failed`` in a fixed state order."""
    order = [s for s in STATE_ORDER if s in counts] + sorted(set(counts) - set(STATE_ORDER))
    return ", ".join(f"{counts[s]} {s}" for s in order if counts[s])


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A left-aligned text table; the last column is not padded."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    lines = []
    for row in [list(headers), *rows]:
        cells = [c.ljust(widths[i]) for i, c in enumerate(row[:-1])] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def run_summary(run: Mapping[str, Any]) -> dict[str, Any]:
    """A run as JSON-ready data (without the plan snapshot)."""
    keep = (
        "id", "parent_id", "kind", "status", "plan_path", "plan_name", "plan_hash", "mode",
        "options", "started_at", "ended_at", "counts", "user", "host", "pid",
    )  # fmt: skip
    return {k: run[k] for k in keep}


def history_text(runs: Sequence[Mapping[str, Any]]) -> str:
    """The ``history`` table, newest first."""
    rows = [
        [
            r["id"],
            r["parent_id"] or "-",
            r["kind"],
            r["status"],
            fmt_time(r["started_at"]),
            fmt_duration(
                r["started_at"],
                r["ended_at"] or (time.time() if r["status"] == "running" else None),
            ),
            fmt_counts(r["counts"]) or "-",
        ]
        for r in runs
    ]
    return table(["RUN", "PARENT", "KIND", "STATUS", "STARTED", "DURATION", "INSTANCES"], rows)


def show_text(
    run: Mapping[str, Any],
    instances: Sequence[Mapping[str, Any]],
    attempts: Sequence[Mapping[str, Any]],
) -> str:
    """The ``show`` view: the run's header, then one row per instance."""
    per_key: dict[str, list[Mapping[str, Any]]] = {}
    for a in attempts:
        per_key.setdefault(a["key"], []).append(a)
    head = [
        f"run      {run['id']}"
        + (f" ({run['kind']} of {run['parent_id']})" if run["parent_id"] else ""),
        f"plan     {run['plan_name']} ({run['plan_path']})",
        f"status   {run['status']}  started {fmt_time(run['started_at'])}"
        f"  took {fmt_duration(run['started_at'], run['ended_at'])}",
        f"by       {run['user']}@{run['host']} pid {run['pid']}, mode {run['mode']}",
        f"counts   {fmt_counts(run['counts']) or '-'}",
        "",
    ]
    rows = []
    for i in instances:
        tries = per_key.get(i["key"], [])
        exits = ",".join(_exit_text(a) for a in tries) or "-"
        rows.append(
            [
                i["key"],
                i["status"],
                str(len(tries)),
                fmt_duration(i["started_at"], i["ended_at"]) if tries else "-",
                exits,
                i["reason"] or "",
            ]
        )
    return (
        "\n".join(head)
        + "\n"
        + table(["INSTANCE", "STATE", "ATTEMPTS", "DURATION", "EXIT", "REASON"], rows)
    )


def _exit_text(a: Mapping[str, Any]) -> str:
    if a["timed_out"]:
        return "timeout"
    if a["signal"] is not None:
        return f"sig{a['signal']}"
    if a["exit_code"] is not None:
        return str(a["exit_code"])
    return a["outcome"] or "running"


def env_name(*parts: str) -> str:
    """An environment variable name from parts: upper-cased, non-word characters as ``_``."""
    name = "_".join(re.sub(r"\W", "_", p) for p in parts if p).upper()
    return name if not name[:1].isdigit() else "_" + name


def outputs_data(instances: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """``{instance key: {output: value}}`` for instances that published outputs."""
    return {i["key"]: dict(i["outputs"]) for i in instances if i["outputs"]}


def outputs_env(instances: Sequence[Mapping[str, Any]]) -> str:
    """``TASK_KEY=value`` lines (``TASK_TARGET_KEY`` for a fanned task), shell-quoted."""
    lines = []
    for i in instances:
        for k, v in i["outputs"].items():
            lines.append(f"{env_name(i['task'], i['target'] or '', k)}={shlex.quote(v)}")
    return "\n".join(lines) + ("\n" if lines else "")


def outputs_text(instances: Sequence[Mapping[str, Any]]) -> str:
    """The outputs table: instance, output key, value."""
    rows = [[i["key"], k, v] for i in instances for k, v in i["outputs"].items()]
    return table(["INSTANCE", "OUTPUT", "VALUE"], rows)


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
