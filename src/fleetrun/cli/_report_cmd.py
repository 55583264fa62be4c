"""``fleetrun report``: a run's measured numbers as a table, markdown, JSON, JUnit or HTML."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from fleetrun.cli._state_cmds import _journal, _where
from fleetrun.errors import UsageError
from fleetrun.report import (
    RunReport,
    build_report,
    render_html,
    render_json,
    render_junit,
    render_markdown,
    render_table,
)
from fleetrun.session import select_run
from fleetrun.state import write_atomic

FORMATS = ("table", "markdown", "json", "junit", "html")


_RENDERERS: dict[str, Callable[[RunReport], str]] = {
    "table": render_table,
    "markdown": render_markdown,
    "json": render_json,
    "junit": render_junit,
    "html": render_html,
}


@click.command()
@click.argument("run", required=False)
@_where
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write to FILE (atomically) instead of printing.",
)
def report(
    run: str | None, plan: str | None, state_dir: str | None, fmt: str, output: str | None
) -> None:
    """Report what a run measured: speedup per phase, critical path, retries.

    RUN is a run id or a unique prefix of one (default: the latest run).

    \b
    Measured from the journal: per phase and overall the instances, task time
    (the sum of attempt durations), wall time, speedup, critical path, lower
    bound and efficiency; the makespan of each mode (the one that ran measured,
    the others list-scheduled from the measured durations); the critical path;
    retries and throttling per task and per pool; the slowest targets.
    --format junit gives one test case per instance, for CI systems; html one
    self-contained page with a timeline.
    """
    with _journal(state_dir, plan) as j:
        r = select_run(j, run, plan)
        built = build_report(j, r.id)
    text = _RENDERERS[fmt](built)
    if output is not None and not output.strip():
        raise UsageError("-o needs a file name (leave -o out to print the report)")
    if output:
        path = Path(output)
        write_atomic(path, text)
        click.echo(f"wrote the {fmt} report of run {built.run_id} to {path}")
    else:
        click.echo(text, nl=not text.endswith("\n"))
