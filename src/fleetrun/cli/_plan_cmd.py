"""``fleetrun plan PLAN``: validate and expand a plan and show what ``apply`` would run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from fleetrun.errors import UsageError
from fleetrun.plan import (
    ALL_TARGETS,
    PATTERN_HELP,
    empty_warnings,
    expand,
    load_plan,
    parse_var_args,
    read_var_file,
    render_dot,
    render_json,
    render_mermaid,
    render_text,
    selection_closure,
    selection_lines,
    split_names,
)


def var_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--var NAME=VALUE`` and ``--var-file FILE`` (repeatable; later ones win)."""
    f = click.option(
        "--var-file",
        "var_files",
        multiple=True,
        metavar="FILE",
        help="Variables from a YAML/JSON file of NAME: VALUE (repeatable).",
    )(f)
    f = click.option(
        "--var",
        "vars",
        multiple=True,
        metavar="NAME=VALUE",
        help="Set a variable the plan declares under 'vars' (repeatable; retry reuses "
        "the run's unless given again).",
    )(f)
    return f


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
@click.option(
    "-t",
    "--targets",
    multiple=True,
    metavar="PATTERN",
    help=f"Preview only these {PATTERN_HELP}; plus what they need.",
)
@click.option(
    "--tasks",
    multiple=True,
    metavar="NAMES",
    help="Preview only these tasks (comma-separated, repeatable), plus what they need.",
)
@click.option(
    "--cluster-workers",
    type=int,
    default=None,
    metavar="N",
    help="Workers of the compute cluster for the estimates: at most N runs_on: cluster "
    "tasks run at once (default: the plan's cluster.workers, 2 when unset).",
)
@var_options
def plan_cmd(
    plan_file: Path,
    parallelism: int | None,
    fmt: str,
    targets: tuple[str, ...],
    tasks: tuple[str, ...],
    cluster_workers: int | None,
    vars: tuple[str, ...],
    var_files: tuple[str, ...],
) -> None:
    """Validate PLAN, expand it over its targets and show what would run.

    \b
    The text view lists per phase the tasks and their instance counts, every
    task with its instance count, group and needs (quorums as "at least 5 of
    6 (67%)"), the dependency levels (a level starts when what it needs has
    finished), the rollout waves when the plan has a rollout (each wave's
    targets, max_failed, pause), the critical path and the estimated makespan
    of the sequential, phased and dag modes at -j, held by the rollout's waves
    (and, beside it, without them), with the lower bound max(critical path,
    work / j); runs_on: cluster tasks run at most one per cluster worker
    (--cluster-workers). A task whose group matches no target is listed with 0
    instances and a warning (apply refuses it unless it says allow_empty:
    true). Nothing is run. Exit code 2 when the plan is invalid.

    \b
    --targets/--tasks preview a selection as apply would run it: the named
    instances and every instance they need beyond those, each with why
    ("needed by multicall (quorum of besu: at least 5 of 6)").

    \b
    --format json prints {"format": "fleetrun.plan/2", plan, targets, tasks,
    instances: {task: count}, phases, nodes: [{id, key, task, target, phase, estimate, level,
    rank, needs: [{task, nodes: [keys], at_least}]}], levels: [[keys]], rollout: null |
    {waves: [[targets]], sizes, max_failed, pause, makespan_without_rollout: {sequential,
    phased, dag}}, critical_path, critical_path_length, total_work, parallelism,
    makespan: {sequential, phased, dag, lower_bound}}; times in seconds. (fleetrun.plan/1
    called the levels waves.) With --targets/--tasks it adds selection: {named: [keys],
    also: {key: reason}}. dot and mermaid print every instance and edge (dashed: quorum
    needs), phases as clusters.
    """
    overrides: dict[str, str] = {}
    for f in var_files:
        overrides.update(read_var_file(f))
    overrides.update(parse_var_args(vars))
    if cluster_workers is not None and cluster_workers < 1:
        raise UsageError(
            f"--cluster-workers {cluster_workers}: a cluster runs jobs on at least 1 worker; "
            "give the number of workers it has"
        )
    loaded = load_plan(plan_file, var_overrides=overrides)
    if cluster_workers is not None:
        # The estimates read the cluster's size from the plan (``simulate``).
        loaded = replace(loaded, cluster=replace(loaded.cluster, workers=cluster_workers))
    graph = expand(loaded)
    plan = graph.plan
    target_names = split_names(targets, {*plan.targets, *plan.groups, ALL_TARGETS})
    task_names = split_names(tasks, plan.tasks)
    selection = None
    if target_names is not None or task_names is not None:
        selection = selection_closure(graph, target_names, task_names)
    for line in empty_warnings(graph):
        click.echo(line, err=True)
    if fmt == "json":
        extra = None
        if selection is not None:
            nodes, extras = selection
            keys = [n.key for n in graph.nodes]
            named = [keys[i] for i in sorted(nodes) if i not in extras]
            also = {keys[i]: extras[i] for i in sorted(extras)}
            extra = {"selection": {"named": named, "also": also}}
        out = render_json(graph, parallelism, extra)
    elif fmt == "dot":
        out = render_dot(graph)
    elif fmt == "mermaid":
        out = render_mermaid(graph)
    else:
        out = render_text(graph, parallelism)
        if selection is not None:
            lines = selection_lines(graph, *selection)
            lines.append("  (the sections below describe the whole plan)")
            head, _, rest = out.partition("\n\n")
            out = head + "\n\n" + "\n".join(lines) + "\n\n" + rest
    click.echo(out, nl=False)
