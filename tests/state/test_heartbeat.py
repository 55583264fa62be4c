"""The journal writer's heartbeat: ``runs.alive_at`` moves while a run is live
and stops once its end is written."""

from __future__ import annotations

import time
from collections.abc import Callable

from fleetrun.engine import RunEnded
from fleetrun.state import Journal, JournalWriter
from fleetrun.state._writer import HEARTBEAT

from .conftest import begin


def _alive_at(journal: Journal) -> float | None:
    row = journal.conn.execute("SELECT alive_at FROM runs WHERE id='r1'").fetchone()
    return None if row[0] is None else float(row[0])


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20 * HEARTBEAT
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {20 * HEARTBEAT:g}s"
        time.sleep(HEARTBEAT / 10)


def test_heartbeat_moves_while_the_run_is_live_and_stops_at_its_end(journal: Journal) -> None:
    begin(journal, "r1", ["a@x"])
    started = journal.run("r1").started_at
    w = JournalWriter(journal.db_path, "r1")
    w.start()
    try:
        assert _alive_at(journal) is None  # the first beat is one interval in
        seen: set[float] = set()

        def two_beats() -> bool:
            at = _alive_at(journal)
            if at is not None:
                seen.add(at)
            return len(seen) >= 2

        _until(two_beats, "two heartbeats of a quiet run")
        assert min(seen) >= started
        # A killed run's end (recovery's last trace) is its last heartbeat.
        assert journal.last_write("r1", started) >= max(seen)

        w(RunEnded(at=time.time(), run_id="r1", status="succeeded", counts={"pending": 1}))
        _until(lambda: journal.run("r1").ended_at is not None, "the run's end")
        last = _alive_at(journal)
        time.sleep(3 * HEARTBEAT)
        assert _alive_at(journal) == last  # no beat after the end
    finally:
        w.close()
    assert w.failed is None
