"""A retry's timeline: instances reused from an earlier run get no row; one line says so."""

from __future__ import annotations

import re
from dataclasses import replace

from fleetrun.report._html import render_html
from fleetrun.report._html_timeline import reused_note
from fleetrun.report._model import RunReport

from .test_html import Page, attempt, report

TICKS_OR_TIPS = re.compile(r"[\d.]+s|phase \w+: .*")


def _retry(reused: dict[str, str]) -> RunReport:
    """k8s@a ran again; ``reused`` maps instance keys to the run they were reused from;
    k8s@c was skipped (it never ran, and it is this run's)."""
    r = report([attempt("k8s@a", 0.0, 2.0)])
    base = r.instances[0]
    extra = [
        replace(base, key=k, task=k.partition("@")[0], target=k.partition("@")[2] or None,
                state="reused", reason=f"reused from run {run}", attempts=0, started_at=None,
                ended_at=None, task_time=0.0)
        for k, run in reused.items()
    ]  # fmt: skip
    idle = replace(base, key="k8s@c", target="c", state="skipped", reason="", attempts=0)
    return replace(r, instances=(*r.instances, *extra, idle))


def _row_labels(r: RunReport) -> list[str]:
    chart = Page(render_html(r).split('<div class="chart">', 1)[1].split("</svg>", 1)[0])
    return [t for t in chart.text if t.strip() and not TICKS_OR_TIPS.fullmatch(t)]


def test_reused_instances_get_no_row_and_one_line() -> None:
    r = _retry({"infra@a": "R1", "infra@b": "R1", "k8s@b": "R1", "contracts": "R1"})
    # b only had reused instances, and so did the unfanned row: neither is drawn;
    # a ran, c is this run's own (skipped), so both keep their rows.
    assert _row_labels(r) == ["phase · deploy", "a", "c"]
    page = Page(render_html(r))
    text = " ".join(page.text)
    assert "4 instances reused from run R1 (not drawn: they ran there)." in text
    assert text.count("reused from run R1 (not drawn") == 1
    assert len(page.bars()) == len(r.attempts)


def test_reused_from_several_runs_names_each_with_its_count() -> None:
    r = _retry({"infra@a": "R2", "infra@b": "R1", "k8s@b": "R1"})
    assert (
        reused_note(r) == "3 instances reused from runs R1 (2), R2 (1) (not drawn: they ran there)."
    )
    one = _retry({"infra@b": "R1"})
    assert reused_note(one) == "1 instance reused from run R1 (not drawn: they ran there)."


def test_a_run_without_reuse_has_no_line() -> None:
    r = _retry({})
    assert reused_note(r) == ""
    assert 'id="fr-reused"' not in render_html(r)
    assert _row_labels(r) == ["phase · deploy", "a", "c"]
