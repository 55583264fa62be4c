"""Shared helpers for journal tests: a run recorded the way the CLI records one."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetrun.state import Journal, NewInstance


def begin(journal: Journal, run_id: str, keys: list[str], *, parent: str | None = None) -> None:
    """Record a run of ``keys`` (task@target) the way ``apply`` does."""
    journal.begin_run(
        run_id=run_id,
        parent_id=parent,
        plan_path="/plans/p.yaml",
        plan_name="p",
        plan_hash="h1",
        plan_snapshot="name: p\n",
        mode="dag",
        kind="apply" if parent is None else "retry",
        options={"parallelism": None},
        instances=[
            NewInstance(key=k, node=i, task=k.split("@")[0], target=k.partition("@")[2] or None)
            for i, k in enumerate(keys)
        ],
    )


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    """An empty journal in a fresh state directory."""
    j = Journal(tmp_path / ".fleetrun")
    yield j  # type: ignore[misc]
    j.close()
