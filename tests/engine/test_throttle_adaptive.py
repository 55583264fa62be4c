"""The adaptive algorithm on its own, in simulated time (no sleeping)."""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass

import pytest

from fleetrun.engine._adaptive import AdaptiveLimit
from fleetrun.plan import AdaptiveSettings


@dataclass
class Sim:
    starts: int = 0
    throttled: int = 0
    ok: int = 0
    min_rate: float = math.inf
    changes: int = 0
    reasons: list[str] | None = None


def simulate(
    limit: AdaptiveLimit,
    seconds: float,
    server_rate: float,
    burst: int,
    noise: float = 0.0,
    latency: float = 0.05,
    seed: int = 1,
) -> Sim:
    """Start attempts at ``limit.rate`` against a token-bucket provider (Retry-After
    when empty, honoured as a pause) and feed every outcome back to ``limit``."""
    rng = random.Random(seed)
    sim = Sim(reasons=[])
    t = 0.0
    tokens = float(burst)
    last = 0.0
    blocked = 0.0
    pause = 0.0
    next_start = 0.0
    ends: list[tuple[float, float, bool, float | None]] = []
    in_flight = 0
    while t < seconds:
        if ends and ends[0][0] <= next_start:
            t, began, ok, after = heapq.heappop(ends)
            in_flight -= 1
            if ok:
                change = limit.succeeded(began, t, in_flight)
            else:
                if after:
                    pause = max(pause, t + after)
                change = limit.throttled(began, t, in_flight, after)
            if change is not None:
                sim.changes += 1
                assert sim.reasons is not None
                sim.reasons.append(change.reason)
            assert limit.rate is not None
            sim.min_rate = min(sim.min_rate, limit.rate)
            next_start = max(next_start, pause)
            continue
        t = next_start
        limit.started()
        sim.starts += 1
        tokens = min(burst, tokens + (t - last) * server_rate)
        last = t
        after: float | None = None
        if noise and rng.random() < noise:
            ok = False
        elif t >= blocked and tokens >= 1:
            tokens -= 1
            ok = True
        else:
            ok = False
            after = float(max(1, math.ceil((1 - tokens) / server_rate)))
            blocked = t + after
        sim.ok += ok
        sim.throttled += not ok
        heapq.heappush(ends, (t + latency, t, ok, after))
        in_flight += 1
        assert limit.rate is not None
        next_start = max(t + 1 / limit.rate, pause)
    return sim


def test_converges_just_under_the_provider_rate():
    limit = AdaptiveLimit(AdaptiveSettings(), rate=200.0, concurrency=None, now=0.0)
    sim = simulate(limit, 60.0, server_rate=40.0, burst=100)
    assert limit.rate is not None
    assert 0.8 * 40 <= limit.rate <= 1.15 * 40
    # Served: almost everything the provider grants (ideal: 100 + 40/s).
    assert sim.ok >= 0.9 * (100 + 40 * 60)
    assert sim.throttled <= 0.05 * sim.starts
    assert sim.min_rate >= 0.75 * 40  # no collapse below what is granted


def test_random_throttles_do_not_drive_the_rate_to_its_floor():
    settings = AdaptiveSettings()
    limit = AdaptiveLimit(settings, rate=2.0, concurrency=None, now=0.0)
    # No real limit (a huge bucket), but 40% of attempts answer 429 at random.
    sim = simulate(limit, 300.0, server_rate=1e9, burst=10**9, noise=0.4)
    assert limit.rate is not None
    assert sim.min_rate > 2.0 * settings.floor
    assert sim.min_rate >= 2.0 * settings.max_drop * settings.decrease  # one step at most
    assert limit.rate >= 1.5  # restored: the throttles did not follow the rate
    assert sim.reasons is not None
    assert any(r.startswith("restored") for r in sim.reasons)


def test_a_burst_of_throttles_is_one_signal():
    limit = AdaptiveLimit(AdaptiveSettings(), rate=100.0, concurrency=None, now=0.0)
    first = limit.throttled(0.5, 1.0, 10, None)
    assert first is not None
    assert first.rate == pytest.approx(90.0)
    # Nine more from attempts that started before that decrease: nothing changes.
    for k in range(9):
        assert limit.throttled(0.6 + k * 0.01, 1.01 + k * 0.01, 9 - k, None) is None
    assert limit.rate == pytest.approx(90.0)


def test_decrease_learns_from_the_delivered_rate_and_the_pause():
    s = AdaptiveSettings()
    limit = AdaptiveLimit(s, rate=100.0, concurrency=None, now=0.0)
    assert limit.throttled(0.9, 1.0, 0, 2.0) is not None  # 100 -> 90
    for k in range(s.verify):  # the decrease helped
        limit.succeeded(1.0 + k * 0.1, 1.05 + k * 0.1, 0)
    # Next episode: 20 successes in the 4 s since the last signal (pause included).
    for k in range(10):
        limit.succeeded(2.0 + k * 0.2, 2.05 + k * 0.2, 0)
    change = limit.throttled(4.5, 5.0, 0, 1.0)
    assert change is not None
    # 5/s delivered, x0.9 = 4.5/s, but one decrease keeps at least a fifth: 18/s.
    assert limit.rate == pytest.approx(18.0)
    assert "succeeded in 4s" in change.reason
    assert "Retry-After 1s" in change.reason


def test_probes_up_slowly_and_only_when_used():
    s = AdaptiveSettings(probe=1.0, increase=0.02)
    limit = AdaptiveLimit(s, rate=100.0, concurrency=None, now=0.0)
    limit.throttled(0.0, 0.0, 0, None)  # 90/s
    for k in range(s.verify):
        limit.succeeded(0.1, 0.1 + k * 0.01, 0)
    assert limit.rate == pytest.approx(90.0)
    # Used (a start every 1/90 s) for 1 s: grows 2%.
    for _ in range(90):
        limit.started()
    change = limit.succeeded(1.1, 1.2, 0)
    assert change is not None
    assert limit.rate == pytest.approx(91.8)
    assert change.reason.startswith("probing up")
    # Idle (two starts in 5 s): no growth, the pool is not using its rate.
    limit.started()
    limit.started()
    assert limit.succeeded(6.0, 6.2, 0) is None
    assert limit.rate == pytest.approx(91.8)


def test_configured_values_are_ceilings_and_floor_holds():
    s = AdaptiveSettings(floor=0.25, verify=1)
    limit = AdaptiveLimit(s, rate=10.0, concurrency=8, now=0.0)
    t = 0.0
    for _ in range(50):  # throttled on every attempt, each after the last decrease
        t += 1.0
        limit.throttled(t, t + 0.1, (limit.concurrency or 1) - 1, None)
    assert limit.rate == pytest.approx(2.5)
    assert limit.concurrency == 2
    for _ in range(2000):
        t += 1.0
        for _ in range(20):
            limit.started()
        limit.succeeded(t, t + 0.01, 8)
    assert limit.rate == pytest.approx(10.0)
    assert limit.concurrency == 8
