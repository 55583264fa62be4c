"""Retries: only on matching conditions, with backoff bounded as configured (fake clock)."""

from __future__ import annotations

import random
from pathlib import Path

from fleetrun.engine import AttemptEnded, AttemptStarted, InstanceSettled
from fleetrun.engine._retry import backoff_delay, log_contains, log_tail, retry_reason
from fleetrun.engine.testing import CoreSim, FakeClock, graph, task
from fleetrun.executors import AttemptResult
from fleetrun.plan import Pool, RetryPolicy


def _counter(tmp_path: Path, fail_with: str, succeed_at: int) -> str:
    c = tmp_path / "count"
    return (
        f"n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; "
        f"[ $n -ge {succeed_at} ] || {{ {fail_with}; }}"
    )


def test_retries_on_matching_exit_with_bounded_backoff(runner, tmp_path):
    policy = RetryPolicy(
        attempts=5, backoff=2.0, max_backoff=3.0, any_failure=False, on_exit=frozenset({75})
    )
    clock = FakeClock()
    g = graph([task("t", _counter(tmp_path, "exit 75", 4), retry=policy)])
    ran = runner(g, clock=clock, seed=7)
    ends = ran.of(AttemptEnded)
    assert [e.outcome for e in ends] == ["retrying", "retrying", "retrying", "succeeded"]
    assert [e.retry_reason for e in ends[:3]] == ["exit 75"] * 3
    assert clock.sleeps == [e.retry_delay for e in ends[:3]]
    caps = [2.0, 3.0, 3.0]  # min(max_backoff, backoff * 2**(n-1))
    assert all(0 <= s <= c for s, c in zip(clock.sleeps, caps, strict=True))
    assert ran.settled()["t"].attempts == 4
    # Each attempt has its own log file.
    logs = [e.log_path for e in ran.of(AttemptStarted)]
    assert len(set(logs)) == 4
    assert all(p.endswith(f".{i + 1}.log") for i, p in enumerate(logs))


def test_non_matching_failure_is_final_at_once(runner, tmp_path):
    policy = RetryPolicy(attempts=5, any_failure=False, on_exit=frozenset({75}), on_output=("429",))
    clock = FakeClock()
    ran = runner(graph([task("t", "echo boom; exit 3", retry=policy)]), clock=clock)
    assert [e.outcome for e in ran.of(AttemptEnded)] == ["failed"]
    assert clock.sleeps == []
    assert ran.of(AttemptEnded)[0].tail == ("boom",)
    assert ran.settled()["t"].reason == "exit 3"


def test_retries_on_output_and_adapts_pool_rate(runner, tmp_path):
    from fleetrun.engine import PoolChanged

    policy = RetryPolicy(
        attempts=3, backoff=1.0, any_failure=False, on_output=("Too Many Requests",)
    )
    clock = FakeClock()
    fail = "echo 'HTTP 429 Too Many Requests' >&2; exit 1"
    g = graph(
        [task("t", _counter(tmp_path, fail, 2), retry=policy, pools=["api"])],
        pools=[Pool("api", rate=8.0, adaptive=True)],
    )
    ran = runner(g, clock=clock)
    ends = ran.of(AttemptEnded)
    assert [e.outcome for e in ends] == ["retrying", "succeeded"]
    # The adaptive pool has no ``throttle`` rule: the default one (429, exit 75) applies.
    assert ends[0].retry_reason == "output matched '\\b429\\b'"
    assert ends[0].throttled
    changes = ran.of(PoolChanged)
    # No Retry-After: not a fresh interval, the rate becomes decrease (0.9) x 8/s.
    assert [round(c.rate, 6) for c in changes] == [7.2]
    assert changes[0].reason.startswith("throttled (after ")


