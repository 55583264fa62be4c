"""Views of the record for ``history``, ``show`` and ``outputs``: text tables,
JSON-ready data, ``KEY=VALUE`` lines, from the journal's records. Each function
returns a string or plain data; printing is the CLI's business.
"""

from __future__ import annotations

import dataclasses
import shlex
import time
from collections.abc import Sequence
from pathlib import PurePath
from typing import Any

from fleetrun.errors import UsageError
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
    """The ``history`` table, newest first: each run's id, the run it continues
    (a retry's: what it retried), what it was (``RunRecord.label``: apply, retry,
    resume, exec), its status, plan file (with its folder where two listed
    files share a name) and variables (``RunRecord.variables``: secret ones
    masked), then when, how long and its instance counts."""
    names = _plan_names({r.plan_file for r in runs})
    rows = [
        [
            r.id,
            r.parent_id or "-",
            r.label,
            r.status,
            names[r.plan_file],
            " ".join(f"{k}={v}" for k, v in sorted(r.variables.items())) or "-",
            format_time(r.started_at),
            format_span(
                r.started_at,
                r.ended_at or (time.time() if r.status == "running" else None),
            ),
            format_counts(r.counts) or "-",
        ]
        for r in runs
    ]
    return text_table(
        ["RUN", "PARENT", "KIND", "STATUS", "PLAN", "VARS", "STARTED", "DURATION", "INSTANCES"],
        rows,
    )


def _plan_names(paths: set[str]) -> dict[str, str]:
    """Each plan file's name as ``history`` shows it: the file name, with its
    folder's name where two of ``paths`` share a file name."""
    names = {p: PurePath(p).name for p in paths}
    shared = {n for n in names.values() if list(names.values()).count(n) > 1}
    return {p: str(PurePath(p).parent.name / PurePath(n)) if n in shared else n
            for p, n in names.items()}  # fmt: skip


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
    now = time.time()
    for i in instances:
        tries = per_key.get(i.key, [])
        exits = exits_text([_exit_text(a) for a in tries])
        # A running instance: how long it has run so far ("12s+").
        running = i.status == "running" and i.ended_at is None
        took = format_span(i.started_at, now if running else i.ended_at) + ("+" if running else "")
        rows.append(
            [
                i.key,
                i.status,
                str(len(tries)),
                took if tries else "-",
                exits,
                i.reason or "",
            ]
        )
    return (
        "\n".join(head)
        + "\n"
        + text_table(["INSTANCE", "STATE", "ATTEMPTS", "DURATION", "EXIT", "REASON"], rows)
    )


EXITS_SHOWN = 4
"""Runs of equal exit codes in ``show``'s EXIT column before the earlier ones are
counted instead of listed."""


def exits_text(exits: Sequence[str], shown: int = EXITS_SHOWN) -> str:
    """An instance's exit codes, oldest first, in a few characters: runs of the same
    code as ``1x1098``, and past ``shown`` runs only the last ones after a count of
    the attempts left out (``… 1096 earlier,1x2,3,1x2``); ``-`` for none."""
    runs: list[list[Any]] = []
    for code in exits:
        if runs and runs[-1][0] == code:
            runs[-1][1] += 1
        else:
            runs.append([code, 1])
    words = [code if n == 1 else f"{code}x{n}" for code, n in runs]
    if len(runs) > shown:
        earlier = sum(n for _, n in runs[: len(runs) - shown + 1])
        words = [f"… {earlier} earlier", *words[len(runs) - shown + 1 :]]
    return ",".join(words) or "-"


def _exit_text(a: AttemptRecord) -> str:
    if a.timed_out:
        return "timeout"
    if a.signal is not None:
        return f"sig{a.signal}"
    if a.exit_code is not None:
        return str(a.exit_code)
    if a.outcome == "retrying":
        # How it ended (with no code: a connection refused, a job lost), not
        # what came after it.
        return "failed"
    return a.outcome or "running"


def outputs_data(instances: Sequence[InstanceRecord]) -> dict[str, dict[str, str]]:
    """``{instance key: {output: value}}`` for instances that published outputs."""
    return {i.key: dict(i.outputs) for i in instances if i.outputs}


def outputs_env(instances: Sequence[InstanceRecord]) -> str:
    """``TASK_KEY=value`` lines (``TASK_TARGET_KEY`` for a fanned task), shell-quoted.

    Names follow ``fleetrun.names.env_name``, the rule of the variables tasks
    receive. Raises ``UsageError`` when two values would meet on one name (targets
    ``prod/eu`` and ``prod_eu``), naming both: one line would hide the other."""
    lines = []
    seen: dict[str, str] = {}
    for i in instances:
        for k, v in i.outputs.items():
            name = env_name(i.task, i.target or "", k)
            other = seen.setdefault(name, f"{i.key} output {k!r}")
            if other != f"{i.key} output {k!r}":
                raise UsageError(
                    f"{other} and {i.key} output {k!r} would both be written as {name}, "
                    "and one would hide the other; use --format json, which keeps them apart"
                )
            lines.append(f"{name}={shlex.quote(v)}")
    return "\n".join(lines) + ("\n" if lines else "")


def outputs_text(instances: Sequence[InstanceRecord]) -> str:
    """The outputs table: instance, output key, value."""
    rows = [[i.key, k, v] for i in instances for k, v in i.outputs.items()]
    return text_table(["INSTANCE", "OUTPUT", "VALUE"], rows)
