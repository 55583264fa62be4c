"""Why a ready instance waited: ``AttemptStarted.ready_at`` and ``queued_reason``,
through the real engine and real processes (and a real throttling HTTP server)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from throttle_server import ThrottleServer, client_command

from fleetrun.engine import AttemptStarted, PoolChanged
from fleetrun.engine.testing import graph, plan, task
from fleetrun.plan import Pool, Rollout, ThrottleRule, expand

REGIONS = ["r0", "r1", "r2", "r3", "r4", "r5"]


def _starts(ran) -> list[AttemptStarted]:
    return sorted(ran.of(AttemptStarted), key=lambda e: e.at)


def _queued(e: AttemptStarted) -> float:
    assert e.ready_at is not None
    return e.at - e.ready_at


def test_nothing_holds_nothing_is_said(runner):
    ran = runner(graph([task("t", "true", targets=REGIONS[:3])]), parallelism=None)
    starts = _starts(ran)
    assert len(starts) == 3
    assert all(e.ready_at is not None and e.ready_at <= e.at for e in starts)
    assert [e.queued_reason for e in starts] == [None, None, None]


def test_rate_full_and_parallelism(runner):
    g = graph(
        [
            task("rated", "true", targets=REGIONS, pools=["api"]),
            task("capped", "sleep 0.05", targets=REGIONS[:3], pools=["db"]),
        ],
        pools=[Pool("api", rate=20.0), Pool("db", concurrency=1)],
    )
    ran = runner(g, parallelism=None)
    rated = [e for e in _starts(ran) if e.key.startswith("rated@")]
    # One token at first, then one every 50 ms: every later start waited for the rate.
    assert rated[0].queued_reason is None
    assert [e.queued_reason for e in rated[1:]] == ["pool api rate"] * 5
    assert _queued(rated[-1]) >= 0.15  # 5 tokens at 20/s: 0.25 s
    capped = [e for e in _starts(ran) if e.key.startswith("capped@")]
    assert capped[0].queued_reason is None
    assert [e.queued_reason for e in capped[1:]] == ["pool db full"] * 2
    assert _queued(capped[2]) >= 0.08  # behind two 50 ms runs

    ran = runner(graph([task("t", "sleep 0.03", targets=REGIONS[:3])]), parallelism=1)
    starts = _starts(ran)
    assert starts[0].queued_reason is None
    assert [e.queued_reason for e in starts[1:]] == ["parallelism limit (-j 1)"] * 2
    assert _queued(starts[2]) > _queued(starts[1]) > 0


def test_waves_and_phases_hold(runner):
    p = plan([task("t", "sleep 0.05", targets=REGIONS[:3])], targets=REGIONS[:3])
    g = expand(dataclasses.replace(p, rollout=Rollout((1,))))
    ran = runner(g, parallelism=None)
    starts = _starts(ran)
    assert [e.key for e in starts] == ["t@r0", "t@r1", "t@r2"]
    assert [e.queued_reason for e in starts] == [None, "wave closed", "wave closed"]
    # Held since the run began, not since the wave opened.
    assert _queued(starts[1]) >= 0.04
    assert _queued(starts[2]) >= 0.08

    g = graph(
        [task("a", "sleep 0.05", phase="one"), task("b", "true", phase="two")],
        phases=["one", "two"],
    )
    ran = runner(g, mode="phased", parallelism=None)
    starts = _starts(ran)
    assert [(e.key, e.queued_reason) for e in starts] == [("a", None), ("b", "phase")]
    assert _queued(starts[1]) >= 0.04


@pytest.fixture
def server() -> Iterator[ThrottleServer]:
    """Two requests at once, then 2/s: the third gets 429 with Retry-After: 1."""
    with ThrottleServer(rate=2.0, burst=2) as s:
        yield s


def test_retry_after_pause(runner, server):
    rule = ThrottleRule(exit=frozenset({75}), retry_after=r"Retry-After: (\d+)")
    g = graph(
        [task("call", client_command(server.url), targets=REGIONS[:4], pools=["api"])],
        pools=[Pool("api", concurrency=1, throttle=rule)],
    )
    # fifo: the instance queued longest goes first once the pause is over.
    ran = runner(g, parallelism=None, priority="fifo")
    assert ran.result.status == "succeeded"
    pause = next(e for e in ran.of(PoolChanged) if e.paused > 0)
    after = [e for e in _starts(ran) if e.at > pause.at]
    assert after[0].queued_reason == "pool api paused for Retry-After"
    assert after[0].at - pause.at >= 0.8  # Retry-After: 1
    # Before the pause, the queue waited for the pool's one slot.
    before = [e for e in _starts(ran) if e.at < pause.at]
    assert [e.queued_reason for e in before[1:]] == ["pool api full"] * (len(before) - 1)


def test_a_pause_then_a_tokens_wait_is_named_the_pause() -> None:
    """After a Retry-After pause a rate pool has nothing saved up, so the
    first start after it waits a token too: the wait is named for what held
    it longest, the pause, not for the last obstacle."""
    from fleetrun.engine._queued import Queued

    q = Queued(3, "parallelism limit (-j 2)")
    sig = (0,)
    for j in range(3):
        q.ready(j, 10.0)
    q.blocked(sig, 10.0, "pool api rate")
    q.blocked(sig, 10.05, "pool api paused for Retry-After")
    q.blocked(sig, 11.05, "pool api rate")  # the pause is over: a token's wait
    q.taken(0, sig, 11.1, cap_full_at=-1.0)
    assert q.why[0] == "pool api paused for Retry-After"
    # One that became ready after the pause waited for a token only.
    q.ready(1, 11.06)
    q.blocked(sig, 11.08, "pool api rate")
    q.taken(1, sig, 11.1, cap_full_at=-1.0)
    assert q.why[1] == "pool api rate"
