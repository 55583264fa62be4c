"""``fleetrun plan PLAN``: validate and expand a plan and show what ``apply`` would run."""

from __future__ import annotations

from pathlib import Path

import click

from fleetrun.plan import expand, load_plan
from fleetrun.plan._render import render_dot, render_json, render_mermaid, render_text


@click.command("plan")
@click.argument("plan_file", metavar="PLAN", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-j",
    "--parallelism",
    type=click.IntRange(min=1),
    default=None,
    help="Cap on running tasks used for the makespan estimates (default: unbounded).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "dot", "mermaid"]),
    default="text",
    show_default=True,
    help="text: overview; json: the full expanded graph; dot/mermaid: the instance graph.",
)
def plan_cmd(plan_file: Path, parallelism: int | None, fmt: str) -> None:
    """Validate PLAN, expand it over its targets and show what would run.

    \b
    The text view lists per phase the tasks and their instance counts, the
    waves, the critical path and the estimated makespan of the sequential,
    phased and dag modes at -j, with the lower bound max(critical path,
    work / j). Nothing is run. Exit code 2 when the plan is invalid.

    \b
    --format json prints {"format": "fleetrun.plan/1", plan, targets, tasks,
    phases, nodes: [{id, key, task, target, phase, estimate, wave, rank,
    needs: [{task, nodes: [keys], at_least}]}], waves, critical_path,
    critical_path_length, total_work, parallelism, makespan: {sequential,
    phased, dag, lower_bound}}; times in seconds. dot and mermaid print every
    instance and edge (dashed: quorum needs), phases as clusters.
    """
    graph = expand(load_plan(plan_file))
    if fmt == "json":
        out = render_json(graph, parallelism)
    elif fmt == "dot":
        out = render_dot(graph)
    elif fmt == "mermaid":
        out = render_mermaid(graph)
    else:
        out = render_text(graph, parallelism)
    click.echo(out, nl=False)
