"""Expansion: plan -> nodes and edges, waves, rank, critical path, selections.

Table-driven: each case is a small plan written as Python data and the graph it
must expand to, written as ``key: [requirements]`` with requirements shown as
``task:key,key/at_least``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from fleetrun.errors import Location, PlanError, UsageError
from fleetrun.plan import (
    Graph,
    Need,
    Plan,
    Pool,
    Target,
    Task,
    Template,
    dependents_closure,
    expand,
    select,
)

NeedSpec = str | tuple[str, int | str]


def need(spec: NeedSpec) -> Need:
    """``"x"`` same/auto, ``"x[*]"`` all, ``("x", 2)`` / ``("x", "50%")`` quorum."""
    loc = Location("plan.yaml", 7, 9)
    if isinstance(spec, tuple):
        name, q = spec
        if isinstance(q, str):
            return Need(name, "quorum", percent=float(q.rstrip("%")), location=loc)
        return Need(name, "quorum", at_least=q, location=loc)
    if spec.endswith("[*]"):
        return Need(spec[:-3], "all", location=loc)
    return Need(spec, location=loc)


def make_plan(
    targets: Sequence[str] | Mapping[str, Mapping[str, Any]],
    tasks: Sequence[tuple[Any, ...]],
    groups: Mapping[str, Sequence[str]] | None = None,
    phases: Sequence[str] = (),
    pools: Sequence[Pool] = (),
) -> Plan:
    """Tasks as ``(name, for_each | None, [needs], estimate?, phase?, pools?)``."""
    tmap = (
        {n: Target(n, dict(a)) for n, a in targets.items()}
        if isinstance(targets, Mapping)
        else {n: Target(n) for n in targets}
    )
    gmap = {k: tuple(v) for k, v in (groups or {}).items()}
    gmap.setdefault("all", tuple(tmap))
    built: dict[str, Task] = {}
    for i, spec in enumerate(tasks):
        name, for_each, needs = spec[0], spec[1], spec[2]
        estimate = spec[3] if len(spec) > 3 else None
        phase = spec[4] if len(spec) > 4 else None
        tpools = tuple(spec[5]) if len(spec) > 5 else ()
        built[name] = Task(
            name=name,
            run=Template.parse("true"),
            phase=phase,
            for_each=for_each,
            targets=None if for_each is None else gmap[for_each],
            needs=tuple(need(s) for s in needs),
            pools=tpools,
            estimate=estimate,
            location=Location("plan.yaml", 10 + i, 3),
        )
    return Plan(
        name="t",
        path=None,
        base_dir=Path("."),
        source_hash="",
        env={},
        secrets=frozenset(),
        secret_values=frozenset(),
        vars={},
        targets=tmap,
        groups=gmap,
        pools={p.name: p for p in pools},
        phases=tuple(phases),
        tasks=built,
    )


def edges(graph: Graph) -> dict[str, list[str]]:
    """``key -> ["task:k1,k2/at_least", ...]`` for every node, in node order."""
    out: dict[str, list[str]] = {}
    for node in graph.nodes:
        out[node.key] = [
            f"{r.task}:{','.join(graph.nodes[d].key for d in r.nodes)}/{r.at_least}"
            for r in node.requires
        ]
    return out


AB = ["a", "b"]
ABC = ["a", "b", "c"]

# (id, targets, tasks, groups, expected edges in node order)
EDGE_CASES: list[
    tuple[str, Any, list[tuple[Any, ...]], dict[str, list[str]], dict[str, list[str]]]
] = [
    (
        "fanned needs fanned: same target",
        AB,
        [("x", "all", []), ("y", "all", ["x"])],
        {},
        {"x@a": [], "x@b": [], "y@a": ["x:x@a/1"], "y@b": ["x:x@b/1"]},
    ),
    (
        "X[*]: every instance",
        AB,
        [("x", "all", []), ("y", "all", ["x[*]"])],
        {},
        {"x@a": [], "x@b": [], "y@a": ["x:x@a,x@b/2"], "y@b": ["x:x@a,x@b/2"]},
    ),
    (
        "unfanned needs fanned: every instance",
        AB,
        [("x", "all", []), ("z", None, ["x"])],
        {},
        {"x@a": [], "x@b": [], "z": ["x:x@a,x@b/2"]},
    ),
    (
        "fanned needs unfanned: its single instance",
        AB,
        [("z", None, []), ("y", "all", ["z"])],
        {},
        {"z": [], "y@a": ["z:z/1"], "y@b": ["z:z/1"]},
    ),
    (
        "unfanned needs unfanned",
        AB,
        [("z", None, []), ("w", None, ["z"])],
        {},
        {"z": [], "w": ["z:z/1"]},
    ),
    (
        "quorum with a count",
        ABC,
        [("x", "all", []), ("z", None, [("x", 2)])],
        {},
        {"x@a": [], "x@b": [], "x@c": [], "z": ["x:x@a,x@b,x@c/2"]},
    ),
    (
        "quorum with a percentage rounds up (67% of 3 = 3)",
        ABC,
        [("x", "all", []), ("z", None, [("x", "67%")])],
        {},
        {"x@a": [], "x@b": [], "x@c": [], "z": ["x:x@a,x@b,x@c/3"]},
    ),
    (
        "quorum of 50% of 3 is 2; a fanned task may hold a quorum too",
        ABC,
        [("x", "all", []), ("y", "all", [("x", "50%")])],
        {},
        {
            "x@a": [],
            "x@b": [],
            "x@c": [],
            "y@a": ["x:x@a,x@b,x@c/2"],
            "y@b": ["x:x@a,x@b,x@c/2"],
            "y@c": ["x:x@a,x@b,x@c/2"],
        },
    ),
    (
        "subgroup needs the full fleet's task: same target",
        ABC,
        [("x", "all", []), ("y", "east", ["x"])],
        {"east": ["a", "c"]},
        {"x@a": [], "x@b": [], "x@c": [], "y@a": ["x:x@a/1"], "y@c": ["x:x@c/1"]},
    ),
    (
        "several needs keep their order; fleet order inside a task",
        ["b", "a"],
        [("x", "all", []), ("z", None, []), ("y", "all", ["z", "x"])],
        {},
        {"x@b": [], "x@a": [], "z": [], "y@b": ["z:z/1", "x:x@b/1"], "y@a": ["z:z/1", "x:x@a/1"]},
    ),
]


@pytest.mark.parametrize(
    ("targets", "tasks", "groups", "expected"),
    [c[1:] for c in EDGE_CASES],
    ids=[c[0] for c in EDGE_CASES],
)
def test_edges(
    targets: Any,
    tasks: list[tuple[Any, ...]],
    groups: dict[str, list[str]],
    expected: dict[str, list[str]],
) -> None:
    graph = expand(make_plan(targets, tasks, groups))
    got = edges(graph)
    assert list(got) == list(expected)  # node order: tasks in plan order, then fleet order
    assert got == expected
    assert [n.id for n in graph.nodes] == list(range(len(expected)))
    assert graph.index == {key: i for i, key in enumerate(expected)}


ERROR_CASES = [
    (
        "same-target need on a target the needed task skips",
        ABC,
        [("x", "east", []), ("y", "all", ["x"])],
        {"east": ["a", "c"]},
        ["y@b", "does not run on 'b'", "x[*]"],
    ),
    (
        "unknown task",
        AB,
        [("x", "all", ["nope"])],
        {},
        ["unknown task 'nope'"],
    ),
    (
        "quorum larger than the task",
        AB,
        [("x", "all", []), ("z", None, [("x", 3)])],
        {},
        ["quorum of 3", "only 2 instances"],
    ),
    (
        "cycle across fanned tasks",
        AB,
        [("x", "all", ["y"]), ("y", "all", ["x"])],
        {},
        ["cycle: x@a -> y@a -> x@a"],
    ),
    (
        "cycle through an all-instance fan-in",
        AB,
        [("x", "all", ["z"]), ("z", None, ["x[*]"])],
        {},
        ["cycle: x@a -> z -> x@a"],
    ),
    (
        "a task needing itself",
        AB,
        [("x", None, ["x"])],
        {},
        ["cycle: x -> x"],
    ),
]


@pytest.mark.parametrize(
    ("targets", "tasks", "groups", "fragments"),
    [c[1:] for c in ERROR_CASES],
    ids=[c[0] for c in ERROR_CASES],
)
def test_errors(
    targets: Any,
    tasks: list[tuple[Any, ...]],
    groups: dict[str, list[str]],
    fragments: list[str],
) -> None:
    with pytest.raises(PlanError) as info:
        expand(make_plan(targets, tasks, groups))
    (diag,) = info.value.diagnostics
    text = str(diag)
    for fragment in fragments:
        assert fragment in text
    assert diag.location is not None
    assert diag.location.file == "plan.yaml"
    assert diag.fix


def test_cycle_location_points_at_a_task_in_the_cycle() -> None:
    plan = make_plan(AB, [("ok", "all", []), ("x", "all", ["y"]), ("y", "all", ["x"])])
    with pytest.raises(PlanError) as info:
        expand(plan)
    (diag,) = info.value.diagnostics
    assert diag.location == Location("plan.yaml", 11, 3)  # task x, the second task
    assert diag.key == "tasks.x.needs"


def test_all_instance_requirements_are_shared() -> None:
    graph = expand(make_plan(ABC, [("x", "all", []), ("y", "all", ["x[*]"]), ("z", None, ["x"])]))
    reqs = [graph.nodes[graph.index[k]].requires[0] for k in ("y@a", "y@b", "y@c", "z")]
    assert all(r is reqs[0] for r in reqs)
    assert reqs[0].nodes == (0, 1, 2)
    assert not reqs[0].single
    same = graph.nodes[graph.index["y@a"]].requires
    assert same[0].at_least == 3
    # Without same-target needs, all instances of a task share one requires tuple.
    assert same is graph.nodes[graph.index["y@c"]].requires


def test_waves_rank_and_critical_path_on_a_diamond() -> None:
    # a(2) -> b(5), a -> c(1); b, c -> d(3); e(4) stands alone.
    plan = make_plan(
        ["t"],
        [
            ("a", None, [], 2.0),
            ("b", None, ["a"], 5.0),
            ("c", None, ["a"], 1.0),
            ("d", None, ["b", "c"], 3.0),
            ("e", None, [], 4.0),
        ],
    )
    graph = expand(plan)
    keys = [n.key for n in graph.nodes]
    assert [[keys[i] for i in w] for w in graph.waves] == [["a", "e"], ["b", "c"], ["d"]]
    assert dict(zip(keys, graph.rank, strict=True)) == {
        "a": 10.0,
        "b": 8.0,
        "c": 4.0,
        "d": 3.0,
        "e": 4.0,
    }
    assert [keys[i] for i in graph.critical_path] == ["a", "b", "d"]
    assert graph.critical_path_length == 10.0
    assert graph.total_work == 15.0
    assert graph.lower_bound(None) == 10.0
    assert graph.lower_bound(1) == 15.0
    assert [keys[i] for i in graph.dependents[0]] == ["b", "c"]


def test_wave_is_one_after_the_latest_requirement() -> None:
    # y@a waits for x@a (wave 0); z waits for y[*] (wave 1) and x (wave 0) -> wave 2.
    graph = expand(
        make_plan(AB, [("x", "all", []), ("y", "all", ["x"]), ("z", None, ["y[*]", "x"])])
    )
    wave_of = {graph.nodes[i].key: w for w, wave in enumerate(graph.waves) for i in wave}
    assert wave_of == {"x@a": 0, "x@b": 0, "y@a": 1, "y@b": 1, "z": 2}
    # z reaches x@a twice (through y@a and directly) but is listed once.
    assert graph.dependents[graph.index["x@a"]] == (graph.index["y@a"], graph.index["z"])


def test_default_estimate_is_one_second() -> None:
    graph = expand(make_plan(AB, [("x", "all", []), ("y", "all", ["x"], 2.5)]))
    assert [n.estimate for n in graph.nodes] == [1.0, 1.0, 2.5, 2.5]
    assert graph.critical_path_length == 3.5


def test_pipelining_per_target_rank() -> None:
    # Per-target chains: rank follows each target's own chain, not the whole task.
    plan = make_plan(AB, [("x", "all", [], 1.0), ("y", "all", ["x"], 2.0)])
    graph = expand(plan)
    assert graph.rank == (3.0, 3.0, 2.0, 2.0)
    assert [graph.nodes[i].key for i in graph.critical_path] == ["x@a", "y@a"]


PIPELINE = [
    ("infra", "validators", []),
    ("mon", "admin", []),
    ("k8s", "validators", ["infra"]),
    ("contract", None, [("k8s", "50%")]),
    ("verify", "validators", ["k8s", "contract"]),
]
GROUPS = {"validators": ["a", "b", "c"], "admin": ["adm"]}
FLEET = ["a", "adm", "b", "c"]


def test_select_targets_adds_what_they_need() -> None:
    graph = expand(make_plan(FLEET, PIPELINE, GROUPS))
    chosen = select(graph, targets=["b"])
    keys = sorted(graph.nodes[i].key for i in chosen)
    # verify@b needs the contract, which needs every k8s (a quorum counts all members).
    assert keys == sorted(
        ["infra@a", "infra@b", "infra@c", "k8s@a", "k8s@b", "k8s@c", "contract", "verify@b"]
    )


def test_select_tasks_and_groups() -> None:
    graph = expand(make_plan(FLEET, PIPELINE, GROUPS))
    assert {graph.nodes[i].key for i in select(graph, tasks=["k8s"])} == {
        "infra@a",
        "infra@b",
        "infra@c",
        "k8s@a",
        "k8s@b",
        "k8s@c",
    }
    assert {graph.nodes[i].key for i in select(graph, targets=["admin"])} == {"mon@adm"}
    both = select(graph, targets=["a"], tasks=["k8s", "contract"])
    assert {graph.nodes[i].key for i in both} == {
        "infra@a",
        "infra@b",
        "infra@c",
        "k8s@a",
        "k8s@b",
        "k8s@c",
        "contract",
    }
    assert select(graph) == frozenset(range(len(graph.nodes)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"targets": ["bb"]}, "unknown target or group 'bb' (did you mean 'b'?)"),
        ({"targets": ["validatrs"]}, "did you mean 'validators'?"),
        ({"tasks": ["k8"]}, "unknown task 'k8' (did you mean 'k8s'?)"),
        ({"tasks": ["zzzzzz"]}, "unknown task 'zzzzzz'; known: infra, mon, k8s,"),
        ({"targets": ["zzzzzz"]}, "unknown target or group 'zzzzzz'; known: a, adm, b,"),
        ({"targets": ["adm"], "tasks": ["infra"]}, "no task instance matches"),
    ],
)
def test_select_usage_errors(kwargs: dict[str, list[str]], message: str) -> None:
    graph = expand(make_plan(FLEET, PIPELINE, GROUPS))
    with pytest.raises(UsageError) as info:
        select(graph, **kwargs)
    assert message in str(info.value)


def test_dependents_closure() -> None:
    graph = expand(make_plan(FLEET, PIPELINE, GROUPS))
    closure = dependents_closure(graph, [graph.index["infra@b"]])
    assert {graph.nodes[i].key for i in closure} == {
        "infra@b",
        "k8s@b",
        "contract",
        "verify@a",
        "verify@b",
        "verify@c",
    }
    assert dependents_closure(graph, [graph.index["mon@adm"]]) == {graph.index["mon@adm"]}
    assert dependents_closure(graph, []) == frozenset()


def test_hostile_target_names_are_only_keys() -> None:
    names = ["a; rm -rf ~", "$(reboot)"]
    graph = expand(make_plan(names, [("x", "all", []), ("y", "all", ["x"])]))
    assert [n.key for n in graph.nodes] == [
        "x@a; rm -rf ~",
        "x@$(reboot)",
        "y@a; rm -rf ~",
        "y@$(reboot)",
    ]
    assert graph.nodes[3].requires[0].nodes == (1,)


def test_large_fleet_expands_linearly() -> None:
    # 2,000 targets x 5 tasks with an all-instance fan-in in the middle.
    targets = [f"r{i}" for i in range(2000)]
    tasks: list[tuple[Any, ...]] = [("t0", "all", [])]
    tasks += [(f"t{k}", "all", [f"t{k - 1}"]) for k in range(1, 3)]
    tasks += [("gate", None, ["t2"]), ("t3", "all", ["t2", "gate"]), ("t4", "all", ["t3"])]
    graph = expand(make_plan(targets, tasks))
    assert len(graph.nodes) == 5 * 2000 + 1
    assert len(graph.waves) == 6
    assert len(graph.dependents[graph.index["gate"]]) == 2000
    gate_req = graph.nodes[graph.index["t3@r7"]].requires[1]
    assert gate_req is graph.nodes[graph.index["t3@r1999"]].requires[1]


# The same rules end to end: plan text through the loader, then expansion.
YAML_CASES = [
    (
        "where-group, X[*] and a percentage quorum",
        """
