"""The journal's events read back as the typed events the engine emitted (real SQLite)."""

from __future__ import annotations

import time

from fleetrun.engine import (
    AttemptEnded,
    AttemptOutput,
    AttemptStarted,
    Event,
    InstanceReused,
    InstanceSettled,
    PoolChanged,
    RunEnded,
    RunStarted,
    WaveChanged,
)
from fleetrun.redact import Redactor
from fleetrun.state import Journal, JournalReader, JournalWriter, decode_event

from .conftest import begin


def _run(t0: float) -> list[Event]:
    """One event of every kind the journal keeps, with tuples, mappings and None."""
    return [
        RunStarted(at=t0, run_id="r1", plan_name="p", mode="dag", parallelism=None, nodes=3),
        InstanceReused(at=t0, node=2, key="old@x", outputs={"addr": "0xAB"}),
        WaveChanged(at=t0 + 0.5, wave=1, waves=2, state="open", targets=("x", "y\x1b[2J")),
        AttemptStarted(
            at=t0 + 1,
            node=0,
            key="a@x",
            attempt=1,
            command="deploy --token ***",
            pid=41,
            pgid=41,
            log_path="l1",
            ready_at=t0 + 0.25,
            queued_reason="pool api rate",
        ),
        AttemptOutput(at=t0 + 1.5, node=0, key="a@x", attempt=1, text="not journaled\n"),
        AttemptEnded(
            at=t0 + 2,
            node=0,
            key="a@x",
            attempt=1,
            started_at=t0 + 1,
            exit_code=75,
            signal=None,
            timed_out=False,
            outcome="retrying",
            retry_reason="exit 75",
            retry_delay=0.5,
            tail=("429 Too Many Requests", "secret is hunter22"),
            throttled=True,
        ),
        PoolChanged(at=t0 + 2, pool="api", rate=2.5, reason="throttled", concurrency=3),
        InstanceSettled(at=t0 + 4, node=1, key="b@x", state="skipped", reason="needs c@x"),
        RunEnded(at=t0 + 5, run_id="r1", status="failed", counts={"skipped": 1, "reused": 1}),
    ]


def test_every_journaled_event_reads_back_as_it_was_emitted(journal: Journal) -> None:
    begin(journal, "r1", ["a@x", "b@x", "old@x"])
    t0 = time.time()
    w = JournalWriter(journal.db_path, "r1", Redactor(["hunter22"]))
    w.start()
    sent = _run(t0)
    for ev in sent:
        w(ev)
    w.close()

    with JournalReader(journal.state_dir) as r:
        last, got = r.events_after("r1")
        # In pieces, from where the last piece ended: the same events.
        seq, pieces = 0, []
        while True:
            seq, batch = r.events_after("r1", seq, limit=3)
            if not batch:
                break
            pieces += batch
        assert r.events_after("r1", last) == (last, [])
        assert r.events_after("no-such-run") == (0, [])
        beat = r.heartbeat("r1")

    journaled = [ev for ev in sent if not isinstance(ev, AttemptOutput)]
    assert last == len(journaled) == 8
    # The one secret is redacted, as everywhere in the journal; the rest is equal,
    # field for field and type for type (tuples are tuples again).
    assert isinstance(got[4], AttemptEnded)
    assert got[4].tail == ("429 Too Many Requests", "secret is ***")
    assert got[:4] + got[5:] == journaled[:4] + journaled[5:]
    assert [type(e) for e in got] == [type(e) for e in journaled]
    assert isinstance(got[2], WaveChanged)
    assert got[2].targets == ("x", "y\x1b[2J")
    assert pieces == got
    # The run ended before a heartbeat was due, so it has none.
    assert beat is None


def test_rows_this_fleetrun_cannot_read_are_left_out() -> None:
    assert decode_event("NoSuchEvent", '{"at": 1}') is None
    assert decode_event("Event", '{"at": 1}') is None  # the base class is no event
    assert decode_event("RunEnded", '{"at": 1}') is None  # fields missing
    assert decode_event("RunEnded", "[1, 2]") is None
    assert decode_event("RunEnded", "{not json") is None
    # A field added by a newer fleetrun is ignored; the event is kept.
    ev = decode_event(
        "RunEnded", '{"at": 2.5, "run_id": "r", "status": "failed", "counts": {}, "new": 1}'
    )
    assert ev == RunEnded(at=2.5, run_id="r", status="failed", counts={})
