"""``fleetrun plan`` on the shipped examples and on broken plans, through click."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from fleetrun.cli import cli

ROOT = Path(__file__).resolve().parents[2]
CHAIN138 = ROOT / "examples" / "chain138"
CONTRACTS = [
    "multicall",
    "weth9",
    "weth10",
    "ccip-router",
    "oracle",
    "ccip-weth9-bridge",
    "ccip-weth10-bridge",
    "multisig",
]
PER_REGION = ["infra", "k8s", "besu", "verify-region"]


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def fleet_validators() -> list[str]:
    """Validator regions straight from fleet.yaml, in file order."""
    import yaml

    fleet = yaml.safe_load((CHAIN138 / "fleet.yaml").read_text())
    return [name for name, attrs in fleet.items() if attrs.get("role") != "admin"]


@pytest.fixture(scope="module")
def chain138() -> dict[str, Any]:
    result = run_cli("plan", str(CHAIN138 / "plan.yaml"), "--format", "json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_fleet_has_24_validators_and_one_admin() -> None:
    validators = fleet_validators()
    assert len(validators) == 24
    assert "westeurope" not in validators
    assert {"uksouth", "japaneast", "northeurope", "eastus"} <= set(validators)


def test_json_one_node_per_instance(chain138: dict[str, Any]) -> None:
    nodes = chain138["nodes"]
    validators = fleet_validators()
    # 4 per-region tasks x 24 + monitoring + 8 contracts + verify-contracts.
    assert len(nodes) == 4 * 24 + 1 + 8 + 1
    assert [n["id"] for n in nodes] == list(range(len(nodes)))
    assert len({n["key"] for n in nodes}) == len(nodes)
    for task in PER_REGION:
        targets = [n["target"] for n in nodes if n["task"] == task]
        assert targets == validators  # all 24, fleet order, never the admin region
    assert [n["key"] for n in nodes if n["target"] == "westeurope"] == ["monitoring@westeurope"]
    by_key = {n["key"]: n for n in nodes}
    assert by_key["monitoring@westeurope"]["phase"] == "kubernetes"


def test_json_edges(chain138: dict[str, Any]) -> None:
    by_key = {n["key"]: n for n in chain138["nodes"]}
    assert by_key["k8s@uksouth"]["needs"] == [
        {"task": "infra", "nodes": ["infra@uksouth"], "at_least": 1}
    ]
    assert by_key["besu@japaneast"]["needs"] == [
        {"task": "k8s", "nodes": ["k8s@japaneast"], "at_least": 1}
    ]
    (quorum,) = by_key["multicall"]["needs"]
    assert quorum["task"] == "besu"
    assert len(quorum["nodes"]) == 24
    assert quorum["at_least"] == 17  # ceil(67% of 24)
    assert [r["task"] for r in by_key["ccip-router"]["needs"]] == ["multicall", "weth9", "weth10"]
    assert by_key["verify-region@eastus"]["needs"] == [
        {"task": "besu", "nodes": ["besu@eastus"], "at_least": 1},
        {"task": "ccip-router", "nodes": ["ccip-router"], "at_least": 1},
    ]
    assert {r["task"] for r in by_key["verify-contracts"]["needs"]} == set(CONTRACTS)
    assert {r["task"] for r in by_key["multisig"]["needs"]} == {
        "ccip-weth9-bridge",
        "ccip-weth10-bridge",
    }


def test_contracts_dag_spans_four_levels(chain138: dict[str, Any]) -> None:
    level = {n["key"]: n["level"] for n in chain138["nodes"]}
    contract_levels = sorted({level[c] for c in CONTRACTS})
    assert len(contract_levels) == 4
    assert contract_levels == list(range(contract_levels[0], contract_levels[0] + 4))
    first = contract_levels[0]
    assert {c for c in CONTRACTS if level[c] == first} == {"multicall", "weth9", "weth10"}
    assert {c for c in CONTRACTS if level[c] == first + 1} == {"ccip-router", "oracle"}
    assert {c for c in CONTRACTS if level[c] == first + 2} == {
        "ccip-weth9-bridge",
        "ccip-weth10-bridge",
    }
    assert {c for c in CONTRACTS if level[c] == first + 3} == {"multisig"}
    # levels list the same nodes as the per-node level numbers
    for n, keys in enumerate(chain138["levels"]):
        assert all(level[k] == n for k in keys)
    assert sum(len(keys) for keys in chain138["levels"]) == len(chain138["nodes"])
    assert "waves" not in chain138
    assert chain138["format"] == "fleetrun.plan/2"


def test_critical_path_and_makespans(chain138: dict[str, Any]) -> None:
    path = chain138["critical_path"]
    by_key = {n["key"]: n for n in chain138["nodes"]}
    assert path[0].startswith("infra@")
    assert path[-1] == "verify-contracts"
    assert chain138["critical_path_length"] == pytest.approx(
        sum(by_key[k]["estimate"] for k in path)
    )
    assert by_key[path[0]]["rank"] == pytest.approx(chain138["critical_path_length"])
    # Without the rollout, the modes are ordered; its waves only ever slow a mode down.
    span = chain138["makespan"]
    free = chain138["rollout"]["makespan_without_rollout"]
    assert span["lower_bound"] <= free["dag"] <= free["phased"] <= free["sequential"]
    for mode in ("sequential", "phased", "dag"):
        assert free[mode] <= span[mode] <= span["sequential"]
    assert span["sequential"] == free["sequential"] == pytest.approx(chain138["total_work"])
    assert span["dag"] > free["dag"]  # canary, 8, the rest: three rounds of infra, k8s, besu


def test_rollout_waves(chain138: dict[str, Any]) -> None:
    rollout = chain138["rollout"]
    validators = fleet_validators()
    # canary, 8, "100%": the fleet is every target some task fans out over (the
    # admin region too: monitoring runs there), in plan order.
    fleet = [t for t in chain138["targets"] if t in {*validators, "westeurope"}]
    assert [len(w) for w in rollout["waves"]] == [2, 8, 15]
    assert [t for w in rollout["waves"] for t in w] == [
        *rollout["waves"][0],
        *[t for t in fleet if t not in rollout["waves"][0]],
    ]
    assert rollout["sizes"] == ["canary", 8, "100%"]
    assert rollout["max_failed"] == "25%"
    assert rollout["pause"] is False


def test_text_view() -> None:
    result = run_cli("plan", str(CHAIN138 / "plan.yaml"), "-j", "8")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "plan chain-138" in out
    assert "25 targets, 14 tasks, 106 task instances" in out
    for task in PER_REGION:
        assert f"{task} (24)" in out
    assert "levels (8; a level starts when what it needs has finished)" in out
    assert re.search(r"^\s+level 4\s+3 instances\s+multicall, weth9, weth10$", out, re.M)
    assert re.search(r"^\s+level 7\s+1 instance\s+multisig$", out, re.M)
    assert "rollout (3 waves over 25 targets, sizes [canary, 8, 100%])" in out
    assert re.search(r"^\s+wave 2\s+8 targets\s+\S+, .*\.\.\. \(\d more\)$", out, re.M)
    section = out.split("critical path (", 1)[1].split("\n\n", 1)[0]
    cp_lines = section.splitlines()[1:]
    assert cp_lines[0].split()[0].startswith("infra@")
    assert cp_lines[-1].split()[0] == "verify-contracts"
    assert "estimated makespan at -j 8" in out
    for mode in ("sequential", "phased", "dag", "lower bound"):
        assert re.search(rf"^\s+{mode}\s+\d", out, re.M)
    assert re.search(r"^\s+rollout\s+without$", out, re.M)
    # Grouped by task: no per-region lists (a rollout wave names its first few targets).
    assert "westeurope" not in out.split("\nrollout (", 1)[0]
    assert len(out.splitlines()) < 65  # one screen, rollout waves included


def test_dot_and_mermaid_are_complete(chain138: dict[str, Any]) -> None:
    n_nodes = len(chain138["nodes"])
    n_edges = sum(len(r["nodes"]) for n in chain138["nodes"] for r in n["needs"])
    dot = run_cli("plan", str(CHAIN138 / "plan.yaml"), "--format", "dot")
    assert dot.exit_code == 0
    text = dot.stdout
    assert text.startswith('digraph "chain-138" {')
    assert text.rstrip().endswith("}")
    assert text.count("{") == text.count("}")
    assert len(re.findall(r"^\s+n\d+ \[label=", text, re.M)) == n_nodes
    assert len(re.findall(r"^\s+n\d+ -> n\d+", text, re.M)) == n_edges
    assert len(re.findall(r"style=dashed", text)) == 3 * 24  # the three quorum needs
    assert text.count("subgraph cluster_") == 5

    mer = run_cli("plan", str(CHAIN138 / "plan.yaml"), "--format", "mermaid")
    assert mer.exit_code == 0
    lines = mer.stdout.splitlines()
    assert lines[0] == "flowchart LR"
    assert len([x for x in lines if re.fullmatch(r'\s+n\d+\["[^"]+"\]', x)]) == n_nodes
    assert len([x for x in lines if re.fullmatch(r"\s+n\d+ (-->|-\.->) n\d+", x)]) == n_edges
    assert sum(x.strip().startswith("subgraph ") for x in lines) == sum(
        x.strip() == "end" for x in lines
    )


@pytest.mark.parametrize(
    ("plan", "instances"),
    [
        ("examples/quickstart.yaml", 11),
        ("examples/chain138/start.yaml", 25),
        ("examples/chain138/stop.yaml", 25),
        ("examples/chain138/status.yaml", 25),
    ],
)
def test_other_examples_expand(plan: str, instances: int) -> None:
    result = run_cli("plan", str(ROOT / plan), "--format", "json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["nodes"]) == instances


BROKEN = {
    "unknown key": ("name: x\ntargets: {a: {}}\ntasks:\n  t:\n    runn: echo\n", 5),
    "needs cycle": (
        "name: x\ntargets: {a: {}}\ntasks:\n  t:\n    for_each: all\n    needs: [u]\n"
        "    run: echo\n  u:\n    for_each: all\n    needs: [t]\n    run: echo\n",
        None,
    ),
    "yaml syntax": ("name: x\ntasks: [\n", None),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_plan_exits_2_with_location(case: str, tmp_path: Path) -> None:
    text, line = BROKEN[case]
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    result = run_cli("plan", str(path))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    found = re.findall(rf"{re.escape(str(path))}:(\d+):(\d+)", result.stderr)
    assert found, result.stderr
    if line is not None:
        assert line in [int(row) for row, _ in found]
        assert "did you mean 'run'" in result.stderr
    if case == "needs cycle":
        assert "cycle" in result.stderr


def test_bad_parallelism_is_a_usage_error() -> None:
    result = run_cli("plan", str(CHAIN138 / "plan.yaml"), "-j", "0")
    assert result.exit_code == 2


def test_json_text_matches_graph_dict() -> None:
    from fleetrun.plan import expand, load_plan
    from fleetrun.plan._render import graph_dict, render_json

    graph = expand(load_plan(CHAIN138 / "plan.yaml"))
    assert json.loads(render_json(graph, 4)) == graph_dict(graph, 4)
    assert graph_dict(graph, 4)["parallelism"] == 4
