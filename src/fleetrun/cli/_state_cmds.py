"""Reading the record: ``history``, ``show``, ``logs``, ``outputs``."""

from __future__ import annotations

import difflib
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import click

from fleetrun.cli._task_logs import print_target_logs, target_logs
from fleetrun.errors import RunNotFoundError, UsageError
from fleetrun.report import (
    history_text,
    outputs_data,
    outputs_env,
    outputs_text,
    run_summary,
    show_data,
    show_text,
)
from fleetrun.session import find_state_dir, select_run, select_runs
from fleetrun.state import JournalReader, journal_size, write_atomic

_FOLLOW_POLL = 0.2
"""Seconds between looks at a followed log and at its attempt's end."""


def _where(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--state-dir",
        type=click.Path(file_okay=False),
        default=None,
        help="Where the journal lives (default: .fleetrun beside --plan, or ./.fleetrun).",
    )(f)
    f = click.option(
        "--plan",
        type=click.Path(dir_okay=False),
        default=None,
        help="The plan (or fleet) file: finds its state directory and narrows to its runs "
        "(its `fleetrun exec` runs included).",
    )(f)
    return f


def _fmt(*choices: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--format", "fmt", type=click.Choice(choices), default=choices[0], show_default=True
    )


@contextmanager
def _journal(state_dir: str | None, plan: str | None) -> Iterator[JournalReader]:
    # Read-only: a run whose process died reads as interrupted (computed by
    # the reader); the journal is recovered by the next command that writes.
    journal = JournalReader(find_state_dir(state_dir, plan))
    if journal.wal_unread:
        _note_wal_unread(journal.db_path)
    try:
        yield journal
    finally:
        journal.close()


@cache  # once per journal, not at every look of `logs --follow`
def _note_wal_unread(db_path: Path) -> None:
    click.echo(
        f"note: {db_path}-wal cannot be read here; what it holds (a live run, or one that "
        "stopped without closing the journal) may be missing",
        err=True,
    )


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


@click.command()
@_where
@_fmt("table", "json")
@click.option("-n", "--limit", type=click.IntRange(min=1), default=None, help="Newest N runs.")
def history(plan: str | None, state_dir: str | None, fmt: str, limit: int | None) -> None:
    """List the runs on record, newest first: what each was (apply, retry, resume,
    exec) and of which run a retry is, its plan file and variables (secret ones
    masked), status, start, duration and instance counts."""
    with _journal(state_dir, plan) as j:
        runs = select_runs(j, plan, limit)
    if fmt == "json":
        _echo_json([run_summary(r) for r in runs])
    elif runs:
        click.echo(history_text(runs), nl=False)
    else:
        click.echo("no runs on record")
    if fmt != "json":
        where = find_state_dir(state_dir, plan)
        size = journal_size(where)
        shown = f"{size / 1048576:.1f} MiB" if size >= 1048576 else f"{size / 1024:.0f} KiB"
        click.echo(f"journal: {shown} in {where} (`fleetrun prune` drops old runs)")


_STATES = (
    "succeeded", "reused", "failed", "skipped", "cancelled", "interrupted", "not_started",
    "running", "pending",
)  # fmt: skip


def _states(values: tuple[str, ...]) -> set[str] | None:
    """``--state`` values (comma-separated, repeatable), checked; None when absent."""
    wanted = {v.strip() for value in values for v in value.split(",") if v.strip()}
    unknown = sorted(wanted - set(_STATES))
    if unknown:
        from fleetrun.plan import did_you_mean

        raise UsageError(
            f"--state {unknown[0]!r}{did_you_mean(unknown[0], _STATES)}: use one of "
            + ", ".join(_STATES)
        )
    return wanted or None


@click.command()
@click.argument("run", required=False)
@_where
@_fmt("table", "json")
@click.option(
    "--state",
    "states",
    multiple=True,
    metavar="STATES",
    help="Only instances in these states (comma-separated, repeatable), e.g. failed,skipped.",
)
def show(
    run: str | None, plan: str | None, state_dir: str | None, fmt: str, states: tuple[str, ...]
) -> None:
    """Show every instance of RUN (default: the latest): state, attempts, exit codes, reasons."""
    wanted = _states(states)
    with _journal(state_dir, plan) as j:
        r = select_run(j, run, plan)
        instances = j.instances(r.id)
        attempts = j.attempts(r.id)
    if wanted is not None:
        instances = [i for i in instances if i.status in wanted]
        keys = {i.key for i in instances}
        attempts = [a for a in attempts if a.key in keys]
    if fmt == "json":
        _echo_json(show_data(r, instances, attempts))
    else:
        click.echo(show_text(r, instances, attempts), nl=False)


