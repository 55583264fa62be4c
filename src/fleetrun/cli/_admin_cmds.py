"""``fleetrun cancel`` and ``fleetrun prune``: act on the record from elsewhere."""

from __future__ import annotations

from pathlib import Path

import click

from fleetrun.cli._state_cmds import _where
from fleetrun.durations import UNITS, is_plain_number, parse_duration, unit_needed
from fleetrun.errors import UsageError
from fleetrun.session import cancel_run, find_state_dir, live_run, promote_run
from fleetrun.state import Journal, RunRecord, prune


def parse_age(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``2w``, ``1d12h`` in seconds. A plain number is refused:
    it once meant days here and means seconds elsewhere, so it is ambiguous."""
    if is_plain_number(text):
        raise UsageError(unit_needed("--older-than", text, "d"))
    age = parse_duration(text, unitless=False)
    if age is None:
        raise UsageError(
            f"--older-than {text!r}: expected a duration such as 30d, 12h or 2w (units: {UNITS})"
        )
    return age


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"  # pragma: no cover


@click.command()
@click.argument("run", required=False)
@click.option("--now", is_flag=True, help="Kill running tasks now (as a second Ctrl-C).")
@_where
def cancel(run: str | None, now: bool, plan: str | None, state_dir: str | None) -> None:
    """Stop a live run from another terminal, exactly as Ctrl-C in its own would:
    no new task starts, running tasks get the grace period, then the run ends
    as interrupted (`fleetrun retry` goes on from there). RUN defaults to the
    live run (of --plan); --now ends running tasks at once."""
    r = _live_run(run, plan, state_dir)
    cancel_run(r, now=now)
    how = "killing its running tasks now" if now else "running tasks get their grace period"
    click.echo(f"cancelling run {r.id} (pid {r.pid}): {how}")


@click.command("prune")
@click.option("--keep", type=click.IntRange(min=0), default=None, help="Keep the newest N runs.")
@click.option(
    "--older-than",
    "older_than",
    default=None,
    metavar="AGE",
    help="Only runs older than AGE, with a unit (30d, 12h, 2w).",
)
@click.option("--dry-run", is_flag=True, help="Say what would go; remove nothing.")
@_where
def prune_cmd(
    keep: int | None,
    older_than: str | None,
    dry_run: bool,
    plan: str | None,
    state_dir: str | None,
) -> None:
    """Remove old runs: their logs, outputs and journal rows. Never a live run, nor
    a run whose results a later run reuses (a retry's parent chain)."""
    if keep is None and older_than is None:
        raise UsageError("say which runs go: --keep N and/or --older-than AGE")
    age = parse_age(older_than) if older_than is not None else None
    with Journal.open_existing(find_state_dir(state_dir, plan)) as j:
        plan_path = str(Path(plan).resolve()) if plan else None
        res = prune(j, keep=keep, older_than=age, dry_run=dry_run, plan_path=plan_path)
    verb = "would remove" if dry_run else "removed"
    line = f"{verb} {len(res.removed)} run(s), {'about ' if dry_run else ''}{_size(res.freed)}"
    if res.kept_for_retries:
        line += (
            f"; kept {len(res.kept_for_retries)} older run(s) that later runs reuse "
            f"({', '.join(res.kept_for_retries)})"
        )
    click.echo(line)


def _live_run(run: str | None, plan: str | None, state_dir: str | None) -> RunRecord:
    """The live run named (or the only live one, of ``plan``): ``session.live_run``."""
    plan_path = str(Path(plan).resolve()) if plan else None
    return live_run(find_state_dir(state_dir, plan), run, plan_path)


@click.command("promote")
@click.argument("run", required=False)
@click.option(
    "--early",
    is_flag=True,
    help="Approve the next wave now, while the open ones still run (it opens once they are done).",
)
@_where
def promote(run: str | None, early: bool, plan: str | None, state_dir: str | None) -> None:
    """Open the rollout wave that waits for a promote, in a live run whose
    rollout has `pause: true` (from another terminal). One call opens one wave:
    with none waiting it is refused (exit 2) unless --early."""
    where = find_state_dir(state_dir, plan)
    r = _live_run(run, plan, state_dir)
    click.echo(promote_run(r, where, early=early))
