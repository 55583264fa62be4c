"""Dropping old runs: their rows in the journal and their ``runs/<id>`` directory.

A run is removed only when every given criterion selects it (``keep``: it is
not among the newest ``keep`` runs; ``older_than``: it started longer ago), and
never when it is live (no end on record) or is an ancestor of a run that is
kept: a retry reuses what its parent chain succeeded at, and ``show``/``logs``
follow that chain to the attempts.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from fleetrun.layout import RUNS_DIR, RunLayout
from fleetrun.state._db import DB_NAME, journal_error, rollback
from fleetrun.state._fs import tree_size
from fleetrun.state._journal import Journal
from fleetrun.state._records import EXEC_SUFFIX

_TABLES = ("events", "attempts", "exact_outputs", "instances")


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What ``prune`` removed (or would remove, with ``dry_run``) and the bytes freed."""

    removed: tuple[str, ...]
    kept_for_retries: tuple[str, ...]
    freed: int


def journal_size(state_dir: Path) -> int:
    """Bytes the record takes: ``state.db`` with its WAL, and every run's logs and outputs."""
    total = 0
    for name in (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm"):
        with contextlib.suppress(OSError):
            total += (state_dir / name).lstat().st_size
    return total + tree_size(state_dir / RUNS_DIR)


def prune(
    journal: Journal,
    *,
    keep: int | None = None,
    older_than: float | None = None,
    now: float | None = None,
    dry_run: bool = False,
    plan_path: str | None = None,
) -> PruneResult:
    """Remove old runs from ``journal`` (see the module docstring); ``older_than`` in
    seconds; ``plan_path``: only that plan's runs (its exec runs included) are
    candidates, and ``keep`` counts those."""
    if keep is None and older_than is None:
        raise ValueError("prune needs keep or older_than")
    journal.recover()
    now = time.time() if now is None else now
    c = journal.conn
    runs = c.execute(
        "SELECT id, parent_id, started_at, ended_at, plan_path FROM runs"
        " ORDER BY started_at DESC, id DESC"
    ).fetchall()
    parent = {r[0]: r[1] for r in runs}
    mine = [
        r[:4] for r in runs if plan_path is None or r[4] in (plan_path, plan_path + EXEC_SUFFIX)
    ]
    chosen = []
    for rank, (run_id, _p, started, ended) in enumerate(mine):
        if ended is None:
            continue  # live
        if keep is not None and rank < keep:
            continue
        if older_than is not None and started > now - older_than:
            continue
        chosen.append(run_id)
    drop = set(chosen)
    needed: set[str] = set()
    for run_id, *_ in runs:
        if run_id in drop:
            continue
        current = parent.get(run_id)
        while current is not None and current not in needed:
            needed.add(current)
            current = parent.get(current)
    removed = tuple(r for r in chosen if r not in needed)
    kept = tuple(r for r in chosen if r in needed)
    before = journal_size(journal.state_dir)
    logs = sum(tree_size(RunLayout.of(journal.state_dir, r).directory) for r in removed)
    if dry_run or not removed:
        return PruneResult(removed, kept, logs)
    try:
        c.execute("BEGIN IMMEDIATE")
        for table in _TABLES:
            c.executemany(f"DELETE FROM {table} WHERE run_id=?", [(r,) for r in removed])
        c.executemany("DELETE FROM runs WHERE id=?", [(r,) for r in removed])
        c.execute("COMMIT")
    except sqlite3.Error as e:
        rollback(c)
        raise journal_error("pruning", journal.db_path, e) from e
    for r in removed:
        # rmtree never follows a link out of the directory it removes.
        shutil.rmtree(RunLayout.of(journal.state_dir, r).directory, ignore_errors=True)
    with contextlib.suppress(sqlite3.Error):
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        c.execute("VACUUM")
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return PruneResult(removed, kept, max(0, before - journal_size(journal.state_dir)))
