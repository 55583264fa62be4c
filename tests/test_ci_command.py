"""CI runs exactly the test command that the README's Development section gives."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_test_command() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Development\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, "the Development section has no sh block"
    commands = [
        line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if "pytest" in line
    ]
    assert len(commands) == 1, commands
    return commands[0]


def test_ci_runs_the_readme_test_command() -> None:
    ci = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if "pytest" in line and not line.lstrip().startswith("#")
    ]
    assert ci[0] == _readme_test_command()
    # The only other run is the process tests again on the portable path.
    assert [line.split()[0] for line in ci[1:]] == ["FLEETRUN_PLATFORM=portable"]


def test_the_suite_runs_in_worker_processes_with_a_timeout() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    options = config["tool"]["pytest"]["ini_options"]
    assert options["addopts"][:2] == ["-n", "4"]
    assert options["timeout"] > 0
    test_extra = config["project"]["optional-dependencies"]["test"]
    assert any(d.startswith("pytest-xdist") for d in test_extra)
