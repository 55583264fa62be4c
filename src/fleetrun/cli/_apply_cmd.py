"""``fleetrun apply`` and ``fleetrun retry``: run a plan, or re-run what did not succeed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, get_args

import click

from fleetrun.cli._plan_cmd import var_options
from fleetrun.cli._run import execute
from fleetrun.engine import DEFAULT_GRACE, FailFast, Mode, OutputMode
from fleetrun.plan import PATTERN_HELP
from fleetrun.session import RunRequest, find_state_dir

# The choices are the engine's own values: click checks them, so the request
# built from them is well typed.
_MODES: tuple[str, ...] = get_args(Mode)
_OUTPUT_MODES: tuple[str, ...] = get_args(OutputMode)
_FAIL_FAST_VALUES: tuple[str, ...] = get_args(FailFast)


class _OptionalValueCommand(click.Command):
    """Lets ``--fail-fast`` stand alone before a positional argument.

    click gives a flag with an optional value the next word as its value, so
    ``--fail-fast plan.yaml`` would read ``plan.yaml`` as the policy. Here a
    bare ``--fail-fast`` not followed by ``stop``/``kill`` means ``stop``.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        fixed: list[str] = []
        for i, arg in enumerate(args):
            if arg == "--":
                fixed += args[i:]
                break
            if arg == "--fail-fast" and (
                i + 1 >= len(args) or args[i + 1] not in _FAIL_FAST_VALUES
            ):
                arg = "--fail-fast=stop"
            fixed.append(arg)
        return super().parse_args(ctx, fixed)


def _selection_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = var_options(f)
    f = click.option(
        "--only",
        is_flag=True,
        help="Refuse to run instances the selection needs but does not name "
        "(without it they run, and are listed with the reason).",
    )(f)
    f = click.option(
        "--tasks",
        multiple=True,
        metavar="NAMES",
        help="Only these tasks (comma-separated, repeatable), plus what they need.",
    )(f)
    f = click.option(
        "-t",
        "--targets",
        multiple=True,
        metavar="PATTERN",
        help=f"Only these {PATTERN_HELP}; plus what they need.",
    )(f)
    return f


def _run_options(f: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed(
        [
            click.option(
                "--mode",
                type=click.Choice(_MODES),
                default="dag",
                show_default=True,
                help="dag: real dependencies only; phased: phase barriers; sequential: one by one.",
            ),
            click.option(
                "-j",
                "--parallelism",
                type=click.IntRange(min=1),
                default=None,
                help="Most instances running at once (default: bounded by pools only).",
            ),
            click.option(
                "--fail-fast",
                type=click.Choice(_FAIL_FAST_VALUES),
                is_flag=False,
                flag_value="stop",
                default=None,
                help="On the first failure start nothing new; =kill also ends running tasks.",
            ),
            click.option(
                "--grace",
                type=click.FloatRange(min=0),
                default=DEFAULT_GRACE,
                show_default=True,
                metavar="SECONDS",
                help="Time between SIGTERM and SIGKILL when ending a task.",
            ),
            click.option(
                "--state-dir",
                type=click.Path(file_okay=False),
                default=None,
                help="Where the journal lives (default: .fleetrun beside the plan).",
            ),
            click.option(
                "--kill-orphans",
                is_flag=True,
                help="End process groups left running by a run that died, before starting.",
            ),
            click.option(
                "--plain",
                is_flag=True,
                help="One timestamped line per change instead of the live view "
                "(also when stdout is not a terminal, CI is set, NO_COLOR is set or TERM=dumb).",
            ),
            click.option(
                "--cluster",
                default=None,
                metavar="ADDRESS",
                help="The Dask scheduler for runs_on: cluster tasks (else FLEETRUN_CLUSTER, "
                "else the plan's cluster.address, else a local cluster for the run).",
            ),
            click.option(
                "-q",
                "--quiet",
                is_flag=True,
                help="Only failures and the summary; with --output ordered, each target's "
                "output as TARGET  LINE rows in fleet order (a status check as a table).",
            ),
            click.option(
                "--output",
                "output",
                type=click.Choice(_OUTPUT_MODES),
                default="none",
                show_default=True,
                help="Task output on the console: none (logs on disk only); grouped (each "
                "attempt as one block when it ends); ordered (blocks in plan order); "
                "stream (live lines prefixed task@target).",
            ),
            click.option(
                "--events",
                type=click.Path(dir_okay=False, writable=True),
                default=None,
                metavar="FILE.jsonl",
                help="Also write every engine event to FILE as one JSON line, as it happens.",
            ),
        ]
    ):
        f = opt(f)
    return _selection_options(f)


@click.command(cls=_OptionalValueCommand)
@click.argument("plan", type=click.Path(dir_okay=False))
@_run_options
@click.option("--dry-run", is_flag=True, help="Print the commands in start order; run nothing.")
@click.option(
    "--resume", is_flag=True, help="Continue the latest run of this plan, which was interrupted."
)
@click.option("--ui", is_flag=True, help="Serve `fleetrun ui` beside the run; prints its URL.")
@click.option(
    "-y",
    "--yes",
    is_flag=True,
    help="Start what --targets/--tasks pull in (needed, with no usable record) without "
    "asking (asked only on a terminal).",
)
def apply(plan: str, resume: bool, ui: bool, yes: bool, **options: Any) -> None:
    """Run PLAN: every task instance as soon as what it needs has succeeded.

    With --targets/--tasks, what the selection needs but does not name is
    reused where its latest record in this plan's runs succeeded with the same
    command; the rest is listed and, on a terminal, asked for (--yes: not asked).

    \b
    Exit codes: 0 all succeeded, 1 some task failed (or the question was
    answered no), 2 bad plan or usage, 3 this plan is already running
    (`fleetrun cancel` stops it), 130 interrupted (Ctrl-C: running tasks get
    --grace seconds; twice: killed now).
    """
    # The run options' parameter names are RunRequest's field names.
    req = RunRequest(kind="resume" if resume else "apply", plan=plan, **options)
    if ui and not req.dry_run:
        from fleetrun.cli._ui_cmd import ui_beside

        with ui_beside(find_state_dir(req.state_dir, plan)) as url:
            click.echo(f"ui: {url}", err=True)
            code = execute(req, yes=yes)
    else:
        code = execute(req, yes=yes)
    click.get_current_context().exit(code)


@click.command(cls=_OptionalValueCommand)
@click.argument("run", required=False)
@click.option("--plan", type=click.Path(dir_okay=False), default=None, help="The plan file.")
@_run_options
@click.option("--dry-run", is_flag=True, help="Print what would run again; run nothing.")
@click.option(
    "--rollout",
    is_flag=True,
    help="Roll out every wave again from the first (default: the targets of the waves "
    "that had opened in RUN run at once; later waves keep their gates).",
)
def retry(run: str | None, plan: str | None, **options: Any) -> None:
    """Re-run what failed, was skipped, cancelled or interrupted in RUN, and its dependents.

    RUN defaults to the latest run (of --plan when given). What succeeded is not
    run again: its recorded outputs are reused. The plan is read again from disk;
    an instance whose command changed since is run again.

    With a rollout, the retry continues where RUN stopped: the targets of the
    waves that had opened in RUN form one first wave, run at once; the waves
    that never opened keep their order and gates. --rollout replays every wave.
    """
    code = execute(RunRequest(kind="retry", plan=plan, run_ref=run, **options))
    click.get_current_context().exit(code)
