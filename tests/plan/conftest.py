"""Table-driven plan cases: ``cases/*.yaml`` hold plan texts and what they must give.

Each case file is a list of cases::

    - name: what the case shows
      plan: |            # the plan file, written as plan.yaml in a fresh directory
        tasks: ...
      files:             # optional side files next to it (targets file, env_file)
        fleet.yaml: "..."
      env: {NAME: value} # optional process environment for the load
      expect:            # facts about the resolved Plan: dotted path -> value
        tasks.k8s.needs[0].mode: auto
      render:            # commands rendered from task templates
        - {task: deploy, target: "a; rm -rf ~", outputs: {...}, equals: "..."}
      errors:            # or: every expected diagnostic, in order
        - {at: "plan.yaml:3:5", key: tasks.a.run, message: fragment, fix: fragment}

A case has either ``errors`` or ``expect``/``render``. With ``errors`` the list
must match the diagnostics one to one: the loader reports everything at once.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleetrun.errors import PlanError
from fleetrun.plan import Plan, Template, load_plan

CASES_DIR = Path(__file__).parent / "cases"


def load_cases(with_errors: bool) -> list[Any]:
    """pytest params for every case (only error cases, or only valid ones)."""
    params = []
    for path in sorted(CASES_DIR.glob("*.yaml")):
        for i, case in enumerate(yaml.safe_load(path.read_text()) or []):
            if ("errors" in case) == with_errors:
                ident = f"{path.stem}:{case.get('name', i)}"
                params.append(pytest.param(case, id=ident))
    return params


def _write_case(case: Mapping[str, Any], root: Path) -> Path:
    for name, text in (case.get("files") or {}).items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    plan = root / "plan.yaml"
    plan.write_text(case["plan"])
    return plan


def load_case(case: Mapping[str, Any], root: Path, monkeypatch: pytest.MonkeyPatch) -> Plan:
    """Write the case's files under ``root`` and load its plan as ``plan.yaml``."""
    _write_case(case, root)
    for k, v in (case.get("env") or {}).items():
        monkeypatch.setenv(k, str(v))
    monkeypatch.chdir(root)
    return load_plan("plan.yaml")


def normalize(value: Any) -> Any:
    """Plan values in the shapes YAML can write: lists, dicts, scalars."""
    if isinstance(value, Template):
        return value.source
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, frozenset | set):
        return sorted(normalize(v) for v in value)
    if isinstance(value, tuple | list):
        return [normalize(v) for v in value]
    if isinstance(value, Mapping):
        return {k: normalize(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: normalize(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def dig(plan: Plan, path: str) -> Any:
    """The value at a dotted path such as ``tasks.k8s.needs[0].mode``."""
    cur: Any = plan
    for m in _STEP.finditer(path):
        name, index = m.group(1), m.group(2)
        if index is not None:
            cur = list(cur)[int(index)]
        elif isinstance(cur, Mapping):
            cur = cur[name]
        else:
            cur = getattr(cur, name)
    return cur


def check_error_case(case: Mapping[str, Any], root: Path, mp: pytest.MonkeyPatch) -> None:
    """The case's plan must fail with exactly the listed diagnostics, in order."""
    with pytest.raises(PlanError) as info:
        load_case(case, root, mp)
    got = info.value.diagnostics
    want = case["errors"]
    shown = "\n".join(str(d) for d in got)
    assert len(got) == len(want), f"expected {len(want)} diagnostics, got:\n{shown}"
    for d, w in zip(got, want, strict=True):
        assert d.location is not None, shown
        where = f"{d.location.file}:{d.location.line}:{d.location.column}"
        at = w["at"] if w["at"].count(":") == 2 else f"plan.yaml:{w['at']}"
        assert where == at, f"{d} is not at {at}\n{shown}"
        assert w["message"] in d.message, f"{w['message']!r} not in {d.message!r}"
        if "key" in w:
            assert d.key == w["key"], shown
        if "fix" in w:
            assert w["fix"] in d.fix, f"{w['fix']!r} not in {d.fix!r}"
        assert d.fix, f"diagnostic without a fix: {d}"
        # Every diagnostic prints as file:line:column: key: message.
        assert str(d).startswith(f"{where}: ")


def check_valid_case(case: Mapping[str, Any], root: Path, mp: pytest.MonkeyPatch) -> None:
    """The case's plan must load and have every listed fact and rendering."""
    try:
        plan = load_case(case, root, mp)
    except PlanError as e:
        pytest.fail(f"unexpected plan error:\n{e}")
    for path, want in (case.get("expect") or {}).items():
        assert normalize(dig(plan, path)) == want, path
    for r in case.get("render") or []:
        task = plan.tasks[r["task"]]
        target = plan.targets[r["target"]] if r.get("target") is not None else None
        got = task.run.render(target, plan.vars, r.get("outputs") or {})
        assert got == r["equals"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``error_case``/``valid_case`` arguments with the case files."""
    for name, with_errors in (("error_case", True), ("valid_case", False)):
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, load_cases(with_errors))


@pytest.fixture
def run_error_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Check an error case in a fresh directory."""
    return lambda case: check_error_case(case, tmp_path, monkeypatch)


@pytest.fixture
def run_valid_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Check a valid case in a fresh directory."""
    return lambda case: check_valid_case(case, tmp_path, monkeypatch)
