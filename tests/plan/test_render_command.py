"""``plan.render_command``: the one renderer of an instance's command, and the typed
error that names a value it lacks."""

from __future__ import annotations

import pytest

from fleetrun.plan import (
    Graph,
    MissingValueError,
    Placeholders,
    dep_outputs,
    expand,
    load_plan_text,
    render_command,
)

PLAN = """\
name: p
vars: {env: prod}
targets:
  a: {}
  b: {}
tasks:
  infra:
    for_each: all
    run: infra {{ target.name }}
  k8s:
    for_each: all
    needs: [infra]
    run: k8s {{ target.name }} {{ vars.env }} {{ tasks.infra.outputs.cluster }}
  contract:
    needs: [{task: k8s, at_least: 1}]
    run: deploy
"""


def _graph() -> Graph:
    return expand(load_plan_text(PLAN))


def test_renders_with_the_outputs_of_single_instance_requirements() -> None:
    g = _graph()
    node = g.nodes[g.index["k8s@a"]]
    outs = {g.index["infra@a"]: {"cluster": "c a"}, g.index["infra@b"]: {"cluster": "wrong"}}
    deps = dep_outputs(node, outs)
    assert deps == {"infra": {"cluster": "c a"}}
    assert render_command(g, node, deps) == "k8s a prod 'c a'"
    # With the task and target at hand (the engine), the same text.
    task, target = g.plan.tasks["k8s"], g.plan.targets["a"]
    assert render_command(g, node, deps, task=task, target=target) == "k8s a prod 'c a'"


def test_a_missing_output_is_named() -> None:
    g = _graph()
    node = g.nodes[g.index["k8s@b"]]
    with pytest.raises(MissingValueError) as info:
        render_command(g, node, dep_outputs(node, {g.index["infra@b"]: {"endpoint": "e"}}))
    e = info.value
    assert (e.key, e.ref) == ("k8s@b", "tasks.infra.outputs.cluster")
    assert "infra published only endpoint" in e.detail
    assert str(e).startswith("no value for tasks.infra.outputs.cluster (infra published only")
    # Still a KeyError, whose first argument names the reference.
    assert isinstance(e, KeyError)
    assert e.args[0].startswith("tasks.infra.outputs.cluster (")
    # A dependency that recorded no outputs at all reads the same way.
    with pytest.raises(MissingValueError, match="infra published no outputs"):
        render_command(g, node, dep_outputs(node, {}))


def test_a_dry_run_shows_placeholders_for_outputs_not_known_yet() -> None:
    g = _graph()
    node = g.nodes[g.index["k8s@a"]]
    shown = render_command(g, node, Placeholders(dep_outputs(node, {})))
    assert shown == "k8s a prod '<infra.outputs.cluster>'"
    known = dep_outputs(node, {g.index["infra@a"]: {"cluster": "c1"}})
    assert render_command(g, node, Placeholders(known)) == "k8s a prod c1"
