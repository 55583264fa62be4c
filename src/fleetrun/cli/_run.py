"""``apply``, ``apply --resume`` and ``retry`` on the command line: build the request,
choose the console, call the session, print what it says, map the outcome to an
exit code. Everything else (lock, journal, recovery, retry planning, the
engine) is the session's."""

from __future__ import annotations

import click

from fleetrun.cli._display import RunConsole, console_gone
from fleetrun.cli._main import outcome_exit_code
from fleetrun.session import Notice, RunRequest, Session, find_state_dir

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


def execute(req: RunRequest) -> int:
    """Run ``apply``/``retry``/``apply --resume`` as asked; return the exit code."""
    notify = _quiet_notify if req.quiet else _notify
    outcome = Session().run(req, notify=notify, console=RunConsole)
    if outcome.status == "dry_run":
        for line in outcome.lines:
            click.echo(line)
    elif outcome.report is not None:
        click.echo(outcome.report.text, nl=False)
    return outcome_exit_code(outcome)