def test_timeout_retry_only_when_asked(runner):
    clock = FakeClock()
    no = RetryPolicy(attempts=3, any_failure=False, on_exit=frozenset({1}))
    ran = runner(graph([task("t", "sleep 5", timeout=0.2, retry=no)]), clock=clock, grace=0.5)
    assert [e.outcome for e in ran.of(AttemptEnded)] == ["failed"]
    assert ran.of(AttemptEnded)[0].timed_out
    yes = RetryPolicy(attempts=2, backoff=0.5, any_failure=False, on_timeout=True)
    ran = runner(graph([task("t", "sleep 5", timeout=0.2, retry=yes)]), clock=clock, grace=0.5)
    assert [(e.outcome, e.retry_reason) for e in ran.of(AttemptEnded)] == [
        ("retrying", "timeout"),
        ("failed", None),
    ]
    assert ran.settled()["t"].reason == "timed out after 0.2s"


def test_backoff_delay_bounds_and_log_helpers(tmp_path):
    rng = random.Random(1)
    p = RetryPolicy(attempts=10, backoff=1.5, max_backoff=10.0)
    for n in range(1, 9):
        for _ in range(50):
            assert 0 <= backoff_delay(p, n, rng) <= min(10.0, 1.5 * 2 ** (n - 1))
    log = tmp_path / "big.log"
    # A pattern straddling the 1 MiB read boundary is still found; memory stays bounded.
    data = b"x" * ((1 << 20) - 3) + b"NEEDLE" + b"\n" + b"line\n" * 20
    log.write_bytes(data)
    assert log_contains(str(log), ["NEEDLE"]) == "NEEDLE"
    assert log_contains(str(log), ["absent"]) is None
    assert log_tail(str(log), 3) == ("line", "line", "line")


def test_backoff_delay_is_bounded_for_any_attempt_number():
    """``2.0 ** 1024`` overflows: attempt 1025 and later must still get a delay."""
    rng = random.Random(3)
    policy = RetryPolicy(attempts=10_000, backoff=1.0, max_backoff=5.0)
    for n in (1, 1023, 1024, 1025, 2000, 9999):
        assert 0.0 <= backoff_delay(policy, n, rng) <= 5.0
    assert backoff_delay(RetryPolicy(backoff=0.0), 5000, rng) == 0.0


def test_an_instance_with_1100_attempts_fails_after_every_one_of_them():
    """On virtual time: 1100 failed attempts, each retried, then a final failure
    that names the last exit code; no attempt is lost to an overflow."""
    policy = RetryPolicy(attempts=1100, backoff=0.5, max_backoff=2.0)
    g = graph([task("t", "x", retry=policy)])
    sim = CoreSim(g, result=lambda key, n: AttemptResult(exit_code=1 if n < 1099 else 3))
    result = sim.run()
    assert result.status == "failed"
    ends = [e for e in sim.events if isinstance(e, AttemptEnded)]
    assert len(ends) == 1100
    assert [e.outcome for e in ends[-2:]] == ["retrying", "failed"]
    assert all(0.0 <= (e.retry_delay or 0.0) <= 2.0 for e in ends)
    settled = [e for e in sim.events if isinstance(e, InstanceSettled)]
    assert [(e.state, e.attempts, e.reason) for e in settled] == [("failed", 1100, "exit 3")]


def test_a_retried_failure_without_code_or_signal_gives_its_cause_in_words() -> None:
    # A cluster job that failed, or any ending an executor reports with no
    # exit code and no signal, is retried under its own words (never "signal None").
    policy = RetryPolicy(attempts=3)
    failed = AttemptResult(exit_code=None, reason="job failed on the cluster: boom")
    assert retry_reason(policy, failed, "") == "job failed on the cluster: boom"
    assert retry_reason(policy, AttemptResult(exit_code=None), "") == "ended without an exit code"
    assert retry_reason(policy, AttemptResult(exit_code=None, signal=15), "") == "signal 15"
    assert retry_reason(policy, AttemptResult(exit_code=2), "") == "exit 2"
