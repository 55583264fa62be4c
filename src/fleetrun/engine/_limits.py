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
- No attempt of pool ``p`` starts before ``paused_until[p]`` (Retry-After); an
  adaptive pool's throttle counted against its concurrency delays only the
  throttled attempt's retry by its Retry-After.
- An adaptive pool's effective rate and concurrency stay within
  [floor x configured, configured].
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from fleetrun.engine._adaptive import AdaptiveLimit, Change, pause_text
from fleetrun.engine._events import BACKOFF_PAUSED, BACKOFF_WHY
from fleetrun.engine._retry import SEARCH_SECONDS, SearchTimeout, log_search
from fleetrun.executors import AttemptResult
from fleetrun.plan import AdaptiveSettings, Graph, Pool, StaticLimits, ThrottleRule

DEFAULT_THROTTLE = ThrottleRule(
    exit=frozenset({75}),
    output=(r"\b429\b", r"(?i)too many requests"),
    retry_after=r"(?i)retry-after:\s*([^\r\n]*[^\s,;])",
)
"""The throttle rule of an adaptive pool that gives none: exit 75 (EX_TEMPFAIL),
"429" or "Too Many Requests" in the output, and the value of a ``Retry-After:``
line for the delay: seconds or an HTTP-date (RFC 9110 section 10.2.3); any
other value is said once (``retry_after_read``), not read as a part of it."""

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
    again, or the Retry-After of this attempt alone when an adaptive pool
    counted the throttle against its concurrency (``AdaptiveLimit.pauses``);
    ``attempts`` is the least number of attempts a throttled instance gets;
    ``paced``: an adaptive pool matched, which slows every start down itself,
    so the retry waits for the pool only (no backoff of its own).
    """

    reason: str
    pause: float
    attempts: int
    paced: bool = False


@dataclass(frozen=True, slots=True)
class ThrottleMatch:
    """One pool's throttle rule matched a failed attempt: ``what`` matched
    ("exit 75", "output matched '429'") and the Retry-After found (seconds), if any."""

    pool: int
    what: str
    retry_after: float | None
    note: str = ""  # what was wrong with the Retry-After found, if anything


class Limits(StaticLimits):
    """The plan's limits (``plan.StaticLimits``: slots and rate buckets) with what a
    run adds: Retry-After pauses, throttle rules, adaptive limits and the reason
    each wait gives.

    ``match`` reads an attempt's log (I/O, done by the driver); everything
    else is arithmetic on the caller's clock, so the scheduler core decides
    with it without awaiting.
    """

    __slots__ = (
        "_adaptive",
        "_backoff",
        "_names",
        "_noted",
        "_notify",
        "_paused",
        "_ready",
        "_rules",
        "_slow",
        "_starting",
        "_why",
        "blocked_by",
        "paused_until",
    )

    def __init__(self, graph: Graph, now: float, notify: Notify) -> None:
        super().__init__(graph, now)
        pools: list[Pool] = list(graph.plan.pools.values())
        self._names = [p.name for p in pools]
        self._notify = notify
        self._noted: set[tuple[int, str]] = set()  # Retry-After notes told, per pool
        # Patterns that ran past their time bound once: not searched again this run.
        self._slow: set[str] = set()
        self._adaptive: list[AdaptiveLimit | None] = []
        self._rules: list[ThrottleRule | None] = []
        for p in pools:
            settings = _settings(p)
            self._adaptive.append(
                None if settings is None else AdaptiveLimit(settings, p.rate, p.concurrency, now)
            )
            self._rules.append(p.throttle or (DEFAULT_THROTTLE if settings else None))
        # An adaptive pool starts at its own limits (the concurrency in slow start).
        self._starting: list[bool] = []
        for k, a in enumerate(self._adaptive):
            self._starting.append(a is not None and a.concurrency != self.caps[k])
            if a is not None:
                self.caps[k] = a.concurrency
        self.paused_until = [-math.inf] * len(pools)
        self._paused = [False] * len(pools)  # a pause was announced and its end not yet
        # The pause on is the pool's own back-off (no Retry-After), not the provider's.
        self._backoff = [False] * len(pools)
        # Per pool: when the token a held-back start waits for is due (None: no
        # start waits for one), to credit a start the event loop woke late for.
        self._ready: list[float | None] = [None] * len(pools)
        # Per pool: the queued reason for (full, rate, pause, back-off), built once.
        self._why = [
            (
                f"pool {n} full",
                f"pool {n} rate",
                f"pool {n} paused for Retry-After",
                f"pool {n} {BACKOFF_PAUSED}",
            )
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
            cap = self.caps[k]
            if cap is not None and self.in_use[k] >= cap:
                a = self._adaptive[k]
                if a is None:
                    self.blocked_by = self._why[k][0]
                    return math.inf
                a.held(True)
                ramp = a.ramp_at()  # a full pool in slow start grows with time
                if ramp <= now:
                    self._apply(k, a.tick(now, self.in_use[k]), now)
                    ramp = a.ramp_at()
                cap = self.caps[k]
                if cap is not None and self.in_use[k] >= cap:
                    self.blocked_by = self._why[k][0]
                    if ramp == math.inf:
                        return math.inf
                    wait = max(wait, ramp - now)
                    continue
            if self._paused[k]:
                left = self.paused_until[k] - now
                if left > 0:
                    if left > wait:
                        wait = left
                        self.blocked_by = self._why[k][3 if self._backoff[k] else 2]
                    continue
                self._paused[k] = False
                self._emit(
                    k,
                    0.0,
                    "resumed: the back-off is over"
                    if self._backoff[k]
                    else "resumed: the Retry-After pause is over",
                )
                a = self._adaptive[k]
                if a is not None:
                    self._apply(k, a.resumed(now), now)
            b = self.buckets[k]
            if b is not None:
                w = b.wait(now)
                if w > 0:
                    self._ready[k] = now + w
                    a = self._adaptive[k]
                    if a is not None:
                        a.held(False)
                if w > wait:
                    wait = w
                    self.blocked_by = self._why[k][1]
        return wait

    def acquire(self, pools: tuple[int, ...], now: float) -> None:
        """Take one slot (and one rate token) in each pool; call only after ``wait_time`` == 0.

        A start that waited for a token and began later than the token was due
        (the event loop was busy spawning or reading other attempts) gets the
        time it lost back, up to half a token: the next start may come that
        much sooner, never sooner than half the rate's interval after this one
        (``burst: 1``). Without it, a bucket of ``burst: 1`` drops the tokens of
        every late wake-up and a pool runs measurably under its rate on a busy
        machine (38/s configured gave 35/s on 2 cores).
        """
        late: list[tuple[int, float]] = []
        for k in pools:
            due = self._ready[k]
            if due is not None:
                self._ready[k] = None
                if now > due:
                    late.append((k, now - due))
        super().acquire(pools, now)
        for k, lost in late:
            b = self.buckets[k]
            if b is not None:
                b.tokens = min(b.burst - 0.5, b.tokens + min(0.5, lost * b.rate))
        for k in pools:
            a = self._adaptive[k]
            if a is not None:
                a.started(now)
                if self._starting[k]:
                    self._starting[k] = False  # said once, at the pool's first start
                    self._emit(
                        k, 0.0, f"slow start: concurrency {a.concurrency} of {a.conc_ceiling}"
                    )

    def take(self, pools: tuple[int, ...], now: float) -> bool:
        """``acquire`` after ``wait_time`` said 0; False, and nothing taken, when a
        pool shared with other runs was taken meanwhile (``_shared.SharedLimits``:
        never here, where only this run takes slots)."""
        self.acquire(pools, now)
        return True

    def close(self) -> None:
        """The run is over (shared pools give back what this run held; nothing here)."""

    def cap(self, name: str) -> int | None:
        """The effective concurrency cap of pool ``name`` (None: uncapped)."""
        return self.caps[self._names.index(name)]

    def rate(self, name: str) -> float | None:
        """The effective rate of pool ``name`` (None: no rate)."""
        b = self.buckets[self._names.index(name)]
        return None if b is None else b.rate

    # -- signals --------------------------------------------------------------------

    def succeeded(self, pools: tuple[int, ...], started_at: float, now: float) -> None:
        """An attempt in ``pools`` (started at clock time ``started_at``) succeeded."""
        for k in pools:
            a = self._adaptive[k]
            if a is not None:
                self._apply(k, a.succeeded(started_at, now, self.in_use[k]), now)

    def match(
        self, pools: tuple[int, ...], result: AttemptResult, log_path: str
    ) -> tuple[ThrottleMatch, ...]:
        """The throttle rules of ``pools`` that a failed attempt's ending matches
        (reads its log in bounded chunks, only for pools with a rule)."""
        matched: list[ThrottleMatch] = []
        for k in pools:
            rule = self._rules[k]
            if rule is None:
                continue
            try:
                what = _match(rule, result, log_path, self._slow)
            except SearchTimeout as e:
                self._slow.add(e.pattern)
                self._say_once(k, _slow_pattern("throttle.output", e))
                continue
            if what is None:
                continue
            delay: float | None = None
            note = ""
            if rule.retry_after is not None and rule.retry_after not in self._slow:
                try:
                    found = log_search(log_path, (rule.retry_after,), group=True)
                except SearchTimeout as e:
                    self._slow.add(e.pattern)
                    found, note = None, _slow_pattern("throttle.retry_after", e)
                if found is not None:
                    delay, note = retry_after_read(found, time.time())
            if note:
                self._say_once(k, note)
            matched.append(ThrottleMatch(k, what, delay, note))
        return tuple(matched)

    def _say_once(self, k: int, note: str) -> None:
        """A pool event said once per pool: a provider repeats the same header."""
        if (k, note) not in self._noted and len(self._noted) < 100:
            self._noted.add((k, note))
            self._emit(k, 0.0, note)

    def rules_attempts(self, matched: tuple[ThrottleMatch, ...]) -> int:
        """The least number of attempts the matched throttle rules give an instance."""
        attempts = 1
        for m in matched:
            rule = self._rules[m.pool]
            assert rule is not None
            attempts = max(attempts, rule.attempts)
        return attempts

    def throttled(
        self, matched: tuple[ThrottleMatch, ...], started_at: float, now: float
    ) -> ThrottleSignal | None:
        """Act on ``match``'s findings: pause the pools for a Retry-After, let
        adaptive pools adapt, and say what happened (None when nothing matched:
        then no limit changes)."""
        if not matched:
            return None
        attempts = 1
        own = 0.0  # a Retry-After for the throttled attempt's retry only
        for m in matched:
            k = m.pool
            rule = self._rules[k]
            assert rule is not None
            attempts = max(attempts, rule.attempts)
            a = self._adaptive[k]
            # An adaptive pool's throttle counted against its concurrency
            # delays only the attempt it throttled (``AdaptiveLimit.pauses``).
            whole = a is None or a.pauses(started_at, now, self.in_use[k])
            if m.retry_after is not None and m.retry_after > 0:
                if whole:
                    self._pause(k, now + m.retry_after, m.retry_after)
                else:
                    own = max(own, m.retry_after)
            if a is not None:
                change = a.throttled(started_at, now, self.in_use[k], m.retry_after, whole)
                self._apply(k, change, now)
        pause = max(own, max(self.paused_until[m.pool] for m in matched) - now)
        paced = any(self._adaptive[m.pool] is not None for m in matched)
        return ThrottleSignal(matched[0].what, pause, attempts, paced)

    # -- changes --------------------------------------------------------------------

    def _pause(self, k: int, until: float, delay: float, backoff: bool = False) -> None:
        """Pause pool ``k`` until ``until`` (``delay`` from now): for the provider's
        Retry-After, or (``backoff``) a back-off of the pool's own."""
        if until <= self.paused_until[k]:
            return  # already paused at least that long
        a = self._adaptive[k]
        if a is not None:
            a.paused(until - delay, until)
        b = self.buckets[k]
        if b is not None:
            # Nothing saved up while paused: the first starts after the pause are
            # paced at the rate, not a burst into a provider that just refilled.
            b.tokens, b.last = 0.0, until
        self._ready[k] = None
        self.paused_until[k] = until
        self._paused[k] = True
        self._backoff[k] = backoff
        why = BACKOFF_WHY if backoff else "for Retry-After"
        self._emit(k, delay, f"paused {pause_text(delay)} {why}")

    def _apply(self, k: int, change: Change | None, now: float) -> None:
        if change is None:
            return
        b = self.buckets[k]
        if b is not None and change.rate is not None:
            b.rate = change.rate
        self.caps[k] = change.concurrency
        self._emit(k, 0.0, change.reason)
        if change.pause > 0:
            self._pause(k, now + change.pause, change.pause, backoff=True)

    def _emit(self, k: int, paused: float, reason: str) -> None:
        b = self.buckets[k]
        self._notify(self._names[k], None if b is None else b.rate, self.caps[k], paused, reason)


