"""The ``fleetrun`` command group and the one place errors become exit codes."""

from __future__ import annotations

import sys
from typing import Any

import click

from fleetrun import __version__
from fleetrun.errors import FleetrunError, PlanError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Group(click.Group):
    """Maps fleetrun errors to messages and exit codes; never shows a traceback for them."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
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
def cli() -> None:
    """Run multi-phase operations across a fleet of targets, as parallel as
    the work and the providers allow.

    \b
    Exit codes: 0 all succeeded, 1 some task failed, 2 bad plan or usage,
    130 interrupted.
    """


def _register() -> None:
    # Each command lives in its own module; importing it attaches it to ``cli``.
    import fleetrun.cli._report_cmd  # noqa: F401
    from fleetrun.cli import _apply_cmd, _cluster_cmd, _plan_cmd, _schema_cmd, _state_cmds  # noqa: F401


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``fleetrun`` console script."""
    _register()
    cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="fleetrun")
