"""What the wheel ships: fleetrun's own modules and its declared package data, nothing else.

The wheel's ``fleetrun/`` tree is exactly what setuptools' ``build_py`` writes from
the ``[tool.setuptools]`` settings in pyproject.toml, so the test runs ``build_py``
on a copy of ``src/`` and ``pyproject.toml`` (about a second, no network, no
``wheel`` package needed) and checks the file list.
"""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The package data pyproject.toml declares, relative to fleetrun/.
PACKAGE_DATA = ["py.typed", "report/*.html", "report/*.js", "report/*.css", "ui/static/*"]

# Modules for tests and benchmarks that ship on purpose: the loopback sshd behind
# `python -m fleetrun.executors.testing DIR` (the hosts example in the README), and
# the in-code plan builders and simulators that bench/ imports from an installed
# fleetrun. Anything else of the kind belongs under tests/.
SHIPPED_TEST_SUPPORT = {
    "fleetrun/executors/testing.py",
    "fleetrun/engine/testing.py",
    "fleetrun/engine/testing_limits.py",
}


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The files the wheel puts in site-packages, as paths like ``fleetrun/cli/__init__.py``."""
    work = tmp_path_factory.mktemp("build")
    shutil.copytree(
        ROOT / "src",
        work / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )
    shutil.copy(ROOT / "pyproject.toml", work)
    shutil.copy(ROOT / "README.md", work)
    subprocess.run(
        [
            sys.executable,
            "-W",
            "ignore",
            "-c",
            "from setuptools import setup; "
            "setup(script_args=['-q', 'build_py', '--build-lib', 'out'])",
        ],
        cwd=work,
        check=True,
        capture_output=True,
        timeout=60,
    )
    out = work / "out"
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())


def test_only_fleetrun_modules_and_declared_data(shipped: list[str]) -> None:
    assert "fleetrun/__init__.py" in shipped
    assert "fleetrun/py.typed" in shipped
    strays = [
        f
        for f in shipped
        if not f.startswith("fleetrun/")
        or not (
            f.endswith(".py")
            or any(fnmatch.fnmatch(f.removeprefix("fleetrun/"), g) for g in PACKAGE_DATA)
        )
    ]
    assert strays == []


def test_every_module_in_src_ships(shipped: list[str]) -> None:
    src = ROOT / "src"
    modules = {
        p.relative_to(src).as_posix()
        for p in (src / "fleetrun").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert modules - set(shipped) == set()


def test_no_test_helpers_ship(shipped: list[str]) -> None:
    names = [f.rsplit("/", 1)[-1] for f in shipped]
    assert [n for n in names if n == "conftest.py" or n.startswith("test_")] == []
    assert [f for f in shipped if "/tests/" in f or "/examples/" in f or "/bench/" in f] == []
    support = {f for f in shipped if f.rsplit("/", 1)[-1].startswith(("testing", "_helpers"))}
    assert support == SHIPPED_TEST_SUPPORT


def test_no_wheels_or_generated_output_committed() -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "*.whl", "examples/prover/results"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert listed == []
