"""``fleetrun schema``: print the JSON Schema of the plan file format."""

from __future__ import annotations

import json

import click

from fleetrun.plan import plan_json_schema


@click.command("schema")
@click.option(
    "--indent",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Spaces per indentation level (0: one line).",
)
def schema_cmd(indent: int) -> None:
    """Print the JSON Schema (draft 2020-12) of plan files.

    \b
    Point your editor at it for completion and checks, for example with
    yaml-language-server:  # yaml-language-server: $schema=plan.schema.json
    """
    click.echo(json.dumps(plan_json_schema(), indent=indent or None, ensure_ascii=False))
