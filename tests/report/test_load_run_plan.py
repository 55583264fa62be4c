"""``load_run_plan``: the plan a run ran, found where ``load_run_graph`` finds its
graph (the unchanged plan file, else the journal's snapshot), with the same
notes, and never expanded."""

from __future__ import annotations

from collections.abc import Callable

from fleetrun.report import load_run_graph, load_run_plan

from .conftest import Recorded


def _both(rec: Recorded) -> tuple[object, list[str], object, list[str]]:
    with rec.journal() as j:
        run = j.run(rec.run_id)
        rows = j.instances(run.id)
    graph, graph_notes = load_run_graph(run, rows)
    plan, plan_notes = load_run_plan(run)
    return (None if graph is None else graph.plan), graph_notes, plan, plan_notes


def test_the_plan_is_found_where_the_graph_is_with_the_same_notes(
    make_run: Callable[..., Recorded],
) -> None:
    fleet = "a: {}\nb: {}\n"
    text = (
        "name: fleeted\ntargets: fleet.yaml\npools: {api: {concurrency: 1}}\n"
        "rollout: {waves: [1, '100%']}\ntasks:\n"
        "  t:\n    for_each: all\n    pools: [api]\n    run: 'true'\n"
    )
    rec = make_run(text=text, files={"fleet.yaml": fleet})
    seen = []
    # Unchanged; changed since the run; no longer loading; gone with its fleet file.
    for change in (
        lambda: None,
        lambda: rec.plan.write_text(text.replace("name: fleeted", "name: renamed")),
        lambda: rec.plan.write_text("name: [unclosed\n"),
        lambda: (rec.plan.unlink(), (rec.plan.parent / "fleet.yaml").unlink()),
    ):
        change()
        from_graph, graph_notes, plan, plan_notes = _both(rec)
        assert plan == from_graph
        assert plan_notes == graph_notes
        seen.append((plan is not None, len(plan_notes)))
        if plan is not None:
            assert plan.name == "fleeted"  # the run's own plan, never the edited file
            assert list(plan.pools) == ["api"]
            assert plan.rollout is not None
    assert seen == [(True, 0), (True, 1), (True, 1), (False, 2)]