def retry_after_seconds(found: str, now: float) -> float | None:
    """A Retry-After value as seconds from ``now`` (wall clock): a number of
    seconds, or an HTTP-date (a date in the past means 0); None when it is
    neither, or a number no provider means (negative, infinite, NaN). Capped
    at ``MAX_PAUSE``."""
    return retry_after_read(found, now)[0]


_SECONDS = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+|inf(?:inity)?|nan)", re.IGNORECASE)
"""A value read as seconds: digits (HTTP's delay-seconds; a fraction too), or a
sign or word that says no delay. ``float`` reads more (``1e1``, ``1_0``, ``0x``
fails): those are said, not read."""
_LEADING_SECONDS = re.compile(r"([0-9]+(?:\.[0-9]+)?)s?(?=$|[\s,;(])")
"""Seconds first, then words: ``5 (from the gateway)``, ``2s``, ``2, 3``."""


def retry_after_read(found: str, now: float) -> tuple[float | None, str]:
    """``retry_after_seconds`` and, when the value was not used as it stands,
    a line that says so (a pool event): unreadable, no delay, or capped."""
    found = found.strip().strip("\"'")
    shown = _shortened(found)
    digits = _SECONDS.fullmatch(found) is not None
    if digits:
        seconds = float(found)
        if math.isinf(seconds) and found.lstrip("+")[:1].isdigit():
            return MAX_PAUSE, _capped(f"{shown}s")  # more digits than a float holds
    else:
        try:
            seconds = max(0.0, parsedate_to_datetime(found).timestamp() - now)
        except (TypeError, ValueError, IndexError, OverflowError):
            lead = _LEADING_SECONDS.match(found)  # "5 (from the gateway)", "2s"
            if lead is not None:
                return min(MAX_PAUSE, float(lead[1])), ""
            return None, (
                f"Retry-After {shown!r} is neither seconds nor an HTTP-date: not paused for it"
            )
    if not math.isfinite(seconds) or seconds < 0:
        # "inf", "nan", "-5": no delay a provider would mean.
        return None, f"Retry-After {shown!r} is no delay: not paused for it"
    if seconds > MAX_PAUSE:
        # Digits as the provider sent them; a date as the seconds it is away.
        return MAX_PAUSE, _capped(f"{shown}s" if digits else f"{seconds:.0f}s")
    return seconds, ""


