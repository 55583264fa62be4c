"""``apply --targets``: what a selection pulls in is said (or refused with ``--only``);
exact names with commas are selectable; a task with no instances is refused."""

from __future__ import annotations

from pathlib import Path

from ._helpers import fleetrun, show_json

PLAN = """\
name: sel
targets:
  eu-west: {}
  "us,east": {}
  ap-south: {}
tasks:
  infra: {for_each: all, run: "true"}
  contract:
    needs: [{task: infra, at_least: "67%"}]
    run: "true"
  verify: {for_each: all, needs: [infra, contract], run: "true"}
"""


def _plan(tmp_path: Path, text: str = PLAN) -> Path:
    p = tmp_path / "plan.yaml"
    p.write_text(text)
    return p


def test_a_selection_says_what_it_pulls_in_and_why(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    done = fleetrun("apply", str(plan), "--plain", "--targets", "eu-west")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    at = lines.index("also runs 3 instance(s) the selection needs:")
    pulled = sorted(line.split(":")[0].strip() for line in lines[at + 1 : at + 4])
    assert pulled == ["contract", "infra@ap-south", "infra@us,east"]
    assert any("needed by verify@eu-west" in line for line in lines[at + 1 : at + 4])
    # What ran is exactly the named instances and what they need.
    ran = {i["key"] for i in show_json(tmp_path / ".fleetrun")["instances"]}
    assert ran == {"verify@eu-west", "infra@eu-west", "contract", "infra@ap-south", "infra@us,east"}


def test_only_refuses_a_selection_that_needs_more(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    refused = fleetrun("apply", str(plan), "--only", "--targets", "eu-west")
    assert refused.returncode == 2
    assert "--only: the selection needs 3 instance(s) it does not name" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / ".fleetrun" / "state.db").exists()
    # A selection that needs nothing unnamed runs under --only.
    ok = fleetrun("apply", str(plan), "--only", "--tasks", "infra", "--plain")
    assert ok.returncode == 0, ok.stderr
    assert "also runs" not in ok.stdout


def test_a_target_name_with_a_comma_is_selectable(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    done = fleetrun("apply", str(plan), "--plain", "--targets", "us,east", "--tasks", "infra")
    assert done.returncode == 0, done.stderr
    ran = {i["key"] for i in show_json(tmp_path / ".fleetrun")["instances"]}
    assert ran == {"infra@us,east"}


def test_a_task_over_an_empty_group_is_refused_unless_allowed(tmp_path: Path) -> None:
    text = PLAN + "groups:\n  gpu: {where: \"kind == 'gpu'\"}\n"
    text = text.replace(
        'verify: {for_each: all, needs: [infra, contract], run: "true"}',
        'verify: {for_each: all, needs: [infra, contract], run: "true"}\n'
        '  train: {for_each: gpu, run: "true"}',
    )
    plan = _plan(tmp_path, text)
    refused = fleetrun("apply", str(plan))
    assert refused.returncode == 2
    assert "train" in refused.stderr
    assert "gpu" in refused.stderr
    assert not (tmp_path / ".fleetrun" / "state.db").exists()
    allowed = _plan(tmp_path, text.replace("{for_each: gpu,", "{for_each: gpu, allow_empty: true,"))
    assert fleetrun("apply", str(allowed), "--plain").returncode == 0
