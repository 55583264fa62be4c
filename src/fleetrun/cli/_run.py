"""``apply``, ``apply --resume`` and ``retry`` on the command line: build the request,
choose the console, call the session, print what it says, map the outcome to an
exit code. Everything else (lock, journal, recovery, retry planning, the
engine) is the session's."""

from __future__ import annotations

import sys

import click

from fleetrun.cli._display import RunConsole, console_gone
from fleetrun.cli._main import EXIT_FAILED, outcome_exit_code
from fleetrun.session import (
    Notice,
    PlannedRun,
    PreparedRun,
    RunOutcome,
    RunRequest,
    Session,
    find_state_dir,
)

__all__ = ["RunRequest", "execute", "find_state_dir"]


def _notify(notice: Notice) -> None:
    """Print a notice; a console that went away never touches the run."""
    try:
        click.echo(notice.text, err=notice.error)
    except OSError as e:
        console_gone(e, notice.error)


def _quiet_notify(notice: Notice) -> None:
    if notice.kind != "start":
        _notify(notice)


def execute(req: RunRequest, *, yes: bool = True) -> int:
    """Run ``apply``/``retry``/``apply --resume`` as asked; return the exit code.

    ``yes``: start instances a selection pulls in without asking; when False and
    on a terminal, ask first (declined: nothing runs, exit 1)."""
    notify = _quiet_notify if req.quiet else _notify
    session = Session()
    prepared = session.prepare(req, notify=notify)
    if isinstance(prepared, RunOutcome):
        outcome = prepared
    elif not yes and not _confirmed(prepared):
        click.echo("not run: nothing was started (`--yes` runs it without asking)", err=True)
        return EXIT_FAILED
    else:
        outcome = session.execute(prepared, notify=notify, console=RunConsole)
    if outcome.status == "dry_run":
        for line in outcome.lines:
            click.echo(line)
    elif outcome.report is not None:
        click.echo(outcome.report.text, nl=False)
    return outcome_exit_code(outcome)


def _confirmed(prepared: PreparedRun) -> bool:
    """Whether to start a run whose selection pulls in instances it does not name
    (listed above): asked on a terminal; without one, yes (they were listed).
    Not confirmed (or the question interrupted): ``prepared`` is closed."""
    work = prepared.work
    if not isinstance(work, PlannedRun) or not work.pulled_in:
        return True
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return True
    ok = False
    try:
        ok = click.confirm(
            f"start {len(work.pulled_in)} instance(s) the selection does not name, "
            "as listed above?",
            default=False,
            err=True,
        )
    finally:
        if not ok:
            prepared.close()
    return ok