name: t
targets: {a: {r: x}, b: {r: y}, c: {r: x}}
groups: {xs: {where: "r == 'x'"}}
tasks:
  p: {for_each: xs, run: echo}
  q: {for_each: all, needs: ['p[*]'], run: echo}
  s: {needs: [{task: q, at_least: '50%'}], run: echo}
""",
        {
            "p@a": [],
            "p@c": [],
            "q@a": ["p:p@a,p@c/2"],
            "q@b": ["p:p@a,p@c/2"],
            "q@c": ["p:p@a,p@c/2"],
            "s": ["q:q@a,q@b,q@c/2"],
        },
    ),
    (
        "same target through a subgroup, unfanned in between",
        """
name: t
targets: {a: {}, b: {}}
groups: {first: [a]}
tasks:
  infra: {for_each: all, run: echo}
  gate: {needs: [infra], run: echo}
  app: {for_each: first, needs: [infra, gate], run: echo}
  q: {needs: [{task: infra, at_least: 1}], run: echo}
""",
        {
            "infra@a": [],
            "infra@b": [],
            "gate": ["infra:infra@a,infra@b/2"],
            "app@a": ["infra:infra@a/1", "gate:gate/1"],
            "q": ["infra:infra@a,infra@b/1"],
        },
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in YAML_CASES], ids=[c[0] for c in YAML_CASES]
)
def test_yaml_edges(text: str, expected: dict[str, list[str]]) -> None:
    from fleetrun.plan import load_plan_text

    assert edges(expand(load_plan_text(text))) == expected
