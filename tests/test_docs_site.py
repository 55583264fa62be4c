"""The documentation site builds without a warning, and its generated references
cover the program and are committed as the program makes them now.

``mkdocs build --strict`` fails on a broken link or anchor and on a page left
out of the navigation. The plan-key reference is rendered from the plan's JSON
Schema and the command reference from the click commands (``docs/_hooks.py``),
and both pages are committed, so that a reader of the repository sees them;
the renderer is also checked on a schema in pydantic's layout (``$defs``,
``$ref``, ``anyOf`` with ``null``), the one ``model_json_schema()`` writes.
The pages' relative links resolve in the repository too, as on GitHub.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Annotated, Literal

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
    assert "<h2" in keys.split("fleetrun:plan-keys", 1)[1]
    assert "<h2" in commands.split("fleetrun:commands", 1)[1]
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
        "## The plan file (top level)",
        "## `tasks.<name>`",
        "## `fallback`",
    ]
    row = {line.split("|")[1].strip(): line for line in lines if line.startswith("| `")}
    # A nested model is a mapping whose keys its section lists (anchors as GitHub makes them).
    assert "mapping of name → mapping (see [`tasks.<name>`](#tasksname))" in row["`tasks`"]
    assert "| required |" in row["`tasks`"]
    assert "mapping (see [`fallback`](#fallback)) (or null) | none |" in row["`fallback`"]
    assert "mapping (see [`fallback`](#fallback)) or integer (or null)" in row["`retry`"]
    assert "Retry" not in row["`retry`"].split("|")[2]
    assert "one of `local`, `ssh`" in row["`runs_on`"]
    assert '`"local"`' not in row["`runs_on`"]
    assert "| `local` |" in row["`runs_on`"]
    assert "integer 1 to 10 | `3` | Attempts in all." in row["`attempts`"]


def test_the_key_reference_words_alternatives_bounds_and_defaults() -> None:
    pydantic = pytest.importorskip("pydantic")
    percent = r"^\s*\d+(\.\d+)?\s*%\s*$"
    size = Annotated[int, pydantic.Field(ge=1)] | Annotated[str, pydantic.Field(pattern=percent)]

    class Need(pydantic.BaseModel):
        task: str

    class Plan(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="forbid")
        waves: list[size] | size = pydantic.Field(description="Wave sizes.")
        needs: (
            list[Annotated[str, pydantic.Field(pattern=r"^[A-Za-z_]\w*$")] | Need] | str | None
        ) = None
        decrease: float | None = pydantic.Field(
            None, gt=0, lt=1.0, description="Multiplies the rate (default 0.9)."
        )
        margin: float = pydantic.Field(0.03, gt=0, le=0.5, description="How far under.")
        burst: int | None = pydantic.Field(None, description="Bucket size, default 1.")
        host: str | None = pydantic.Field(None, description="The host. Default: the name.")
        pause: bool = pydantic.Field(False, description="Wait (default false: go on).")
        env: dict[str, str | int] | None = None

    text = _hooks().plan_keys_markdown(Plan.model_json_schema())
    row = {line.split("|")[1].strip(): line.split("|")[2:4] for line in text.splitlines()
           if line.startswith("| `")}  # fmt: skip
    takes = {key: cells[0].strip() for key, cells in row.items()}
    default = {key: cells[1].strip() for key, cells in row.items()}
    assert takes["`waves`"] == (
        "list of (integer ≥ 1 or percentage like `'10%'`), or one such value"
    )
    assert takes["`needs`"] == (
        "list of (name or mapping (see [`needs`](#needs))) or text (or null)"
    )
    assert takes["`decrease`"] == "number, 0 < x < 1 (or null)"
    assert takes["`margin`"] == "number, 0 < x ≤ 0.5"
    assert takes["`env`"] == "mapping of name → (text or integer) (or null)"
    assert default == {
        "`waves`": "required", "`needs`": "none", "`decrease`": "`0.9`", "`margin`": "`0.03`",
        "`burst`": "`1`", "`host`": "the name", "`pause`": "`false`", "`env`": "none",
        "`task`": "required",
    }  # fmt: skip


def test_the_generated_pages_are_committed_as_the_program_makes_them() -> None:
    # In a fresh process, as a developer runs it (this process's click objects may
    # carry what other tests did to them), and whatever the terminal's width.
    for columns in ("40", "200"):
        env = {**os.environ, "COLUMNS": columns}
        proc = subprocess.run([sys.executable, "docs/_hooks.py", "--check"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
        assert proc.returncode == 0, proc.stderr


def test_a_stale_generated_page_is_reported_with_the_command_to_run(tmp_path: Path) -> None:
    hooks = _hooks()
    shutil.copytree(ROOT / "docs" / "reference", tmp_path / "docs" / "reference")
    page = tmp_path / "docs" / "reference" / "commands.md"
    text = page.read_text(encoding="utf-8")
    page.write_text(text + "| `--gone` | an option the program no longer has |\n", encoding="utf-8")
    hooks.ROOT = tmp_path
    assert hooks.generated_page("docs/reference/commands.md") != page.read_text()
    assert hooks.main(["--check"]) == 1
    assert hooks.main(["--write"]) == 0
    assert hooks.generated_page("docs/reference/commands.md") == page.read_text()


def test_the_command_reference_names_every_option_of_apply() -> None:
    text = _hooks().commands_markdown()
    section = text.split("## `fleetrun apply`", 1)[1].split("\n## ", 1)[0]
    for option in ("`-t, --targets PATTERN`", "`--mode [dag|phased|sequential]`"):
        assert option in section, option
    assert "| `PLAN` | the plan file (YAML) |" in section
    assert "Usage: fleetrun apply [OPTIONS] PLAN" in section


def test_every_argument_of_the_command_reference_has_a_meaning() -> None:
    rows = [line for line in _hooks().commands_markdown().splitlines()
            if re.match(r"^\| `[\[A-Z]", line)]  # fmt: skip
    assert len(rows) >= 10
    empty = [row for row in rows if not row.split("|")[2].strip()]
    assert not empty, empty


def test_the_cluster_group_lists_every_cluster_command() -> None:
    from click.testing import CliRunner

    from fleetrun.cli import cli
    from fleetrun.cli._cluster_cmd import cluster

    names = list(cluster.commands)
    assert "retire" in names
    out = CliRunner().invoke(cli, ["cluster", "--help"]).output
    assert "The compute cluster: " + ", ".join(names) + "." in " ".join(out.split())
    glance = (ROOT / "docs" / "reference" / "commands.md").read_text(encoding="utf-8")
    assert f"`fleetrun cluster {'|'.join(names)}`" in glance


def test_the_pages_relative_links_resolve_in_the_repository() -> None:
    """A GitHub reader follows the links of docs/ to files of the repository."""
    broken = []
    for page in sorted((ROOT / "docs").glob("**/*.md")):
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" not in link and not (page.parent / link).exists():
                broken.append(f"{page.relative_to(ROOT)}: {link}")
    assert not broken, broken


def test_the_readme_is_a_first_page_whose_links_resolve() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 250
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if "://" not in link]
    assert "docs/getting-started.md" in local
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, missing