def _shortened(text: str) -> str:
    """``text`` as a pool event quotes it: at most 40 characters."""
    return text if len(text) <= 40 else text[:37] + "..."


def _capped(value: str) -> str:
    return f"Retry-After {value} is longer than a pause may be: paused {MAX_PAUSE:g}s"


def _settings(pool: Pool) -> AdaptiveSettings | None:
    a = pool.adaptive
    if isinstance(a, AdaptiveSettings):
        return a
    return AdaptiveSettings() if a else None  # ``adaptive=True`` built in code


def _slow_pattern(key: str, e: SearchTimeout) -> str:
    shown = _shortened(e.pattern)
    if e.why:
        return f"{key} '{shown}' cannot be searched ({e.why}): not searched in this run"
    return (
        f"{key} '{shown}' took over {SEARCH_SECONDS:g}s on an attempt's output: no match, "
        "and not searched again in this run; write it without nested repeats such as (a|aa)+"
    )


def _match(rule: ThrottleRule, result: AttemptResult, log_path: str, slow: set[str]) -> str | None:
    if result.exit_code is not None and result.exit_code in rule.exit:
        return f"exit {result.exit_code}"
    patterns = [p for p in rule.output if p not in slow]
    if patterns:
        found = log_search(log_path, patterns)
        if found is not None:
            return f"output matched '{found}'"
    return None
