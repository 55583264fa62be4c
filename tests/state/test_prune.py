"""``prune`` on a journal: never a live run, never a kept run's parent chain."""

from __future__ import annotations

from fleetrun.state import Journal, journal_size, prune

from .conftest import begin


def test_prune_spares_live_runs_and_parent_chains(journal: Journal) -> None:
    for n, parent in (("r1", None), ("r2", None), ("r3", "r2"), ("r4", None)):
        begin(journal, n, ["a@x"], parent=parent)
        journal.conn.execute("UPDATE runs SET started_at=? WHERE id=?", (float(n[1]), n))
        if n != "r4":
            journal.end_run(n, "succeeded")
        (journal.state_dir / "runs" / n / "logs").mkdir(parents=True)
        (journal.state_dir / "runs" / n / "logs" / "x.1.log").write_bytes(b"x" * 5000)
    before = journal_size(journal.state_dir)
    # r4 is live (our own pid): never removed; r2 goes with r3, its only reuser.
    res = prune(journal, keep=0, now=100.0)
    assert res.removed == ("r3", "r2", "r1")
    assert res.kept_for_retries == ()
    assert [r.id for r in journal.runs()] == ["r4"]
    assert res.freed > 0
    assert journal_size(journal.state_dir) < before
    assert sorted(p.name for p in (journal.state_dir / "runs").iterdir()) == ["r4"]


def test_prune_keeps_the_parent_of_a_kept_retry(journal: Journal) -> None:
    for n, parent in (("r1", None), ("r2", "r1"), ("r3", "r2")):
        begin(journal, n, ["a@x"], parent=parent)
        journal.conn.execute("UPDATE runs SET started_at=? WHERE id=?", (float(n[1]), n))
        journal.end_run(n, "failed")
    res = prune(journal, keep=1, dry_run=True)
    assert res.removed == ()
    assert res.kept_for_retries == ("r2", "r1")
    res = prune(journal, older_than=30 * 86400, now=10.0)
    assert res.removed == ()
