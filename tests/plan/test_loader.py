"""Loading valid plans: table-driven facts, files, hashes, secrets and the schema."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from fleetrun.errors import Location, PlanError
from fleetrun.plan import load_plan, load_plan_text, plan_json_schema
from fleetrun.plan._yaml import load_yaml, to_python


def test_valid_case(valid_case: dict[str, Any], run_valid_case: Any) -> None:
    run_valid_case(valid_case)


# --- files, hashes, paths ---------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


PLAN = """\
name: demo
env_file: .env
targets: fleet/targets.yaml
tasks:
  t: {for_each: all, cwd: scripts, run: "echo {{ target.name }}"}
"""


def test_load_plan_reads_side_files_and_hashes_them(tmp_path: Path) -> None:
    plan_file = _write(tmp_path / "ops" / "plan.yaml", PLAN)
    targets = _write(tmp_path / "ops" / "fleet" / "targets.yaml", "a: {}\nb: {}\n")
    env = _write(tmp_path / "ops" / ".env", "A=1\n")
    plan = load_plan(plan_file)
    assert plan.path == plan_file
    assert plan.base_dir == (tmp_path / "ops").resolve()
    assert plan.tasks["t"].cwd == str((tmp_path / "ops" / "scripts").resolve())
    assert list(plan.targets) == ["a", "b"]
    assert plan.env == {"A": "1"}
    expected = hashlib.sha256(plan_file.read_bytes())
    expected.update(b"\0" + env.read_bytes())
    expected.update(b"\0" + targets.read_bytes())
    assert plan.source_hash == expected.hexdigest()
    # Changing any of the three files changes the hash; rewriting the same bytes does not.
    hashes = {plan.source_hash}
    targets.write_text("a: {}\nb: {}\nc: {}\n")
    hashes.add(load_plan(plan_file).source_hash)
    env.write_text("A=2\n")
    hashes.add(load_plan(plan_file).source_hash)
    plan_file.write_text(PLAN.replace("demo", "demo2"))
    hashes.add(load_plan(plan_file).source_hash)
    assert len(hashes) == 4
    assert load_plan(plan_file).source_hash in hashes


def test_source_hash_of_a_plain_plan_is_sha256_of_its_bytes(tmp_path: Path) -> None:
    text = "tasks:\n  t: {run: x}\n"
    plan_file = _write(tmp_path / "p.yaml", text)
    digest = hashlib.sha256(text.encode()).hexdigest()
    assert load_plan(plan_file).source_hash == digest
    assert load_plan_text(text).source_hash == digest
    assert load_plan(plan_file).name == "p"


def test_load_plan_text_resolves_files_under_base_dir(tmp_path: Path) -> None:
    _write(tmp_path / "fleet" / "targets.yaml", "x: {zone: 1}\n")
    _write(tmp_path / ".env", "export K=v\n")
    plan = load_plan_text(PLAN, base_dir=tmp_path)
    assert plan.path is None
    assert plan.base_dir == tmp_path.resolve()
    assert plan.targets["x"].attrs == {"zone": 1}
    assert plan.env == {"K": "v"}
    with pytest.raises(PlanError) as info:
        load_plan_text(PLAN, path="elsewhere/plan.yaml", base_dir=tmp_path / "nope")
    messages = [d.message for d in info.value.diagnostics]
    assert len(messages) == 2
    assert "cannot read env_file" in messages[0]
    assert "cannot read the targets file" in messages[1]
    assert {d.location.file for d in info.value.diagnostics if d.location} == {
        "elsewhere/plan.yaml"
    }


@pytest.mark.parametrize("kind", ["missing", "directory", "binary"])
def test_unreadable_plan_files_are_plan_errors(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "plan.yaml"
    if kind == "directory":
        path.mkdir()
    elif kind == "binary":
        path.write_bytes(b"tasks:\n  t: {run: \xff\xfe}\n")
    with pytest.raises(PlanError) as info:
        load_plan(path)
    (d,) = info.value.diagnostics
    assert d.location == Location(str(path), 1, 1)
    assert d.fix
    assert str(info.value).startswith(f"{path}:1:1: ")


def test_process_environment_secrets_are_collected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOY_KEY_X", "from-the-shell")
    monkeypatch.delenv("UNSET_SECRET_X", raising=False)
    plan = load_plan_text(
        "secrets: [DEPLOY_KEY_X, UNSET_SECRET_X]\nenv: {SHORT_TOKEN: ''}\ntasks: {t: {run: x}}\n"
    )
    assert plan.secret_values == frozenset({"from-the-shell"})
    assert plan.secrets == frozenset({"DEPLOY_KEY_X", "UNSET_SECRET_X", "SHORT_TOKEN"})


def test_ten_thousand_targets_load_with_groups(tmp_path: Path) -> None:
    lines = ["targets:"]
    lines += [
        f"  r{i}: {{role: {'admin' if i % 100 == 0 else 'v'}, n: {i}}}" for i in range(10_000)
    ]
    lines += ["groups:", "  v: {where: \"role == 'v' and n >= 5000\"}", "tasks:"]
    lines += [
        f"  t{j}: {{for_each: v, needs: [t{j - 1}], run: 'echo {{{{ target.n }}}}'}}"
        for j in range(1, 10)
    ]
    lines.append("  t0: {for_each: v, run: 'echo {{ target.name }}'}")
    plan = load_plan(_write(tmp_path / "big.yaml", "\n".join(lines) + "\n"))
    assert len(plan.targets) == 10_000
    assert len(plan.groups["v"]) == 4_950
    assert plan.groups["v"][0] == "r5001"
    assert plan.tasks["t9"].targets == plan.groups["v"]
    assert plan.tasks["t5"].run.render(plan.targets["r5001"], plan.vars) == "echo 5001"


# --- JSON Schema --------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def deref(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """``node``, or the definition its ``$ref`` points at."""
    ref = node.get("$ref")
    return schema["$defs"][ref.rsplit("/", 1)[1]] if ref else node


def _schema_errors(text: str) -> list[str]:
    validator = jsonschema.Draft202012Validator(plan_json_schema())
    data = to_python(load_yaml(text, "x.yaml", []))
    return [e.message for e in validator.iter_errors(data)]


def test_schema_is_valid_draft_2020_12_with_descriptions() -> None:
    schema = plan_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    props = schema["properties"]
    assert set(props) == {
        "name",
        "description",
        "env_file",
        "env",
        "secrets",
        "secret_patterns",
        "vars",
        "targets",
        "groups",
        "pools",
        "rollout",
        "defaults",
        "phases",
        "tasks",
        "ssh",
        "cluster",
    }
    task = deref(schema, props["tasks"]["additionalProperties"])["properties"]
    assert set(task) == {
        "run",
        "description",
        "phase",
        "for_each",
        "needs",
        "pools",
        "timeout",
        "retry",
        "success",
        "env",
        "cwd",
        "estimate",
        "runs_on",
        "allow_empty",
        "script",
        "keep_running",
        "resources",
    }
    # Every key of every object in the schema is described (editor completion shows it).
    undocumented: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for k, v in node.get("properties", {}).items():
                if not isinstance(v, dict) or "description" not in v:
                    undocumented.append(f"{path}.{k}")
            for k, v in node.items():
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    walk(schema, "")
    assert undocumented == []
    assert plan_json_schema() is not plan_json_schema()


def test_every_valid_case_matches_the_schema(valid_case: dict[str, Any]) -> None:
    assert _schema_errors(valid_case["plan"]) == []


@pytest.mark.parametrize(
    "text",
    [
        "tasks: {a: {run: x, nedds: [b]}}",
        "taks: {a: {run: x}}",
        "tasks: {a: {phase: x}}",
        "pools: {p: {adaptive: true}}\ntasks: {a: {run: x}}",
        "tasks: {a: {run: x, timeout: soon}}",
        "groups: {all: [a]}\ntasks: {a: {run: x}}",
        "tasks: {a: {run: x, needs: [{task: b, at_least: 0}]}}",
        "pools: {p: {rate: fast}}\ntasks: {a: {run: x}}",
    ],
)
def test_the_schema_rejects_what_the_loader_rejects(text: str) -> None:
    assert _schema_errors(text) != []
    with pytest.raises(PlanError):
        load_plan_text(text)


def test_examples_load_and_match_the_schema() -> None:
    plans = sorted(EXAMPLES.rglob("*.yaml"))
    plans = [p for p in plans if "tasks:" in p.read_text()]
    assert len(plans) >= 5  # quickstart and the four chain138 plans
    for path in plans:
        assert _schema_errors(path.read_text()) == [], path
        assert load_plan(path).tasks, path


def test_schema_command_prints_the_schema() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "fleetrun", "schema"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == plan_json_schema()
    compact = subprocess.run(
        [sys.executable, "-m", "fleetrun", "schema", "--indent", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert compact.stdout.count("\n") == 1
    assert json.loads(compact.stdout) == plan_json_schema()


def test_plan_command_reports_every_problem_with_exit_2(tmp_path: Path) -> None:
    bad = _write(
        tmp_path / "bad.yaml",
        "tasks:\n  a: {run: x, needs: [b]}\n  b: {run: x, needs: [a], timout: 5s}\n",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "fleetrun", "plan", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"{bad}:3:27: tasks.b.timout: unknown key 'timout' (did you mean 'timeout'?)" in (
        proc.stderr
    )
    assert f"{bad}:3:23: tasks.b.needs[0]: needs form a cycle: a -> b -> a" in proc.stderr
    assert "2 problems" in proc.stderr
