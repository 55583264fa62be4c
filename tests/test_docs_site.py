"""The documentation site builds without a warning, and its generated references
cover the program.

``mkdocs build --strict`` fails on a broken link or anchor and on a page left
out of the navigation. The plan-key reference is rendered from the plan's JSON
Schema and the command reference from the click commands (``docs/_hooks.py``);
the renderer is also checked on a schema in pydantic's layout (``$defs``,
``$ref``, ``anyOf`` with ``null``), the one ``model_json_schema()`` writes.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Literal

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "fleetrun_docs_hooks", ROOT / "docs" / "_hooks.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_site_builds_strictly_with_generated_references(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    keys = (site / "reference" / "plan-keys.html").read_text()
    commands = (site / "reference" / "commands.html").read_text()
    assert "fleetrun:plan-keys" not in keys
    assert "fleetrun:commands" not in commands
    from fleetrun.cli import cli
    from fleetrun.plan import plan_json_schema

    for key in plan_json_schema()["properties"]:
        assert f"<code>{key}</code>" in keys, key
    for name in cli.list_commands(None):  # type: ignore[arg-type]
        assert f'id="fleetrun-{name}"' in commands, name
    assert 'id="fleetrun-cluster-up"' in commands
    for example in ("chain138", "hosts", "prover"):
        assert (site / "examples" / f"{example}.html").is_file(), example


def test_the_key_reference_reads_a_pydantic_schema() -> None:
    pydantic = pytest.importorskip("pydantic")

    class Retry(pydantic.BaseModel):
        """Retry policy."""

        model_config = pydantic.ConfigDict(frozen=True, extra="forbid")
        attempts: int = pydantic.Field(3, ge=1, le=10, description="Attempts in all.")

    class Task(pydantic.BaseModel):
        """One task."""

        model_config = pydantic.ConfigDict(frozen=True, extra="forbid")
        run: str = pydantic.Field(description="Shell command.")
        runs_on: Literal["local", "ssh"] = pydantic.Field("local", description="Where it runs.")
        retry: Retry | int | None = pydantic.Field(None, description="Retry policy.")

    class Plan(pydantic.BaseModel):
        """A plan."""

        model_config = pydantic.ConfigDict(frozen=True, extra="forbid")
        tasks: dict[str, Task] = pydantic.Field(description="Task name -> task.")
        fallback: Retry | None = pydantic.Field(None, description="Retry again.")

    text = _hooks().plan_keys_markdown(Plan.model_json_schema())
    lines = text.splitlines()
    # One section per model, each documented once however often it is used.
    assert [line for line in lines if line.startswith("## ")] == [
        "## The plan file (top level) {#key-plan}",
        "## `tasks.<name>` {#key-tasks-name}",
        "## `fallback` {#key-fallback}",
    ]
    row = {line.split("|")[1].strip(): line for line in lines if line.startswith("| `")}
    assert "mapping of name → [Task](#key-tasks-name)" in row["`tasks`"]
    assert "| required |" in row["`tasks`"]
    assert "[Retry](#key-fallback) (or null)" in row["`fallback`"]
    assert "[Retry](#key-fallback) or integer (or null)" in row["`retry`"]
    assert "one of `local`, `ssh`" in row["`runs_on`"]
    assert '`"local"`' not in row["`runs_on`"]
    assert "| `local` |" in row["`runs_on`"]
    assert "integer 1 to 10 | `3` | Attempts in all." in row["`attempts`"]


def test_the_command_reference_names_every_option_of_apply() -> None:
    text = _hooks().commands_markdown()
    section = text.split("## `fleetrun apply`", 1)[1].split("\n## ", 1)[0]
    for option in ("`-t, --targets PATTERN`", "`--mode [dag|phased|sequential]`", "`PLAN`"):
        assert option in section, option
    assert "Usage: fleetrun apply [OPTIONS] PLAN" in section


def test_the_readme_is_a_first_page_whose_links_resolve() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 250
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if "://" not in link]
    assert "docs/getting-started.md" in local
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, missing
