"""``fleetrun exec FILE [-t SEL] [--runs-on local|ssh] [-j N] [--timeout D] -- CMD...``:
an ad-hoc command across the fleet, as a journaled run; each target's output as one
block in fleet order, then a table (or ``--format json``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

import click

from fleetrun.cli._display import Display
from fleetrun.cli._main import outcome_exit_code
from fleetrun.engine import (
    DEFAULT_GRACE,
    AttemptEnded,
    AttemptStarted,
    Event,
    InstanceSettled,
    RunResult,
    Subscriber,
)
from fleetrun.errors import UsageError
from fleetrun.plan import PATTERN_HELP, ExecRequest, parse_duration
from fleetrun.report import TargetOutcome, exec_exit_code, render_exec_json, render_exec_text
from fleetrun.session import Notice, Report, RunRequest, RunSetup, Session

Format = Literal["text", "json"]

_MAX_OUTPUT = 1 << 20
"""Bytes of each target's log shown (its end); the whole log stays on disk."""


class _Collector:
    """Remembers, per instance, its last attempt and how it settled."""

    def __init__(self) -> None:
        self.logs: dict[str, str] = {}
        self.ended: dict[str, AttemptEnded] = {}
        self.settled: dict[str, InstanceSettled] = {}

    def __call__(self, ev: Event) -> None:
        if isinstance(ev, AttemptStarted):
            self.logs[ev.key] = ev.log_path
        elif isinstance(ev, AttemptEnded):
            self.ended[ev.key] = ev
        elif isinstance(ev, InstanceSettled):
            self.settled[ev.key] = ev

    def outcome(self, key: str, target: str) -> TargetOutcome:
        ended = self.ended.get(key)
        settled = self.settled.get(key)
        reason = settled.reason if settled is not None and settled.state != "succeeded" else None
        if ended is None:
            return TargetOutcome(target, None, reason=reason or "did not run")
        return TargetOutcome(
            target,
            ended.exit_code,
            signal=ended.signal,
            timed_out=ended.timed_out,
            reason=reason,
            error_kind=ended.error_kind,
            duration=max(0.0, ended.at - ended.started_at),
            output=_tail(self.logs.get(key)),
        )


def _tail(path: str | None) -> str:
    if path is None:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - _MAX_OUTPUT))
            data = f.read()
    except OSError:
        return ""
    return data.decode("utf-8", "replace")


@click.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option(
    "-t",
    "--targets",
    multiple=True,
    metavar="PATTERN",
    help=f"Only these {PATTERN_HELP} (default: all).",
)
@click.option(
    "--runs-on",
    type=click.Choice(["local", "ssh"]),
    default=None,
    help="Where the command runs (default: ssh when every selected target has ssh "
    "settings, else local).",
)
@click.option("-j", "--parallelism", type=click.IntRange(min=1), default=None, help="Most at once.")
@click.option("--timeout", default=None, metavar="DURATION", help="Per target, e.g. 30s or 5m.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    help="text: blocks then a table; json: an array of {target, ok, exit_code, output, ...}.",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=DEFAULT_GRACE,
    metavar="SECONDS",
    help="Time between SIGTERM and SIGKILL when ending the command (timeout, Ctrl-C).",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where the run is journaled (default: .fleetrun beside FILE).",
)
@click.option("--plain", is_flag=True, help="Progress as plain lines (on stderr).")
def exec_cmd(
    file: str,
    command: tuple[str, ...],
    targets: tuple[str, ...],
    runs_on: str | None,
    parallelism: int | None,
    timeout: str | None,
    fmt: Format,
    grace: float,
    state_dir: str | None,
    plain: bool,
) -> None:
    """Run COMMAND on every target of FILE (a plan or a fleet file), as a journaled run.

    \b
    fleetrun exec fleet.yaml -t canary -- systemctl status besu
    fleetrun exec plan.yaml --runs-on local -- ./status.sh {{ target.name }}

    COMMAND is templated like a task's run ({{ target.name }}, attributes, vars;
    values are quoted). Progress goes to stderr; then each target's output as
    one block in fleet order and a table (target, exit, duration, last line),
    or a JSON array with --format json. `fleetrun retry --plan FILE` re-runs the
    targets that failed. Exit codes: 0 all succeeded, 1 some failed, 2 bad
    usage, 130 interrupted.
    """
    seconds = None
    if timeout is not None:
        seconds = parse_duration(timeout)
        if seconds is None or seconds <= 0:
            raise UsageError(f"--timeout {timeout!r}: expected a duration such as 30s or 5m")
    names = tuple(n.strip() for v in targets for n in v.split(",") if n.strip())
    if targets and not names:
        raise UsageError("-t/--targets names nothing; give names, or leave it out for all")
    exec_req = ExecRequest(
        str(Path(file).resolve()), command, targets=names or None, runs_on=runs_on, timeout=seconds
    )
    req = RunRequest(
        kind="apply",
        plan=file,
        state_dir=state_dir,
        parallelism=parallelism,
        grace=grace,
        plain=plain,
        exec_request=exec_req,
    )
    code = run_exec(req, fmt)
    click.get_current_context().exit(code)


class ExecConsole:
    """The console of ``fleetrun exec`` (the session's ``Console``): progress on
    stderr; its report is each target's output as one block in fleet order and
    a table (or JSON), and it failed when a target's command did not exit 0."""

    def __init__(self, setup: RunSetup, fmt: Format = "text") -> None:
        self.setup = setup
        self.fmt = fmt
        self.display = Display(
            setup.graph, setup.request, setup.only, setup.redactor, stream=sys.stderr
        )
        self.collector = _Collector()
        self.subscribers: tuple[Subscriber, ...] = (*self.display.subscribers, self.collector)

    def start(self) -> None:
        self.display.start()

    def stop(self) -> None:
        self.display.stop()

    def report(self, result: RunResult) -> Report:
        outcomes = [
            self.collector.outcome(n.key, n.target or n.key)
            for n in self.setup.graph.nodes
            if n.id in result.states and result.states[n.id] != "reused"
        ]
        render = render_exec_json if self.fmt == "json" else render_exec_text
        return Report(render(outcomes), failed=exec_exit_code(outcomes) != 0)


def run_exec(req: RunRequest, fmt: Format) -> int:
    """Run an exec request (or a retry of one) and print its blocks and table."""

    def notify(notice: Notice) -> None:
        click.echo(notice.text, err=True)

    outcome = Session().run(req, notify=notify, console=lambda setup: ExecConsole(setup, fmt))
    if outcome.report is not None:
        click.echo(outcome.report.text, nl=False)
    return outcome_exit_code(outcome)
