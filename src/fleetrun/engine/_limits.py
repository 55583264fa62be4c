"""Pools at run time: concurrency slots, start-rate buckets, throttle signals,
Retry-After pauses and adaptive limits.

A node holds one slot in every pool of its task at once. ``wait_time`` and
``acquire`` look at all of a node's pools together, so a node either takes
every slot it needs or none (no partial holding, hence no deadlock between
pools).

Invariants:
- ``in_use[p] <= cap[p]`` for every capped pool whenever a slot is taken (an
  adaptive decrease may leave ``in_use`` above the new cap for a while: no
  attempt is stopped, no new one starts until it is back under).
- No attempt of pool ``p`` starts before ``paused_until[p]`` (Retry-After).
- An adaptive pool's effective rate and concurrency stay within
  [floor x configured, configured].
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from fleetrun.engine._adaptive import AdaptiveLimit, Change
from fleetrun.engine._retry import log_search
from fleetrun.executors import AttemptResult
from fleetrun.plan import AdaptiveSettings, Bucket, Graph, Pool, ThrottleRule, pools_of_tasks

DEFAULT_THROTTLE = ThrottleRule(
    exit=frozenset({75}),
    output=(r"\b429\b", r"(?i)too many requests"),
    retry_after=r"(?i)retry-after:\s*(\d+(?:\.\d+)?)",
)
"""The throttle rule of an adaptive pool that gives none: exit 75 (EX_TEMPFAIL),
"429" or "Too Many Requests" in the output, ``Retry-After: N`` for the delay."""

MAX_PAUSE = 3600.0
"""A Retry-After longer than this is taken as this (a garbled header must not stall a run)."""

# (pool, effective rate, effective concurrency, paused seconds, reason)
Notify = Callable[[str, float | None, int | None, float, str], None]


@dataclass(frozen=True, slots=True)
class ThrottleSignal:
    """An attempt's ending read as "slow down" by at least one of its pools.

    ``reason`` says what matched ("exit 75", "output matched '429'"), as a
    retry reason does (``AttemptEnded.throttled`` tells the two apart);
    ``pause`` is the time left (seconds) until its pools let anything start
    again; ``attempts`` is the least number of attempts a throttled instance
    gets.
    """

    reason: str
    pause: float
    attempts: int


class Limits:
    """Per-pool slot counts, rate buckets, pauses and adaptive limits for one run."""

    __slots__ = (
        "_adaptive",
        "_buckets",
        "_caps",
        "_names",
        "_notify",
        "_paused",
        "_rules",
        "_why",
        "blocked_by",
        "in_use",
        "paused_until",
        "pools_of_task",
    )

    def __init__(self, graph: Graph, now: float, notify: Notify) -> None:
        pools: list[Pool] = list(graph.plan.pools.values())
        self._names = [p.name for p in pools]
        self._caps: list[int | None] = [p.concurrency for p in pools]
        self.in_use = [0] * len(pools)
        self._buckets: list[Bucket | None] = [
            Bucket(p.rate, p.burst, now) if p.rate else None for p in pools
        ]
        self._notify = notify
        self.pools_of_task = pools_of_tasks(graph)
        self._adaptive: list[AdaptiveLimit | None] = []
        self._rules: list[ThrottleRule | None] = []
        for p in pools:
            settings = _settings(p)
            self._adaptive.append(
                None if settings is None else AdaptiveLimit(settings, p.rate, p.concurrency, now)
            )
            self._rules.append(p.throttle or (DEFAULT_THROTTLE if settings else None))
        self.paused_until = [-math.inf] * len(pools)
        self._paused = [False] * len(pools)  # a pause was announced and its end not yet
        # Per pool: the queued reason for (full, rate, pause), built once.
        self._why = [
            (f"pool {n} full", f"pool {n} rate", f"pool {n} paused for Retry-After")
            for n in self._names
        ]
        # Why the last ``wait_time`` > 0 held its pools back (one of ``_why``).
        self.blocked_by = ""

    # -- slots ----------------------------------------------------------------------

    def wait_time(self, pools: tuple[int, ...], now: float) -> float:
        """0 when a node holding ``pools`` may start now; the seconds until a rate
        token frees up or a pause ends when only those hold it back; ``inf`` when
        a slot is full. When it is not 0, ``blocked_by`` says which pool held the
        node back and how ("pool api full", "pool api rate", "pool api paused for
        Retry-After"): a full pool, else the longest wait."""
        wait = 0.0
        for k in pools:
            cap = self._caps[k]
            if cap is not None and self.in_use[k] >= cap:
                self.blocked_by = self._why[k][0]
                return math.inf
            if self._paused[k]:
                left = self.paused_until[k] - now
                if left > 0:
                    if left > wait:
                        wait = left
                        self.blocked_by = self._why[k][2]
                    continue
                self._paused[k] = False
                self._emit(k, 0.0, "resumed: the Retry-After pause is over")
            b = self._buckets[k]
            if b is not None:
                w = b.wait(now)
                if w > wait:
                    wait = w
                    self.blocked_by = self._why[k][1]
        return wait

    def acquire(self, pools: tuple[int, ...], now: float) -> None:
        """Take one slot (and one rate token) in each pool; call only after ``wait_time`` == 0."""
        for k in pools:
            self.in_use[k] += 1
            b = self._buckets[k]
            if b is not None:
                b.refill(now)
                b.tokens -= 1.0
            a = self._adaptive[k]
            if a is not None:
                a.started()

    def release(self, pools: tuple[int, ...]) -> None:
        """Give back the slots taken by ``acquire``."""
        for k in pools:
            self.in_use[k] -= 1

    def cap(self, name: str) -> int | None:
        """The effective concurrency cap of pool ``name`` (None: uncapped)."""
        return self._caps[self._names.index(name)]

    def rate(self, name: str) -> float | None:
        """The effective rate of pool ``name`` (None: no rate)."""
        b = self._buckets[self._names.index(name)]
        return None if b is None else b.rate

    # -- signals --------------------------------------------------------------------

    def succeeded(self, pools: tuple[int, ...], started_at: float, now: float) -> None:
        """An attempt in ``pools`` (started at clock time ``started_at``) succeeded."""
        for k in pools:
            a = self._adaptive[k]
            if a is not None:
                self._apply(k, a.succeeded(started_at, now, self.in_use[k]))

    def throttle_signal(
        self,
        pools: tuple[int, ...],
        result: AttemptResult,
        log_path: str,
        started_at: float,
        now: float,
    ) -> ThrottleSignal | None:
        """Read a failed attempt's ending against its pools' throttle rules.

        When it is a throttle signal: pause the pools for a Retry-After found
        in the output, let adaptive pools adapt, and return what happened;
        otherwise None (and no limit changes).
        """
        matched: list[tuple[int, str, float | None]] = []
        for k in pools:
            rule = self._rules[k]
            if rule is None:
                continue
            what = _match(rule, result, log_path)
            if what is None:
                continue
            delay: float | None = None
            if rule.retry_after is not None:
                found = log_search(log_path, (rule.retry_after,), group=True)
                if found is not None:
                    try:
                        delay = min(MAX_PAUSE, max(0.0, float(found)))
                    except ValueError:
                        delay = None
            matched.append((k, what, delay))
        if not matched:
            return None
        attempts = 1
        for k, _, delay in matched:
            rule = self._rules[k]
            assert rule is not None
            attempts = max(attempts, rule.attempts)
            if delay is not None and delay > 0:
                self._pause(k, now + delay, delay)
            a = self._adaptive[k]
            if a is not None:
                self._apply(k, a.throttled(started_at, now, self.in_use[k], delay))
        pause = max(0.0, max(self.paused_until[k] for k, _, _ in matched) - now)
        return ThrottleSignal(matched[0][1], pause, attempts)

    # -- changes --------------------------------------------------------------------

    def _pause(self, k: int, until: float, delay: float) -> None:
        if until <= self.paused_until[k]:
            return  # already paused at least that long
        self.paused_until[k] = until
        self._paused[k] = True
        self._emit(k, delay, f"paused {delay:g}s for Retry-After")

    def _apply(self, k: int, change: Change | None) -> None:
        if change is None:
            return
        b = self._buckets[k]
        if b is not None and change.rate is not None:
            b.rate = change.rate
        self._caps[k] = change.concurrency
        self._emit(k, 0.0, change.reason)

    def _emit(self, k: int, paused: float, reason: str) -> None:
        b = self._buckets[k]
        self._notify(self._names[k], None if b is None else b.rate, self._caps[k], paused, reason)


def _settings(pool: Pool) -> AdaptiveSettings | None:
    a = pool.adaptive
    if isinstance(a, AdaptiveSettings):
        return a
    return AdaptiveSettings() if a else None  # ``adaptive=True`` built in code


def _match(rule: ThrottleRule, result: AttemptResult, log_path: str) -> str | None:
    if result.exit_code is not None and result.exit_code in rule.exit:
        return f"exit {result.exit_code}"
    if rule.output:
        found = log_search(log_path, rule.output)
        if found is not None:
            return f"output matched '{found}'"
    return None
