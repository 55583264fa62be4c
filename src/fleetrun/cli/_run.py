"""``apply``, ``apply --resume`` and ``retry`` on the command line: build the request,
choose the console, call the session, print what it says, map the outcome to an
exit code. Everything else (lock, journal, recovery, retry planning, the
engine) is the session's."""

from __future__ import annotations

import click

from fleetrun.cli._display import Display, console_gone
from fleetrun.cli._main import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from fleetrun.engine import Subscriber
from fleetrun.report import FailureNotes, next_steps
from fleetrun.session import Notice, RunRequest, RunSetup, Session, find_state_dir

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


class _Console:
    """The display plus the notes the final summary needs."""

    def __init__(self, setup: RunSetup) -> None:
        self.display = Display(setup.graph, setup.request, setup.only, setup.redactor)
        self.notes = FailureNotes()
        self.subscribers: tuple[Subscriber, ...] = (*self.display.subscribers, self.notes)

    def start(self) -> None:
        self.display.start()

    def stop(self) -> None:
        self.display.stop()


def _where(req: RunRequest) -> list[str]:
    """The arguments that find this run's record again."""
    if req.state_dir:
        return ["--state-dir", req.state_dir]
    return ["--plan", req.plan] if req.plan else []


def execute(req: RunRequest) -> int:
    """Run ``apply``/``retry``/``apply --resume`` as asked; return the exit code."""
    consoles: list[_Console] = []

    def console(setup: RunSetup) -> _Console:
        consoles.append(_Console(setup))
        return consoles[-1]

    notify = _quiet_notify if req.quiet else _notify
    outcome = Session().run(req, notify=notify, console=console)
    if outcome.status == "dry_run":
        for line in outcome.lines:
            click.echo(line)
        return EXIT_OK
    if outcome.status == "nothing":
        return EXIT_OK
    result, graph = outcome.result, outcome.graph
    assert result is not None
    assert graph is not None
    assert consoles
    shown = consoles[0]
    if not (req.quiet and outcome.status == "succeeded"):
        click.echo(shown.display.console.summary(result, graph))
    retry_of = outcome.parent_id if req.kind != "apply" else None
    for line in next_steps(
        shown.notes.failures, result.counts, where=_where(req), retry_of=retry_of
    ):
        click.echo(line)
    if outcome.status == "succeeded":
        return EXIT_OK
    if outcome.status == "interrupted":
        return EXIT_INTERRUPTED
    return EXIT_FAILED
