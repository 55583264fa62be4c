"""``fleetrun logs TASK`` for a task fanned over targets: every target's log, in order.

Like pssh's ``--outdir`` read back: one block per target, in fleet order (the
order of the task's instances), each under a header naming the instance, how
it ended, which attempt is shown and, when the latest run reused it, the run
that ran it. An instance that never ran (skipped, cancelled) has its header
and reason and no body. ``--format json`` gives the same as a list.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from fleetrun.errors import RunNotFoundError
from fleetrun.state import JournalReader

_RULE = 60
"""Headers are drawn out to this width, as ``fleetrun exec`` draws its blocks."""


@dataclass(frozen=True, slots=True)
class TargetLog:
    """One instance's log to show: ``attempt`` None when it never ran."""

    key: str
    status: str
    reason: str
    run_id: str
    attempt: int | None = None
    exit_code: int | None = None
    log_path: str | None = None


def target_logs(j: JournalReader, run_id: str, task: str, attempt: int | None) -> list[TargetLog]:
    """What to show for each instance of ``task`` in the run: the last attempt (or
    attempt ``attempt`` where it has one) of the run that ran it."""
    prefix = task + "@"
    out: list[TargetLog] = []
    for inst in j.instances(run_id):
        if not inst.key.startswith(prefix):
            continue
        ran = j.ran_in(run_id, inst.key)
        tries = [a for a in j.attempts(ran, inst.key) if attempt is None or a.n == attempt]
        if not tries:
            out.append(TargetLog(inst.key, inst.status, inst.reason, run_id))
            continue
        a = tries[-1]
        out.append(TargetLog(inst.key, inst.status, inst.reason, ran, a.n, a.exit_code, a.log_path))
    return out


def _header(log: TargetLog, run_id: str) -> str:
    what = log.status
    if log.attempt is not None:
        what += f", attempt {log.attempt}"
        if log.exit_code is not None:
            what += f", exit {log.exit_code}"
        if log.run_id != run_id:
            what += f", in run {log.run_id}"
    elif log.reason:
        what += f": {log.reason}"
    head = f"── {log.key} ── {what} "
    return head + "─" * max(3, _RULE - len(head))


def _text(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError:
        return None


def print_target_logs(logs: list[TargetLog], run_id: str, fmt: str) -> None:
    """Write the blocks (text) or the list (json) to standard output."""
    if fmt == "json":
        data = []
        for log in logs:
            body = _text(log.log_path)
            data.append(
                {
                    "run": log.run_id,
                    "key": log.key,
                    "status": log.status,
                    "attempt": log.attempt,
                    "exit_code": log.exit_code,
                    "log_path": log.log_path,
                    "text": None if body is None else body.decode("utf-8", "replace"),
                }
            )
        click.echo(json.dumps(data, indent=2))
        return
    if not logs:
        raise RunNotFoundError(f"run {run_id} has no instances of that task")
    out = sys.stdout.buffer
    for log in logs:
        out.write((_header(log, run_id) + "\n").encode())
        body = _text(log.log_path)
        if body is None and log.log_path is not None:
            out.write(f"(the log {log.log_path} is gone)\n".encode())
        elif body:
            out.write(body if body.endswith(b"\n") else body + b"\n")
        out.write(b"\n")
    out.flush()
