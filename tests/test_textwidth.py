"""Display width: Chinese and Japanese names keep every table's columns aligned."""

from __future__ import annotations

import re

import pytest

from fleetrun.engine.testing import graph, task
from fleetrun.plan._render import task_lines
from fleetrun.report import TargetOutcome, render_exec_text
from fleetrun.report._text import text_table
from fleetrun.textwidth import clip, display_width, ljust, rjust

NAMES = ["tokyo", "東京", "北京-prod", "\uff46\uff55\uff4c\uff4c", "café", "e\u0301t\u00e9", "서울"]


@pytest.mark.parametrize(
    ("text", "width"),
    [("tokyo", 5), ("東京", 4), ("北京-prod", 9), ("\uff46\uff55\uff4c\uff4c", 8),
     ("e\u0301", 1), ("", 0), ("서울", 4), ("a\u200bb", 2)],
)  # fmt: skip
def test_display_width(text: str, width: int) -> None:
    assert display_width(text) == width


def test_padding_and_clipping_count_columns() -> None:
    assert ljust("東京", 6) == "東京  "
    assert rjust("東京", 6) == "  東京"
    assert ljust("東京", 1) == "東京"  # never cut by padding
    assert clip("東京大阪", 5) == "東京…"  # 4 columns and the ellipsis, no half character
    assert display_width(clip("東京大阪名古屋", 7)) <= 7
    assert clip("short", 10) == "short"


def _starts(line: str, cells: list[str]) -> list[int]:
    """The display column at which each of ``cells`` starts in ``line``."""
    cols, at = [], 0
    for cell in cells:
        i = line.index(cell, at)
        cols.append(display_width(line[:i]))
        at = i + len(cell)
    return cols


def test_text_table_aligns_wide_names() -> None:
    rows = [[n, "succeeded", "last"] for n in NAMES]
    lines = text_table(["INSTANCE", "STATE", "REASON"], rows).splitlines()
    starts = {tuple(_starts(ln, [r[1], r[2]])) for ln, r in zip(lines[1:], rows, strict=True)}
    assert len(starts) == 1, lines
    assert _starts(lines[0], ["STATE", "REASON"]) == list(next(iter(starts)))


def test_exec_table_aligns_wide_names() -> None:
    outcomes = [TargetOutcome(n, 0, duration=1.0, output="ok 完了\n") for n in NAMES]
    text = render_exec_text(outcomes)
    rows = [ln for ln in text.splitlines() if ln.endswith("  ok 完了")]
    assert len(rows) == len(NAMES)
    assert len({_starts(r, ["ok 完了"])[0] for r in rows}) == 1, rows
    # The block headers are ruled to the same width.
    heads = [ln for ln in text.splitlines() if ln.startswith("── ")]
    assert len({display_width(h) for h in heads}) == 1, heads


def test_plan_task_lines_align_wide_task_names() -> None:
    g = graph([task(n, "true", targets=["a", "b"]) for n in ("deploy", "部署", "確認する")])
    lines = task_lines(g)[1:]
    cols = {display_width(ln[: re.search(r"\d", ln).start()]) for ln in lines}  # type: ignore[union-attr]
    assert len(cols) == 1, lines
