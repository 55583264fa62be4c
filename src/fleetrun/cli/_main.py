"""The ``fleetrun`` command group and the one place errors become exit codes."""

from __future__ import annotations

import importlib
import os
import re
import shlex
import signal
import sys
from typing import TYPE_CHECKING, Any

import click

# ``fleetrun/__init__`` installs this SIGINT handler first thing when fleetrun is
# the program (the console script or ``python -m fleetrun``), never in a program
# that imports it; ``main`` hands SIGINT back to Python.
from fleetrun import __version__, _interrupted_while_starting, diagnostics
from fleetrun.errors import FleetrunError, PlanError

if TYPE_CHECKING:
    from fleetrun.session import RunOutcome

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_LOCKED = 3
EXIT_INTERRUPTED = 130


def outcome_exit_code(outcome: RunOutcome) -> int:
    """The exit code of a command that ran something: 130 interrupted, 1 failed
    (as its console reports it, else as the run ended), else 0 (a dry run and
    nothing to do included)."""
    if outcome.status == "interrupted":
        return EXIT_INTERRUPTED
    return EXIT_FAILED if outcome.failed else EXIT_OK


COMMANDS: dict[str, str] = {
    "plan": "fleetrun.cli._plan_cmd:plan_cmd",
    "apply": "fleetrun.cli._apply_cmd:apply",
    "exec": "fleetrun.cli._exec_cmd:exec_cmd",
    "retry": "fleetrun.cli._apply_cmd:retry",
    "history": "fleetrun.cli._state_cmds:history",
    "show": "fleetrun.cli._state_cmds:show",
    "logs": "fleetrun.cli._state_cmds:logs",
    "outputs": "fleetrun.cli._state_cmds:outputs",
    "report": "fleetrun.cli._report_cmd:report",
    "watch": "fleetrun.cli._watch_cmd:watch",
    "schema": "fleetrun.cli._schema_cmd:schema_cmd",
    "cancel": "fleetrun.cli._admin_cmds:cancel",
    "prune": "fleetrun.cli._admin_cmds:prune_cmd",
    "promote": "fleetrun.cli._admin_cmds:promote",
    "pools": "fleetrun.cli._pools_cmd:pools_cmd",
    "cluster": "fleetrun.cli._cluster_cmd:cluster",
    "ui": "fleetrun.cli._ui_cmd:ui",
}
"""Command name -> ``module:attribute`` of its click command, imported when used
(click's lazy-group pattern: no import cycle, and ``--help`` of one command
loads only that command's module). A new command is one entry here."""


_COMMAND_ARGS = "fleetrun.command_args"
_VERBOSE = re.compile(r"-v+|--verbose")


def _verbose_misplaced(error: click.NoSuchOption, args: list[str]) -> str | None:
    """What to say when ``-v``/``--verbose`` was given after the command (it is an
    option of ``fleetrun`` itself), with the command line that works; None for
    any other unknown option."""
    if _VERBOSE.fullmatch(error.option_name) is None:
        return None
    end = args.index("--") if "--" in args else len(args)
    flags = [a for a in args[:end] if _VERBOSE.fullmatch(a)]
    count = sum(1 if a == "--verbose" else len(a) - 1 for a in flags) or 1
    rest = [a for a in args[:end] if not _VERBOSE.fullmatch(a)] + args[end:]
    fixed = shlex.join(["fleetrun", "-" + "v" * count, *rest])
    return f"{error.option_name} goes before the command: {fixed}"


class _Group(click.Group):
    """Loads commands lazily from ``COMMANDS``; maps fleetrun errors to messages
    and exit codes, never showing a traceback for them."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[_COMMAND_ARGS] = list(args)  # the command line as typed, for messages
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.NoSuchOption as e:
            line = _verbose_misplaced(e, ctx.meta.get(_COMMAND_ARGS, []))
            if line is None:
                raise
            click.echo(f"error: {line}", err=True)
            ctx.exit(EXIT_USAGE)
        except PlanError as e:
            n = len(e.diagnostics)
            click.echo(f"error: the plan has {n} problem{'s' if n != 1 else ''}:", err=True)
            for d in e.diagnostics:
                click.echo(f"  {d}", err=True)
            ctx.exit(EXIT_USAGE)
        except FleetrunError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fleetrun")
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="Show fleetrun's own diagnostics on stderr: -v what it does (connections, "
    "retries), -vv every detail. It goes before the command. Also "
    "FLEETRUN_LOG=debug|info|warning|error.",
)
def cli(verbose: int) -> None:
    """Run multi-phase operations across a fleet of targets, as parallel as
    the work and the providers allow.

    \b
    Exit codes: 0 all succeeded, 1 some task failed (or the journal could not
    be written), 2 bad plan or usage (or an unusable state directory), 3 the
    same plan is already running, 130 interrupted.
    """
    diagnostics.enable(diagnostics.level_from(verbose, os.environ))


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``fleetrun`` console script."""
    # `fleetrun promote` signals a live run; until the run listens for it (and
    # in commands that never do), it must not end this process.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    # From here on a Ctrl-C is a KeyboardInterrupt, mapped to 130 by ``_Group``.
    if signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="fleetrun")
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
