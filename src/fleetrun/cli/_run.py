"""``apply``, ``apply --resume`` and ``retry`` on the command line: build the request,
choose the console, call the session, print what it says, map the outcome to an
exit code. Everything else (lock, journal, recovery, retry planning, the
engine) is the session's."""

from __future__ import annotations

import click

from fleetrun.cli._display import Display
from fleetrun.cli._main import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from fleetrun.session import Notice, RunRequest, RunSetup, Session, find_state_dir, split_names

__all__ = ["RunRequest", "execute", "find_state_dir", "split_names"]


def _notify(notice: Notice) -> None:
    click.echo(notice.text, err=notice.error)


def execute(req: RunRequest) -> int:
    """Run ``apply``/``retry``/``apply --resume`` as asked; return the exit code."""
    displays: list[Display] = []

    def console(setup: RunSetup) -> Display:
        display = Display(setup.graph, setup.request, setup.only, setup.redactor)
        displays.append(display)
        return display

    outcome = Session().run(req, notify=_notify, console=console)
    if outcome.status == "dry_run":
        for line in outcome.lines:
            click.echo(line)
        return EXIT_OK
    if outcome.status == "nothing":
        return EXIT_OK
    assert outcome.result is not None
    assert outcome.graph is not None
    assert displays
    click.echo(displays[0].console.summary(outcome.result, outcome.graph))
    if outcome.status == "succeeded":
        return EXIT_OK
    if outcome.status == "interrupted":
        return EXIT_INTERRUPTED
    return EXIT_FAILED
