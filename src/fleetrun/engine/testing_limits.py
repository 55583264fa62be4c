"""Providers' limits in virtual time, for tests and tuning of ``_adaptive``.

``simulate`` runs ``n`` requests through one adaptive pool (its rate bucket,
concurrency cap and Retry-After pauses, called exactly as ``Limits`` calls
``AdaptiveLimit``) against a model of a provider: a token bucket with Azure
Resource Manager's penalty rule, a concurrency limit, a sliding window,
random throttles, or a token bucket whose rate changes over time. Each
request costs a spawn latency before it reaches the provider and an exit
latency after, as a real ``sh`` + ``curl`` does. Nothing sleeps: a minute
of a provider runs in milliseconds, so tests can assert makespans and
counts exactly, and the real servers (``tests/engine/throttle_server.py``,
``bench/bench_throttle.py``) check the same behaviour with real processes.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from fleetrun.engine._adaptive import AdaptiveLimit, Change
from fleetrun.plan import AdaptiveSettings

__all__ = [
    "ConcurrencyLimit",
    "Provider",
    "RandomThrottle",
    "SimResult",
    "SlidingWindow",
    "TokenBucket",
    "simulate",
]


class Provider(Protocol):
    """A model of what a provider admits."""

    def arrive(self, t: float, service: float) -> tuple[float | None, float | None]:
        """A request arrives at ``t``: (when it is done, None) when admitted;
        (None, Retry-After or None) when throttled."""

    def done(self, t: float) -> None:
        """An admitted request finished at ``t``."""


class TokenBucket:
    """``rate`` per second, ``burst`` saved up; a 429 with ``Retry-After:
    retry_after`` when empty; with ``penalty`` a request during that delay
    gets a new one (ARM's rule). ``changes``: (time, new rate), in order.
    ``header=False``: the 429 says no Retry-After, the delay holds all the same."""

    def __init__(
        self,
        rate: float,
        burst: int,
        retry_after: float = 1.0,
        penalty: bool = True,
        changes: Sequence[tuple[float, float]] = (),
        header: bool = True,
    ) -> None:
        self.rate, self.burst, self.retry_after, self.penalty = rate, burst, retry_after, penalty
        self.header = header
        self.changes = list(changes)
        self.tokens = float(burst)
        self.last = 0.0
        self.blocked_until = -1.0

    def rate_at(self, t: float) -> float:
        """The rate granted at ``t``."""
        r = self.rate
        for at, new in self.changes:
            if t >= at:
                r = new
        return r

    def arrive(self, t: float, service: float) -> tuple[float | None, float | None]:
        self.tokens = min(self.burst, self.tokens + (t - self.last) * self.rate_at(t))
        self.last = t
        said = self.retry_after if self.header else None
        if t < self.blocked_until:
            if self.penalty:
                self.blocked_until = t + self.retry_after
            return None, said
        if self.tokens >= 1:
            self.tokens -= 1
            return t + service, None
        self.blocked_until = t + self.retry_after
        return None, said

    def done(self, t: float) -> None:
        pass


class ConcurrencyLimit:
    """At most ``limit`` requests in progress; a 429 with ``Retry-After`` beyond.
    ``lag``: the provider counts a finished request out that many seconds late
    (a real server's bookkeeping after the response is sent)."""

    def __init__(self, limit: int, retry_after: float | None = 1.0, lag: float = 0.0) -> None:
        self.limit, self.retry_after, self.n, self.lag = limit, retry_after, 0, lag
        self._leaving: list[float] = []

    def arrive(self, t: float, service: float) -> tuple[float | None, float | None]:
        while self._leaving and self._leaving[0] <= t:
            heapq.heappop(self._leaving)
            self.n -= 1
        if self.n >= self.limit:
            return None, self.retry_after
        self.n += 1
        return t + service, None

    def done(self, t: float) -> None:
        heapq.heappush(self._leaving, t + self.lag)


class SlidingWindow:
    """At most ``limit`` requests in any ``window`` seconds; Retry-After until
    the oldest leaves the window (whole seconds, at least 1)."""

    def __init__(self, limit: int, window: float = 10.0) -> None:
        self.limit, self.window = limit, window
        self.times: list[float] = []

    def arrive(self, t: float, service: float) -> tuple[float | None, float | None]:
        self.times = [x for x in self.times if x > t - self.window]
        if len(self.times) >= self.limit:
            return None, float(max(1, math.ceil(self.times[0] + self.window - t)))
        self.times.append(t)
        return t + service, None

    def done(self, t: float) -> None:
        pass


class RandomThrottle:
    """A share ``p`` of requests throttled at random, with no limit behind them."""

    def __init__(self, p: float, retry_after: float | None = None, seed: int = 1) -> None:
        self.p, self.retry_after, self.rng = p, retry_after, random.Random(seed)

    def arrive(self, t: float, service: float) -> tuple[float | None, float | None]:
        if self.rng.random() < self.p:
            return None, self.retry_after
        return t + service, None

    def done(self, t: float) -> None:
        pass


@dataclass
class SimResult:
    """What one simulated run did: its makespan, 429s, and every change of the pool."""

    makespan: float = 0.0
    throttled: int = 0
    requests: int = 0
    changes: list[tuple[float, float | None, int | None, str]] = field(default_factory=list)

    def rate_at(self, t: float, initial: float | None) -> float | None:
        """The pool's effective rate at ``t``."""
        r = initial
        for at, rate, _, _ in self.changes:
            if at <= t:
                r = rate
        return r


def simulate(
    provider: Provider,
    n: int,
    rate: float | None = None,
    concurrency: int | None = None,
    service: float = 0.0,
    spawn: float = 0.02,
    exit_latency: float = 0.01,
    settings: AdaptiveSettings | None = None,
    seed: int = 0,
    spawn_rate: float | None = None,
) -> SimResult:
    """Run ``n`` requests (throttled ones are retried) through one adaptive
    pool with ceilings ``rate``/``concurrency`` against ``provider``.

    ``spawn_rate``: the most starts per second the machine manages (a busy
    machine spawns processes one after the other, so a pool set faster starts
    no faster than this); None: as fast as the pool allows."""
    rng = random.Random(seed)
    now = 0.0
    a = AdaptiveLimit(settings or AdaptiveSettings(), rate, concurrency, now)
    res = SimResult(requests=n)
    cap = a.concurrency
    bucket_rate, tokens, tokens_at = rate, 1.0, 0.0
    paused_until = -1.0
    in_use = queue = 0
    queue = n
    events: list[tuple[float, int, str, float, float | None]] = []
    seq = 0
    wakes: set[float] = set()
    done = 0
    spawn_free = 0.0  # when the machine can spawn the next process
    resume = False  # a pause is under way: ``resumed`` at its end

    def push(t: float, kind: str, started: float = 0.0, ra: float | None = None) -> None:
        nonlocal seq
        heapq.heappush(events, (t, seq, kind, started, ra))
        seq += 1

    def wake(t: float) -> None:
        t = max(t, now + 1e-6)
        key = round(t, 6)
        if key not in wakes:
            wakes.add(key)
            push(t, "wake", key)

    def apply(change: Change | None) -> None:
        nonlocal cap, bucket_rate, paused_until, resume
        if change is None:
            return
        if change.rate is not None:
            bucket_rate = change.rate
        cap = change.concurrency
        if change.pause > 0 and now + change.pause > paused_until:
            paused_until, resume = now + change.pause, True
        res.changes.append((now, change.rate, change.concurrency, change.reason))

    while done < n:
        while queue > 0:
            if cap is not None and in_use >= cap:
                a.held(True)
                ramp = a.ramp_at()
                if ramp <= now:
                    apply(a.tick(now, in_use))
                    continue
                if ramp < math.inf:
                    wake(ramp)
                break
            if now < paused_until:
                wake(paused_until)
                break
            if resume:
                resume = False
                apply(a.resumed(now))
                continue
            if spawn_rate is not None and now < spawn_free - 1e-9:
                wake(spawn_free)  # busy spawning: the pool's token waits (as a late wake-up)
                break
            if bucket_rate is not None:
                tokens = min(1.0, tokens + (now - tokens_at) * bucket_rate)
                tokens_at = now
                if tokens < 1.0:
                    a.held(False)
                    wake(now + (1.0 - tokens) / bucket_rate)
                    break
                tokens -= 1.0
            in_use += 1
            queue -= 1
            if spawn_rate is not None:
                spawn_free = now + (0.5 + rng.random()) / spawn_rate
            a.started(now)
            push(now + spawn * (0.5 + rng.random()), "arrive", now)
        if not events:
            break
        t, _, kind, started, ra = heapq.heappop(events)
        now = max(now, t)
        if kind == "wake":
            wakes.discard(started)
        elif kind == "arrive":
            end, retry_after = provider.arrive(now, service)
            if end is None:
                push(now + 0.005 + exit_latency, "throttled", started, retry_after)
            else:
                push(end, "served", started)
        elif kind == "served":
            provider.done(now)
            push(now + exit_latency, "ok", started)
        elif kind == "ok":
            in_use -= 1
            done += 1
            apply(a.succeeded(started, now, in_use))
        elif kind == "retry":
            queue += 1
        elif kind == "throttled":
            in_use -= 1
            res.throttled += 1
            whole = a.pauses(started, now, in_use)
            if ra and whole and now + ra > paused_until:
                a.paused(now, now + ra)
                paused_until = now + ra
                resume = True
            if ra and not whole:
                push(now + ra, "retry")  # only this request waits for its Retry-After
            else:
                queue += 1
            apply(a.throttled(started, now, in_use, ra, whole))
    res.makespan = now
    return res