@click.command()
@click.argument("instance", metavar="TASK@TARGET")
@click.option("--run", "run_ref", default=None, help="The run (default: the latest).")
@click.option("--attempt", type=click.IntRange(min=1), default=None, help="Default: the last.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the attempt ends.")
@_where
@_fmt("text", "json")
def logs(
    instance: str,
    run_ref: str | None,
    attempt: int | None,
    follow: bool,
    plan: str | None,
    state_dir: str | None,
    fmt: str,
) -> None:
    """Print the log of one attempt of TASK@TARGET (TASK for an unfanned task).

    TASK of a task fanned over targets prints every target's log, in fleet
    order, each under a header (instance, state, attempt, exit code).
    """
    if not instance.strip():
        raise UsageError("name the instance: TASK@TARGET (`fleetrun show` lists them)")
    with _journal(state_dir, plan) as j:
        r = select_run(j, run_ref, plan)
        if "@" not in instance and (every := target_logs(j, r.id, instance.strip(), attempt)):
            if follow:
                raise UsageError("--follow follows one instance: name it TASK@TARGET")
            print_target_logs(every, r.id, fmt)
            return
        if run_ref is None:
            # An instance reused by the latest run shows the log of the run that ran it.
            r = j.run(j.ran_in(r.id, instance))
            if not j.attempts(r.id, instance):
                # Not in the latest run's line: the newest earlier run that ran it.
                for older in select_runs(j, plan):
                    if j.attempts(older.id, instance):
                        click.echo(f"note: {instance} last ran in run {older.id}", err=True)
                        r = older
                        break
        if not j.attempts(r.id, instance):
            _no_such_instance(j, r.id, instance, attempt)
        a = j.attempt(r.id, instance, attempt)
    path = Path(a.log_path)
    if fmt == "json":
        _echo_json(
            {
                "run": r.id,
                "key": instance,
                "attempt": a.n,
                "log_path": str(path),
                "text": _read(path).decode("utf-8", "replace"),
            }
        )
        return
    if not follow or a.ended_at is not None:
        sys.stdout.buffer.write(_read(path))
        sys.stdout.flush()
        return
    _follow(state_dir, plan, r.id, instance, a.n, path)


def _no_such_instance(j: JournalReader, run_id: str, key: str, attempt: int | None) -> None:
    """Raise ``RunNotFoundError`` for ``key``, listing close matches and its task's instances."""
    keys = [i.key for i in j.instances(run_id)]
    if key in keys:
        j.attempt(run_id, key, attempt)  # raises: "has no attempts"
        return
    task = key.partition("@")[0]
    same_task = [k for k in keys if k.partition("@")[0] == task]
    close = difflib.get_close_matches(key, keys, n=5, cutoff=0.6)
    hint = ""
    if close:
        hint += "; close matches: " + ", ".join(close)
    if same_task:
        more = f" and {len(same_task) - 8} more" if len(same_task) > 8 else ""
        hint += f"; instances of {task}: " + ", ".join(same_task[:8]) + more
    if not hint:
        hint = "; `fleetrun show` lists the instances"
    raise RunNotFoundError(f"{key} is not an instance of run {run_id}{hint}")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise RunNotFoundError(f"the log {path} is gone") from None


def _follow(
    state_dir: str | None, plan: str | None, run_id: str, key: str, n: int, path: Path
) -> None:
    pos = 0
    while True:
        with _journal(state_dir, plan) as j:
            ended = j.attempt(run_id, key, n).outcome is not None
        try:
            with path.open("rb") as f:
                f.seek(pos)
                chunk = f.read()
        except FileNotFoundError:
            chunk = b""
        if chunk:
            pos += len(chunk)
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
        # The end is recorded after the process has exited, so its log is
        # complete by then: the read above, made after that check, got it all.
        if ended:
            return
        time.sleep(_FOLLOW_POLL)


@click.command()
@click.argument("run", required=False)
@_where
@_fmt("table", "json", "env")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write to FILE (atomically, under FILE.lock) instead of printing.",
)
def outputs(
    run: str | None, plan: str | None, state_dir: str | None, fmt: str, output: str | None
) -> None:
    """Print the outputs tasks published in RUN (default: the latest).

    \b
    --format env prints TASK_KEY=VALUE lines (TASK_TARGET_KEY for a task fanned
    over targets), ready for a .env file.
    """
    with _journal(state_dir, plan) as j:
        r = select_run(j, run, plan)
        instances = [i for i in j.instances(r.id) if i.outputs]
    if fmt == "json":
        text = json.dumps(outputs_data(instances), indent=2) + "\n"
    elif fmt == "env":
        text = outputs_env(instances)
    else:
        text = outputs_text(instances) if instances else "no outputs\n"
    if output:
        write_atomic(Path(output), text)
    else:
        click.echo(text, nl=False)
