"""The package boundaries of ARCHITECTURE.md, checked on the source itself.

- no module imports another package's private (``_``) module;
- executors know nothing of plans, the engine or the record;
- the data flows one way: a package imports only those before it;
- ``cli/`` never runs the event loop, writes the journal or builds an executor;
- every package's ``__init__`` exports exactly its ``__all__``, and each name
  in it exists.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "fleetrun"

# Each package may import those listed (and top-level modules: errors, redact, names,
# durations, layout, runs_on, messages, textwidth, diagnostics).
ALLOWED = {
    "plan": set(),
    "executors": set(),
    "engine": {"plan", "executors"},
    "state": {"plan", "executors", "engine"},
    "session": {"plan", "executors", "engine", "state"},
    "cluster": {"plan", "executors", "engine", "state", "session"},
    "report": {"plan", "executors", "engine", "state"},
    "ui": {"plan", "executors", "engine", "state", "session", "report"},
    "cli": {"plan", "executors", "engine", "state", "session", "report", "cluster", "ui"},
}
TOP_LEVEL = {
    "errors",
    "redact",
    "names",
    "durations",
    "layout",
    "runs_on",
    "messages",
    "textwidth",
    "diagnostics",
}


def _modules() -> list[tuple[str, str, ast.Module]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        package = rel.parts[0] if len(rel.parts) > 1 else ""
        out.append((str(rel), package, ast.parse(path.read_text(encoding="utf-8"))))
    return out


def _imports(tree: ast.Module) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return found


MODULES = _modules()


def test_the_scan_sees_the_packages() -> None:
    packages = {p for _, p, _ in MODULES}
    assert {"plan", "executors", "engine", "state", "session", "report", "cli"} <= packages


@pytest.mark.parametrize(("rel", "package", "tree"), MODULES, ids=[m[0] for m in MODULES])
def test_no_private_import_across_packages_and_flow_is_one_way(
    rel: str, package: str, tree: ast.Module
) -> None:
    problems = []
    for line, name in _imports(tree):
        parts = name.split(".")
        if parts[0] != "fleetrun" or len(parts) < 2:
            continue
        other = parts[1]
        if other in TOP_LEVEL or other == package or other.startswith("__"):
            continue
        if len(parts) > 2 and parts[2].startswith("_"):
            problems.append(f"{rel}:{line} imports private {name}")
        if package and other not in ALLOWED.get(package, set()) and not other.startswith("_"):
            problems.append(f"{rel}:{line}: {package} may not import fleetrun.{other}")
    assert problems == []


def test_the_checks_catch_what_they_should() -> None:
    # The checks above, applied to known-bad source, report it.
    bad = ast.parse("from fleetrun.plan._graph import Graph\nimport fleetrun.plan\n")
    names = [n for _, n in _imports(bad)]
    assert "fleetrun.plan._graph" in names
    assert "fleetrun.plan" in names
    assert "plan" not in ALLOWED["executors"]


def test_cli_never_runs_the_loop_writes_the_journal_or_builds_an_executor() -> None:
    problems = []
    for rel, package, tree in MODULES:
        if package != "cli":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
                owner = (
                    f.value.id
                    if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)
                    else ""
                )
                if (
                    (owner, name) == ("asyncio", "run")
                    or name
                    in (
                        "JournalWriter",
                        "Journal",
                        "RunLock",
                        "LocalExecutor",
                        "run_graph",
                    )
                    or name.endswith("Executor")
                ):
                    problems.append(
                        f"{rel}:{node.lineno}: calls {owner + '.' if owner else ''}{name}"
                    )
    assert problems == []


PACKAGES = sorted(p.name for p in SRC.iterdir() if (p / "__init__.py").is_file())


@pytest.mark.parametrize("name", PACKAGES)
def test_each_package_exports_its_public_names(name: str) -> None:
    module = importlib.import_module(f"fleetrun.{name}")
    exported = getattr(module, "__all__", None)
    assert isinstance(exported, list), f"fleetrun.{name} has no __all__"
    assert len(set(exported)) == len(exported)
    missing = [n for n in exported if not hasattr(module, n)]
    assert missing == []
    assert all(not n.startswith("_") for n in exported)


def test_the_plan_reads_executor_options_without_loading_executors() -> None:
    # The options classes live in the light top-level ``runs_on``: loading a plan that
    # uses every kind and its keys imports no executor module (no pidfd, /proc,
    # prctl, ctypes), no asyncssh and no Dask.
    code = (
        "import sys\n"
        "from fleetrun.plan import load_plan_text\n"
        "plan = load_plan_text(\n"
        "    'targets: {a: {}}\\ntasks:\\n'\n"
        "    '  l: {run: x, keep_running: true}\\n'\n"
        "    '  s: {run: x, runs_on: ssh, for_each: all}\\n'\n"
        "    '  c: {run: x, runs_on: cluster, resources: {GPU: 1}}\\n'\n"
        ")\n"
        "print(sorted(type(t.executor_options).__name__ for t in plan.tasks.values()))\n"
        "heavy = ('fleetrun.executors', 'fleetrun.engine', 'ctypes', 'asyncssh', 'distributed')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m in heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [
        "['ClusterOptions', 'LocalOptions', 'SSHOptions']",
        "[]",
    ]


def test_the_options_module_imports_nothing_of_fleetrun() -> None:
    # ``runs_on`` sits below both the plan and the executors: it may import neither.
    tree = next(t for rel, _, t in MODULES if rel == "runs_on.py")
    assert [n for _, n in _imports(tree) if n.startswith("fleetrun")] == []
