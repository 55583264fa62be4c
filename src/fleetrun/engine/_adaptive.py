"""Adaptive pool limits: find what the provider grants, fast, and stay just under it.

A provider tells a caller "too much" only with a throttle (a 429, exit 75),
often with a Retry-After it enforces: Azure Resource Manager answers a
request sent during that delay with a new one, so every throttle costs the
whole pool the delay. The algorithm therefore spends as few throttles as it
can, both while it searches for the limit and once it has found it.
The anchors, and what is taken from each:

- **TCP CUBIC** (Ha, Rhee, Xu 2008; RFC 9438): remember the value at the
  last loss, come back towards it quickly, stay near it (the plateau), then
  probe past it convexly. Here: ``bad`` is the value at the last throttle;
  below its target (the rate known good, else just under the fitted
  granted rate, else halfway between the rate cut to and ``bad``) the rate
  grows by half the remaining gap each ``probe`` seconds (concave; the
  concurrency towards one under ``bad`` the same way), holds there
  for ``hold`` seconds, then grows past it by ``increase``, 3x, 5x ... per
  probe (convex). A probe past ``bad`` that is throttled again doubles
  ``hold``, and quadruples it when its throttle finds the granted rate where
  the fit put it (within ``_CONFIRMED``), up to ``16 x hold``: each probe
  costs a Retry-After pause, so a limit that does not move is probed ever
  more rarely, one that just moved is probed soon. ``bad`` is forgotten
  (the limit rose) only once a rate at or past it is known good: one probe
  unthrottled may have run on the provider's burst.
- **A limit that came down** (CUBIC keeps its last maximum as the point to
  return to; BBR probes for more bandwidth every few seconds, on a wall-clock
  cadence, so it finds capacity that came back): a throttle at or under the
  rate known good, within ``hold`` seconds of another throttle, says the
  provider lowered its limit (one alone may be starts that bunched up on
  their way); so does a fitted granted rate under ``_CAME_DOWN`` x the good
  rate or under the fit the pool ran at. The rate halves from the good one
  (TCP's cut; to the fit when there is one), stays there
  ``hold`` seconds, then probes back towards the old good rate, half the gap
  at once; a probe that runs a whole ``probe`` interval
  unthrottled past the lowered limit goes straight back to the old rate, one
  that is throttled goes back to where the probes began, and the next probe
  comes after ``probe`` seconds (not a doubling ``hold``). So a limit that
  comes back is found within a few seconds, at the cost of one throttle per
  probe while it stays lowered; after ``_FIT_AGE`` seconds the lowered limit
  is taken as the limit and probed as any other.
- **BBR** (Cardwell et al. 2016): judge the granted rate only from intervals
  in which the pool really sent at its rate (not paused by a Retry-After,
  not application-limited: starts >= half the rate), and keep the last
  rate known to be good, and measure the rate really delivered, not the
  one configured. Here: a throttle with a Retry-After that ends a fresh
  interval (below) is judged at the pool's measured start rate over that
  interval when the machine started under ``_MACHINE_BOUND`` x the rate (a
  busy machine spawns ~50 processes a second, whatever the pool allows;
  without a pause, fewer starts may only mean little to start, and random
  throttles must not cut a pool to its idle rate); the rate never grows past
  ``bad`` further than ``1 / _MACHINE_BOUND`` x what the pool measurably
  started. ``good`` is the highest (measured) rate that ran
  ``_GOOD_PROBES`` probe intervals of real sending without a throttle; one
  above the fitted granted rate by more than the fitted burst explains over
  that time drops the fit and its burst (it was low), one nearer counts
  only up to just under the fit (it may have run on the burst); a throttle
  above it goes straight back to it (one step, not a search). The interval
  before a throttle tells how far over the limit the pool is: throttled
  within ``probe`` seconds of real sending means far over, and the rate
  halves; later means near, and it becomes ``decrease`` x itself. A
  Retry-After pause never counts as sending time, so a long pause cannot
  make the provider look slower than it is.
- **The granted rate of a token bucket** (the provider's rate and burst):
  an interval that begins at the end of a Retry-After pause (the bucket
  refilled) and runs at one rate (grown to at most ``1 / _FRESH_GROWTH`` of
  it) until a throttle is a point ``starts = burst + granted x seconds``,
  counted from its first start (the pool's own bucket is empty after a
  pause, so that start comes a token after the pause's end).
  Two points ``3x`` apart in length give both (a least-squares line); the
  burst is kept, and then one interval alone gives the granted rate,
  ``(starts - burst) / seconds``, so a limit that comes down is measured at
  its first throttle. Starts past what the fit predicts, unthrottled, say
  the fit was low and drop it. The point is taken twice: at the throttle,
  from the starts before it (the decision cannot wait), and again when the
  pause is over (``_refine``), from what the provider really admitted: the
  attempts of the interval that succeeded, up to the earliest throttled
  start. A busy machine's spawn delays vary, so starts reach the provider in
  another order than they were made; counting starts would bend the fit.
  Fresh intervals are short (the pool far over the limit empties the bucket
  in a fraction of a second), so the fit can come out low; a probe past it
  that ends in a throttle then bounds the granted rate over the whole
  interval of sending, the plateau included (``_envelope``: a bucket empty
  at the throttle admitted at most ``burst + granted x seconds`` in every
  window before it), and a bound above the fit takes its place.
- **TCP slow start** and **Netflix concurrency-limits' AIMD**: the
  concurrency starts at ``initial`` (bounded by the configured value) and
  doubles every ``probe`` seconds while in use and unthrottled, +1 per
  success between, until the first throttle.
- **Telling a concurrency limit from a rate limit**: a concurrency limit
  throttles attempts that start when the pool is full (in-flight counts), a
  rate limit those that start when the rate bucket paces it. A throttle
  counts against the concurrency when the pool's last held-back start was
  held by its concurrency, against the rate otherwise; a pool with only one
  of the two adapts that one. Against the concurrency, the pool keeps the
  attempts that were running when the throttle came and were not throttled
  themselves: each throttle of that episode takes one slot away, so when the
  throttled attempts (fast, as 429s are) have come back, the concurrency is
  what the provider admitted. Such a throttle's Retry-After delays only the
  throttled attempt's retry (``pauses``): the admitted slots keep working
  (Netflix's limiter never stops admitting under its limit either); a
  throttle of an attempt started within that delay pauses the whole pool,
  as a rate limit's penalty rule needs. A cut of the concurrency that did not
  help such throttles says the provider limits something else (a rate): from
  then on each Retry-After pauses the whole pool.
- **One episode, one decrease** (TCP's one cut per window): a throttle of
  an attempt that started before the last decrease says nothing about the
  new limits (a Retry-After still pauses the pool).
- **Random throttles do not collapse the pool**: after a decrease the next
  ``verify`` attempts started under the new limits are watched. Were the
  throttles caused by the rate, the provider still grants the same starts
  per second and the throttled share falls to ``1 - (1 - before) x
  old/new``; were they random, it stays where it was. When it stays nearer
  ``before`` (and >= 10%), the decrease is undone and that share becomes
  the pool's noise level; later decreases need a share clearly above it
  (+15 points) over at least ``verify`` attempts. Two exceptions. A share
  of ``_SURE`` or more is never noise: it is a limit the pool is still over
  (a penalty that blocks while requests keep coming, a burst of 1 met
  unevenly); the next throttle cuts again. When those throttles said no
  Retry-After, the pool also pauses itself (``probe`` seconds, doubling
  while it goes on, up to ``_MAX_BACKOFF``: the exponential back-off of
  clients of such APIs) and halves its rate, since a penalty that holds
  while requests keep coming lets none through however far the rate is
  cut by steps. And when the throttles under the
  new rate paused the pool, the share says little: a provider's penalty
  throttles what was on its way, and each pause lets a few requests through
  however fast the pool sends (a bucket of burst 2 at 10/s admits about 3
  per pause at 50/s, 4 at 25/s), so a limit's share hardly falls while the
  pool is still over it, as random throttles' does not. The two differ far
  under the limit: a limit's throttles stop, random ones go on. So the pool
  checks there (``1/_DEEP_CHECK`` of the rate where the cuts began, a
  quarter of the current one at least), for as many attempts as random
  throttles as frequent would show at least once in 19 checks of 20: none
  throttled is a limit (kept; the pool grows back towards it, and later
  throttles under pauses are never noise), any is noise (the decrease is
  undone, back to where the cuts began), unless the first start after each
  pause of the check was admitted, more often than random throttles that
  frequent would allow once in 20: a provider's bucket refills over the
  Retry-After it asked for, so what it refuses comes after the first start
  (a burst of 1 or 2 met at a rate still over it, the check's rate too when
  the pool was set 10x over). That is a limit under the check's rate: the
  rate halves from there and grows back below it. While every first start
  so far was admitted but too few to be sure, the check watches on, if
  enough of them are due within ``4 x verify`` attempts.

Nothing ever goes below ``floor`` x the configured values, nor above them.
Every number is a field of ``plan.AdaptiveSettings`` (``pools.X.adaptive``) or
a constant below, documented where it is defined.
All times come from the caller's clock, so tests drive this without
sleeping. Every change is returned as a ``Change`` with its reason;
``Limits`` turns each into a ``PoolChanged`` event.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from fleetrun.plan import AdaptiveSettings

_NOISE_MARGIN = 0.15
"""A pool that has seen rate-independent throttles decreases only above noise + this."""

_MIN_NOISE = 0.10
"""A throttled share under this after a decrease counts as "helped", whatever before was."""

_FAST_CUT = 0.5
"""The factor of a rate throttled within one ``probe`` interval of real sending."""

_FITS = 4
"""Fresh intervals kept for the granted-rate fit."""

_FIT_AGE = 60.0
"""Seconds after which a fresh interval no longer counts (the limit may have changed)."""

_MAX_STARTS = 100_000
"""Start times kept for one interval (an interval longer than that is not fresh anyway)."""

_GOOD_PROBES = 3
"""A rate is known good after this many ``probe`` intervals of real sending unthrottled."""

_MAX_HOLD = 16
"""``hold`` grows after each failed probe past the last throttled value, up to this factor."""

_CONFIRMED = 0.05
"""A probe's throttle that finds the granted rate within this share of the fit confirms it."""

_CAME_DOWN = 0.75
"""A fitted granted rate under this share of a rate that ran unthrottled: the limit came down
(a rate "good" for a few probes may have run on the provider's burst, so a small gap is not)."""

_FRESH_GROWTH = 0.9
"""An interval counts as fresh at one rate while it grew to at most 1/this of its start."""

_MIN_FIT_S = 0.6
"""Seconds one interval needs before it gives a granted rate with a known burst
(the burst's error over a shorter one is too large a share of the rate)."""

_MEASURED_STARTS = 8
"""Starts an interval needs before its measured start rate stands for the pool's rate."""

_SURE = 0.7
"""A throttled share after a decrease never taken for noise (``_verified``): most requests
refused is a limit the pool is still over (a burst of 1 met unevenly, a penalty that blocks
while requests keep coming); random throttles of a third or more still show it at times."""

_DEEP_CHECK = 8.0
"""Throttles under Retry-After pauses that did not fall after a decrease are checked at
1/this of the rate where the cuts began (``_verified``): a limit's stop there."""

_MAX_BACKOFF = 60.0
"""The longest pause of a pool's own when most requests are refused without a Retry-After."""

_MACHINE_BOUND = 0.8
"""A pool that starts under this share of its rate is held back by the machine, not its rate."""


def pause_text(seconds: float) -> str:
    """A pause as a reason says it: ``1.19s``, ``12s``, ``3600s`` (not ``1.18986s``)."""
    return f"{seconds:.3g}s" if seconds < 100 else f"{seconds:.0f}s"


@dataclass(frozen=True, slots=True)
class Change:
    """New effective limits of a pool and why; ``pause``: seconds the pool starts
    nothing from now (a back-off of the pool's own, ``AdaptiveLimit`` has noted it)."""

    rate: float | None
    concurrency: int | None
    reason: str
    pause: float = 0.0


class AdaptiveLimit:
    """The effective rate and concurrency of one adaptive pool (see the module doc)."""

    __slots__ = (
        "_asked_from",
        "_asked_until",
        "_attempt_only",
        "_await_first",
        "_backoff",
        "_bad_conc",
        "_bad_rate",
        "_burst",
        "_cap_held",
        "_chain_top",
        "_conc_floor",
        "_conc_steps",
        "_cut_to",
        "_deep",
        "_ends",
        "_episode",
        "_episode_floor",
        "_first_start",
        "_firsts_ok",
        "_firsts_refused",
        "_fits",
        "_former",
        "_former_at",
        "_good",
        "_granted",
        "_held_by_cap",
        "_history",
        "_hold",
        "_last_change",
        "_last_decrease",
        "_last_probe",
        "_last_throttle",
        "_limited",
        "_noise",
        "_noise_seen",
        "_ok_times",
        "_paused_until",
        "_probe_from",
        "_rate_floor",
        "_rate_steps",
        "_refit",
        "_sending_since",
        "_since_rate",
        "_slow_start",
        "_start_times",
        "_starts",
        "_suspect",
        "_suspect_at",
        "_throttles",
        "_verify",
        "_verify_asked",
        "_verify_len",
        "_verify_paused",
        "_whole_pauses",
        "_window",
        "conc_ceiling",
        "concurrency",
        "rate",
        "rate_ceiling",
        "settings",
    )

    def __init__(
        self,
        settings: AdaptiveSettings,
        rate: float | None,
        concurrency: int | None,
        now: float,
    ) -> None:
        s = self.settings = settings
        self.rate_ceiling = rate
        self.conc_ceiling = concurrency
        self.rate = rate
        self.concurrency = None if concurrency is None else min(concurrency, s.initial)
        self._slow_start = concurrency is not None and concurrency > s.initial
        self._rate_floor = rate * s.floor if rate else 0.0
        self._conc_floor = max(1, math.ceil(concurrency * s.floor)) if concurrency else 1
        self._last_decrease = -math.inf
        self._last_change = now
        self._last_throttle = -math.inf
        self._last_probe = now
        self._paused_until = -math.inf
        self._sending_since = now  # start of the current interval of real sending
        # Start times of the current interval of real sending (rate pools only).
        self._start_times: deque[float] = deque()
        # Fresh intervals (sending began with the provider's bucket refilled by
        # a pause, or at the run's start, at one rate): (seconds until the first
        # throttled start, starts before it), and the granted rate they give.
        self._fits: deque[tuple[float, int, float]] = deque(maxlen=_FITS)
        self._granted: float | None = None
        # Start times of the attempts that succeeded (rate pools only): the
        # requests a fresh interval's bucket really admitted, counted once its
        # pause is over and they have all come back (``_refine``).
        self._ok_times: deque[float] = deque()
        # The fresh interval whose point waits for that count: (when its
        # throttle came, when it began, the earliest throttled start in it).
        self._refit: tuple[float, float, float] | None = None
        self._burst: float | None = None  # the provider's burst, from the last two-point fit
        self._since_rate = rate  # the rate when the current interval of sending began
        self._starts = 0  # starts since the last probe or change (application-limited check)
        self._ends = 0  # attempts ended since the last decrease
        self._throttles = 0  # ... of which throttled
        # After a decrease: (rate, concurrency, share before, ends seen, throttles seen).
        self._verify: tuple[float | None, int | None, float, int, int] | None = None
        # A throttle under the new limits paused the whole pool (a Retry-After).
        self._verify_paused = False
        # While a deep check is under way (``_verified``): the rate the cuts
        # began at, restored if the throttles go on; and whether one found a
        # limit (the throttles stopped), after which they are never noise.
        self._deep: float | None = None
        self._limited = False
        # The start of the first attempt after the last pause, until it ends
        # (``_await_first``: that start has not come yet); in a deep check, how
        # many such first starts were admitted and refused.
        self._await_first = False
        self._first_start: float | None = None
        self._firsts_ok = self._firsts_refused = 0
        # A throttle in the current check asked for a delay; once a cut of the
        # concurrency did not help such throttles, every Retry-After pauses
        # the whole pool (``pauses``).
        self._verify_asked = False
        self._whole_pauses = False
        self._verify_len = s.verify  # attempts the current check watches
        self._backoff = 0.0  # the last pause of the pool's own (``_verified``)
        self._noise = 0.0
        self._noise_seen = (0, 0)  # (throttled, ended) since the noise was found
        # The last ``verify`` endings (True: throttled), the share before a
        # decrease. It starts full of successes: a first throttle is not yet a trend.
        self._window: deque[bool] = deque([False] * s.verify, maxlen=s.verify)
        # (probe time, rate then, 0 when the pool did not use it): the last
        # ``_GOOD_PROBES`` probes' worth, to tell which rate has run unthrottled.
        self._history: deque[tuple[float, float]] = deque()
        self._good: float | None = None  # the highest rate known to run unthrottled
        # The rate known good before the provider's limit came down, and when it
        # came down: probed back towards quickly for ``_FIT_AGE`` seconds.
        self._former: float | None = None
        self._former_at = -math.inf
        self._probe_from: float | None = None  # the rate before a probe towards ``_former``
        # The good rate when a throttle came at or under it, and when.
        self._suspect: float | None = None
        self._suspect_at = -math.inf
        self._bad_rate = math.inf  # the rate of the last rate throttle
        self._cut_to: float | None = None  # the rate that throttle cut to
        # The limits before the first of the decreases since the pool last grew.
        self._chain_top: tuple[float | None, int | None] | None = None
        self._bad_conc = math.inf  # the concurrency of the last concurrency throttle
        self._rate_steps = 0  # convex probes past ``_bad_rate`` so far
        self._conc_steps = 0
        self._hold = s.hold
        self._held_by_cap = False  # the last held-back start waited for a slot, not a token
        self._cap_held = False  # a start waited for a slot since the last change
        # While > 0: attempts that were running when the current concurrency
        # episode began and have not ended yet (each one throttled frees a slot for good).
        self._episode = 0
        self._episode_floor = 1
        # The Retry-After of the last throttle that paused only its attempt:
        # from when, until when (a start in it that is throttled pauses the pool).
        self._asked_from = -math.inf
        self._asked_until = -math.inf
        self._attempt_only = False  # the throttle being handled paused only its attempt

    # -- observations -------------------------------------------------------------

    def started(self, now: float) -> None:
        """An attempt of the pool started at ``now``."""
        self._starts += 1
        if self.rate is not None and len(self._start_times) < _MAX_STARTS:
            self._start_times.append(now)
        if self._await_first and now >= self._paused_until:
            self._await_first = False
            self._first_start = now

    def _first_after_pause(self, started_at: float, refused: bool) -> None:
        """Count the first attempt after a pause, in a deep check, when it ends."""
        if started_at != self._first_start:
            return
        self._first_start = None
        if self._deep is not None:
            if refused:
                self._firsts_refused += 1
            else:
                self._firsts_ok += 1

    def held(self, by_cap: bool) -> None:
        """A start was held back: by the pool's concurrency (``by_cap``) or its rate."""
        self._held_by_cap = by_cap
        if by_cap:
            self._cap_held = True

    def paused(self, now: float, until: float) -> None:
        """From ``now``, the pool starts nothing before ``until`` (a Retry-After)."""
        if self._paused_until <= now:
            # The previous pause is over: sending restarted when it ended.
            self._sending_since = max(self._sending_since, self._paused_until)
        self._paused_until = max(self._paused_until, until)
        self._await_first = True

    def _sending(self, now: float) -> float:
        """Seconds of real sending at the current limits, up to ``now``: since the
        last change of limits or the end of the last Retry-After pause."""
        since = max(self._sending_since, self._last_change)
        if self._paused_until <= now:
            since = max(since, self._paused_until)
        return max(0.0, now - since)

    def ramp_at(self) -> float:
        """The clock time at which a full pool in slow start may grow (inf: none)."""
        if not self._slow_start:
            return math.inf
        return max(self._last_probe, self._last_throttle) + self.settings.probe

    def succeeded(self, started_at: float, now: float, in_flight: int) -> Change | None:
        """An attempt that started at ``started_at`` succeeded at ``now``."""
        self._ends += 1
        self._first_after_pause(started_at, refused=False)
        if self._noise > 0.0:
            # The noise level: the long-run throttled share since it was found
            # (a first estimate from ``verify`` attempts is rough).
            t, n = self._noise_seen[0], self._noise_seen[1] + 1
            self._noise_seen = (t, n)
            if n >= 4 * self.settings.verify:
                self._noise = t / n
        self._window.append(False)
        if self.rate is not None:
            if len(self._ok_times) >= _MAX_STARTS:
                self._ok_times.popleft()
            self._ok_times.append(started_at)
        if self._episode > 0 and started_at < self._last_decrease:
            self._episode -= 1
        if self._verify is not None and started_at >= self._last_decrease:
            change = self._verified(throttled=False, now=now)
            if change is not None:
                return change
        conc, ceiling = self.concurrency, self.conc_ceiling
        # Slow start: +1 per success while the window is in use.
        if (
            self._slow_start
            and conc is not None
            and ceiling is not None
            and (in_flight + 1) * 2 >= conc
            and conc < ceiling
        ):
            self.concurrency = conc + 1
        return self.tick(now, in_flight)

    def pauses(self, started_at: float, now: float, in_flight: int) -> bool:
        """Whether the Retry-After of a throttle (about to be passed to
        ``throttled``) pauses the whole pool, or only the throttled attempt's
        retry.

        A throttle counted against the concurrency (see the module doc) says
        "too many at once", not "too fast": the attempts still running were
        admitted, and the ones that end free slots the provider admits again
        at once. Pausing every start for the delay would idle the admitted
        slots (a 1 s pause costs a 4-slot pool of 0.2 s requests 20 of them).
        So only the throttled attempt waits for its Retry-After, unless it
        started within the Retry-After of an earlier such throttle: a provider
        that throttles those (a rate limit with a penalty rule, taken for a
        concurrency limit) gets the whole pool paused, as the rate does.
        """
        if self._asked_from <= started_at < self._asked_until or self._whole_pauses:
            return True
        if self._episode > 0 and started_at < self._last_decrease:
            return False  # the same concurrency episode
        if started_at < self._last_decrease:
            return True
        return not self._by_conc(in_flight)

    def _by_conc(self, in_flight: int) -> bool:
        """Whether a throttle now counts against the concurrency (module doc)."""
        conc = self.concurrency
        return conc is not None and (
            # Full when it started, and held back by its slots since the last
            # change: the starts were paced by the concurrency, not the rate.
            self.rate is None or (self._cap_held and in_flight + 1 >= conc)
        )

    def throttled(
        self,
        started_at: float,
        now: float,
        in_flight: int,
        retry_after: float | None,
        pool_paused: bool = True,
    ) -> Change | None:
        """An attempt that started at ``started_at`` was throttled at ``now``.

        ``in_flight`` counts the pool's attempts still running (this one not
        included); ``retry_after`` is the delay the provider asked for, if any;
        ``pool_paused``: it paused the whole pool (``pauses``), else only the
        throttled attempt's retry waits for it.
        """
        self._attempt_only = retry_after is not None and retry_after > 0 and not pool_paused
        if retry_after is not None and retry_after > 0 and self._verify is not None:
            self._verify_asked = True
        if self._refit is not None:
            at, since, first = self._refit
            if since <= started_at < first:
                self._refit = (at, since, started_at)  # the earliest throttled start
        if retry_after is not None and self._attempt_only:
            self._asked_from = now
            self._asked_until = max(self._asked_until, now + retry_after)
        self._ends += 1
        self._throttles += 1
        self._window.append(True)
        self._first_after_pause(started_at, refused=True)
        if self._noise > 0.0:
            self._noise_seen = (self._noise_seen[0] + 1, self._noise_seen[1] + 1)
            self._noise = max(self._noise, self._noise_seen[0] / self._noise_seen[1])
        if self._noise > 0.0 and self._verify is None:
            share = self._throttles / self._ends
            # Above the noise by more than chance explains (three standard
            # deviations of a share of ``_ends`` attempts, at least the margin).
            spread = 3 * math.sqrt(self._noise * (1 - self._noise) / max(1, self._ends))
            if self._ends < 2 * self.settings.verify or share <= self._noise + max(
                _NOISE_MARGIN, spread
            ):
                return None  # within the rate-independent noise seen before
        self._last_throttle = now
        if started_at < self._last_decrease:
            # The same episode: already acted upon. A concurrency episode gives
            # back the slot of each attempt that was admitted to none.
            if self._episode > 0:
                self._episode -= 1
                least = max(self._conc_floor, self._episode_floor, in_flight)
                if self.concurrency is not None and self.concurrency > least:
                    self.concurrency = least
                    self._bad_conc = self.concurrency + 1
                    return Change(
                        self.rate,
                        self.concurrency,
                        f"throttled ({in_flight} admitted in flight)",
                    )
            return None
        if self._verify is not None:
            if retry_after is not None and retry_after > 0 and pool_paused:
                self._verify_paused = True
            return self._verified(throttled=True, now=now)
        return self._decrease(now, started_at, in_flight, retry_after)

    def resumed(self, now: float) -> Change | None:
        """The pool's Retry-After pause is over (also checked at each ``tick``)."""
        return self._refine(now)

    def tick(self, now: float, in_flight: int) -> Change | None:
        """Time passed without a throttle: grow the limits when it is time to."""
        refined = self._refine(now)
        if refined is not None:
            return refined
        s = self.settings
        elapsed = now - max(self._last_probe, self._last_throttle)
        if self._verify is not None or elapsed < s.probe - 1e-9:
            return None
        grew: list[str] = []
        rate = self.rate
        if rate is not None and self.rate_ceiling is not None:
            sending = self._sending(now)
            # Application-limited (BBR): a rate the pool does not use proves nothing.
            started = self._starts / max(elapsed, 1e-9)
            used = started >= rate * 0.5 and sending >= s.probe * 0.5
            # Held back by the machine (it spawned fewer than the rate allows):
            # what ran is the measured rate, and a higher rate would prove nothing.
            bound = self._spaced(now - elapsed) < rate * _MACHINE_BOUND
            # The rate in force ``_GOOD_PROBES`` probes ago has run unthrottled
            # since (at it or above it, really sending): it is good.
            self._history.append((now, (started if bound else rate) if used else 0.0))
            while (
                len(self._history) > _GOOD_PROBES
                and self._history[1][0] <= now - s.probe * _GOOD_PROBES
            ):
                self._history.popleft()
            t0, r0 = self._history[0]
            if r0 > 0 and t0 <= now - s.probe * _GOOD_PROBES + 1e-9 and t0 >= self._last_throttle:
                self._good = r0 if self._good is None else max(self._good, r0)
                if self._former is not None and self._good >= self._former * 0.999:
                    self._former = self._probe_from = None  # the limit is back where it was
            if self._granted is not None and self._burst is not None:
                # The fit says a bucket refilled at the last pause admits
                # ``burst + granted x t`` starts in ``t`` seconds: more ran
                # unthrottled, so the fit was low.
                since = self._sending_since
                n = sum(1 for x in self._start_times if x >= since)
                if n > self._burst + self._granted * (now - since) + _MEASURED_STARTS:
                    self._granted = self._burst = None
                    self._fits.clear()
            if self._good is not None and self._good >= self._bad_rate:
                # Ran unthrottled past it for ``_GOOD_PROBES`` probes (one
                # probe alone may run on the provider's burst): the limit rose.
                self._cut_to = None
                self._bad_rate = math.inf
                self._hold = s.hold
            if self._granted is not None and self._good is not None:
                # Unthrottled for ``_GOOD_PROBES`` probes further above the fit
                # than its burst explains: the fit was low. Nearer, the rate
                # may have run on the burst: it counts as good only up to the fit.
                covered = (self._burst or 0.0) / (s.probe * _GOOD_PROBES)
                if self._good > self._granted + covered:
                    self._granted = self._burst = None
                    self._fits.clear()
                else:
                    self._good = min(self._good, self._granted * (1 - s.margin))
            if used and not bound and rate < self.rate_ceiling:
                new = self._grow(rate, self._bad_rate, self._rate_steps, now)
                if new is not None:
                    # Past the last throttled rate, never past what the
                    # machine showed it can start.
                    top = max(started / _MACHINE_BOUND, min(self._bad_rate, new))
                    new = max(rate, min(new, top))
                    self.rate = min(self.rate_ceiling, new)
                    grew.append(f"rate {_rate(rate)} -> {_rate(self.rate)}")
        conc, ceiling = self.concurrency, self.conc_ceiling
        # Netflix AIMD: grow the concurrency only while it is in use.
        if (
            conc is not None
            and ceiling is not None
            and conc < ceiling
            and (in_flight + 1) * 2 >= conc
        ):
            if self._slow_start:
                new_c = min(ceiling, conc * 2)
            else:
                new_c = self._grow_conc(conc, ceiling, now)
            if new_c != conc:
                self.concurrency = new_c
                grew.append(f"concurrency {conc} -> {new_c}")
        self._last_probe = now
        self._starts = 0
        if grew:
            self._chain_top = None  # grew unthrottled: a later decrease starts a new run
            self._last_change = now
            self._cap_held = False
        if not grew:
            return None
        phase = "slow start" if self._slow_start else "probing up"
        return Change(
            self.rate,
            self.concurrency,
            f"{phase}: {', '.join(grew)}, no throttle for {elapsed:.3g}s",
        )

    # -- decisions ----------------------------------------------------------------

    def _grow(self, value: float, bad: float, steps: int, now: float) -> float | None:
        """The next value below, at or past ``bad`` (CUBIC's concave, plateau, convex)."""
        s = self.settings
        former = self._former_rate(now)
        if former is not None and value < former:
            if now - self._last_throttle < self._hold:
                return None  # the plateau under the lowered limit
            if value >= bad * 0.999:
                # Past the lowered limit unthrottled for a whole probe: the
                # limit came back; straight to the rate known good before.
                return former
            # Towards the former rate, half the gap at once: a limit that came
            # down for a while comes back at once, and is found within seconds.
            if self._probe_from is None:
                self._probe_from = value  # where the probes began: back there if throttled
            return value + max((former - value) / 2, value * s.increase)
        if bad == math.inf:
            return value * (1 + s.increase * (1 << min(steps, 6)))
        target = self._rate_target()
        if value < target * 0.999:
            return min(target, value + max((target - value) / 2, value * s.increase))
        if now - self._last_throttle < self._hold:
            return None  # the plateau
        # Convex past the plateau (CUBIC): 1, 3, 5 ... increments, so the
        # total grows as the square of the probes (slowly at first).
        self._rate_steps += 1
        return value * (1 + s.increase * (2 * min(steps, 8) + 1) / 2)

    def _former_rate(self, now: float) -> float | None:
        """The rate known good before the limit came down, while it is recent."""
        if self._former is not None and now - self._former_at > _FIT_AGE:
            # The lowered limit has lasted: it is the limit now.
            self._former = self._probe_from = None
        return self._former

    def _rate_target(self) -> float:
        """Where the rate comes back to quickly after a throttle (CUBIC's last
        maximum): the last rate known good; else just under the fitted granted
        rate; else halfway between the rate cut to and the one throttled."""
        m = self.settings.margin
        top = self._bad_rate * (1 - m)
        if self._good is not None:
            return min(top, self._good)
        if self._granted is not None:
            return min(top, self._granted * (1 - m))
        if self._cut_to is not None:
            return min(top, (self._cut_to + self._bad_rate) / 2)
        return top

    def _grow_conc(self, conc: int, ceiling: int, now: float) -> int:
        """The next concurrency: up to one below the last throttled value, hold,
        then past it by 1, 2, 4 ... (CUBIC's shape in whole slots)."""
        bad = self._bad_conc
        if bad != math.inf and conc < bad - 1:
            return min(ceiling, conc + max(1, (int(bad) - 1 - conc) // 2))
        if bad != math.inf and now - self._last_throttle < self._hold:
            return conc  # the plateau
        # Convex, slowly at first (1, 1, 2, 2, 3 ...): each slot too many costs
        # a throttle of every attempt that starts beside it.
        step = 1 + self._conc_steps // 2
        self._conc_steps += 1
        if conc >= bad:
            self._bad_conc = math.inf  # ran unthrottled at it: the limit rose
            self._hold = self.settings.hold
        return min(ceiling, conc + step)

    def _spaced(self, since: float) -> float:
        """The start rate while the pool was starting, since ``since``: from its
        first start to its last (inf: too few starts to tell)."""
        xs = [x for x in self._start_times if x >= since]
        if len(xs) < _MEASURED_STARTS or xs[-1] <= xs[0]:
            return math.inf
        return (len(xs) - 1) / (xs[-1] - xs[0])

    def _sent(self, until: float) -> float | None:
        """The pool's measured start rate over its current interval of real
        sending, up to ``until`` (None: too few starts to tell)."""
        since = max(self._sending_since, self._last_change)
        if self._paused_until <= until:
            since = max(since, self._paused_until)
        n = sum(1 for x in self._start_times if since <= x < until)
        if n < _MEASURED_STARTS or until <= since:
            return None
        return n / (until - since)

    def _envelope(self, first: float) -> float | None:
        """The most the provider can have granted, from the current interval of
        sending, which ended in a throttle of the attempt started at ``first``
        (None: too short to tell).

        A token bucket of rate ``g`` and burst ``b`` that is empty when that
        attempt arrives admitted the starts of some window ``[x, first)``
        with at most ``b + g (first - x)`` tokens: ``g >= (starts - b) /
        (first - x)`` for that window, so ``g`` is at most the largest such
        value over the windows of at least ``_MIN_FIT_S``. It holds whatever
        the rate did in the interval (a plateau, then probes past it)."""
        since = self._sending_since
        xs = [x for x in self._start_times if since <= x < first]
        if len(xs) < _MEASURED_STARTS:
            return None
        b = self._burst or 0.0
        best: float | None = None
        n = len(xs)
        for i, x in enumerate(xs):
            span = first - x
            if span < _MIN_FIT_S:
                break
            got = (n - i - b) / span
            if best is None or got > best:
                best = got
        return best

    def _fit(self, started_at: float, now: float) -> None:
        """A fresh interval ended in a throttle: add its point and, with two
        or more far enough apart, fit ``starts = burst + granted x seconds``
        (a token bucket refilled by the pause: what it held, then its rate).
        With points too close together, one interval and the burst of an
        earlier fit give the granted rate: ``(starts - burst) / seconds``."""
        sent = [x for x in self._start_times if self._sending_since <= x < started_at]
        # From the interval's first start, not the pause's end: the pool's own
        # bucket is empty after a pause, so its first start comes a token later,
        # and the provider's full bucket is first drawn on by that start.
        t = started_at - (sent[0] if sent else self._sending_since)
        if t <= 0 or not self.rate_ceiling:
            return
        n = len(sent)
        self._fits.append((now, n, t))
        self._refit = (now, self._sending_since, started_at)
        self._solve(now, n, t)

    def _solve(self, now: float, n: int, t: float, cap: bool = True) -> None:
        """The granted rate (and burst) from the fresh intervals' points, the
        last one ``(t, n)``; ``cap``: the fit bounds the rate known good
        (``_cap_good``)."""
        if not self.rate_ceiling:
            return
        pts = [(t_, n_) for (at, n_, t_) in self._fits if now - at <= _FIT_AGE]
        ts = [p[0] for p in pts]
        if len(pts) >= 2 and max(ts) >= max(3 * min(ts), _MIN_FIT_S):
            mt = sum(ts) / len(ts)
            mn = sum(p[1] for p in pts) / len(pts)
            var = sum((x - mt) ** 2 for x in ts)
            slope = sum((x - mt) * (y - mn) for x, y in pts) / var
            if 0 < slope < self.rate_ceiling:
                self._granted = slope
                self._burst = max(0.0, mn - slope * mt)
                if cap:
                    self._cap_good()
            return
        if self._burst is not None and n > self._burst and t >= _MIN_FIT_S:
            one = (n - self._burst) / t
            if 0 < one < self.rate_ceiling:
                self._granted = one
                if cap:
                    self._cap_good()

    def _refine(self, now: float) -> Change | None:
        """A fresh interval's point again, once its pause is over: ``n`` is now
        the requests the provider admitted (those started in the interval that
        succeeded), not the starts before the throttled one, and the interval
        ends at the earliest throttled start. The starts a busy machine
        reordered on their way (a spawn delay that varies) no longer bend the
        fit; the rate follows the refined fit at once."""
        if self._refit is None or now < self._paused_until:
            return None
        at, since, first = self._refit
        self._refit = None
        admitted = [x for x in self._ok_times if since <= x <= at]
        n = len(admitted)
        t = first - min(admitted, default=since)
        while self._ok_times and self._ok_times[0] < at:
            self._ok_times.popleft()  # the next interval begins after the pause
        if t <= 0 or not self._fits or self._fits[-1][0] != at:
            return None
        self._fits[-1] = (at, n, t)
        before = self._granted
        # The throttle's decision judged the rate known good already (a
        # limit that came down keeps it, to probe back towards).
        self._solve(now, n, t, cap=False)
        granted, rate = self._granted, self.rate
        if granted is None or rate is None or granted == before:
            return None
        m = self.settings.margin
        new = min(granted * (1 - m), self._bad_rate * (1 - m))
        new = max(new, self._bad_rate * _FAST_CUT)  # at most half, as ``_decrease``
        new = max(self._rate_floor, min(new, self.rate_ceiling or new))
        if abs(new - rate) <= rate * 0.02:
            return None
        if new > rate and self._former_rate(now) is not None:
            return None  # the limit came down: that decision was not the fit's to undo
        self.rate = self._cut_to = self._since_rate = new
        self._last_change = now
        self._start_times.clear()
        return Change(
            new,
            self.concurrency,
            f"throttled (granted about {_rate(granted)}, {n} admitted in {t:.3g}s)",
        )

    def _cap_good(self) -> None:
        """A rate known good before a fit under it may have run on the burst:
        the fit, newer, bounds it (later evidence may still drop the fit)."""
        if self._granted is not None and self._good is not None:
            self._good = min(self._good, self._granted * (1 - self.settings.margin))

    def _decrease(
        self, now: float, started_at: float, in_flight: int, retry_after: float | None
    ) -> Change | None:
        s = self.settings
        before_rate, before_conc = self.rate, self.concurrency
        if self._chain_top is None:
            self._chain_top = (before_rate, before_conc)
        share = sum(self._window) / len(self._window)
        sending = self._sending(now)
        by_conc = self._by_conc(in_flight)
        why: list[str] = []
        if by_conc and before_conc is not None:
            # The attempts still running were admitted; the throttled ones that
            # started beside this one give their slots back as they come in.
            self._failed_probe(before_conc >= self._bad_conc * (1 - s.margin))
            self.concurrency = max(self._conc_floor, min(before_conc, in_flight))
            self._episode = in_flight
            # One episode at most halves the concurrency (TCP's multiplicative
            # decrease): a provider slow to count ended requests out throttles
            # some that would fit, and the next episode narrows further.
            self._episode_floor = (before_conc + 1) // 2
            self._bad_conc = self.concurrency + 1
            self._conc_steps = 0
            why.append(f"{in_flight} in flight")
        elif before_rate is not None:
            rate = before_rate
            # Fresh: sending began at the end of the last pause (the provider's
            # bucket refilled during it) or at the run's start, at this rate.
            # It may have grown a little since (probes): then the pool sent
            # above the granted rate all along, and the bucket never refilled.
            fresh = (
                self._sending_since >= self._last_decrease - 1e-9
                and retry_after is not None
                and self._since_rate is not None
                and self._since_rate >= before_rate * _FRESH_GROWTH
            )
            sent = self._sent(started_at) if fresh else None
            if sent is not None and sent < rate * _MACHINE_BOUND:
                # The machine started fewer than the rate allows (BBR's delivery
                # rate), and the provider's pause says it counts time: that
                # measured rate is what met the provider's limit. (Without a
                # pause, a pool that had little to start says nothing.)
                why.append(f"{_rate(sent)} started of {_rate(rate)}")
                rate = sent
            # Throttled at or under the rate known good (it ran unthrottled
            # for ``_GOOD_PROBES`` probes): the limit came down. Start afresh,
            # from half the rate (TCP's cut), and probe back towards the old
            # rate soon (``_grow``). Under the fitted rate only: the fit was
            # high, or the limit came down; start afresh.
            came_down: float | None = None
            fitted = self._granted  # the fit the pool ran at, before this throttle
            if self._granted is not None and rate <= self._granted * (1 - s.margin):
                self._granted = None
                self._fits.clear()
            # One throttle at the good rate may be chance (starts that bunched
            # up on their way); one within ``hold`` seconds of another is not.
            known = self._good or 0.0
            if self._suspect is not None and now - self._suspect_at <= s.hold:
                known = max(known, self._suspect)
            if known > 0.0 and rate <= known * 1.001:
                if now - self._last_decrease <= s.hold:
                    came_down = known
                    self._suspect = None
                else:
                    self._suspect, self._suspect_at = known, now
            back = self._probe_from
            if back is not None and back < rate * 0.999:
                came_down = None  # a probe towards the former rate failed: back to its start
            elif back is not None:
                # Throttled where the probes began: the limit came down further.
                came_down = max(came_down or 0.0, self._former or 0.0)
                back = self._probe_from = None
            if fresh:
                # Throttled at or under the rate known good (or the fit's):
                # the limit may have come down (judged below), and a fit under
                # that rate does not say the good rate ran on the burst.
                good = self._good
                self._fit(started_at, now)
                steady = max(good or 0.0, (fitted or 0.0) * (1 - s.margin))
                if good is not None and rate <= steady * 1.001:
                    self._good = good
            elif (
                fitted is not None
                and self._burst is not None
                and came_down is None
                and self._former is None
                and rate > fitted
            ):
                # A probe past the fit ended in a throttle: the whole interval
                # of sending (at the plateau, then the probes) bounds what the
                # provider granted, more closely than the short fresh intervals
                # of the fit; a bound above the fit says the fit was low.
                bound = self._envelope(started_at)
                if bound is not None and fitted < bound < rate:
                    self._granted = bound
            granted = self._granted
            if back is not None:
                new = back
                why.append(f"back to {_rate(new)}, the limit is still lowered")
            elif granted is not None and granted < rate:
                # One throttle at most halves the rate (TCP's cut): a fit from
                # a busy machine's bunched-up starts can come out far too low.
                new = max(granted * (1 - s.margin), rate * _FAST_CUT)
                good = max(self._good or 0.0, known, (fitted or 0.0) * (1 - s.margin))
                if new < good * _CAME_DOWN:
                    # Well under a rate that ran unthrottled: the limit came
                    # down; probe back towards that rate soon (``_grow``).
                    came_down = good
                    why.append(
                        f"the limit came down: granted about {_rate(granted)}, "
                        f"under {_rate(good)}, which ran before"
                    )
                else:
                    why.append(f"granted about {_rate(granted)}")
            elif came_down is None and self._good is not None and self._good < rate * 0.98:
                new = self._good  # straight back to the last rate known good
                why.append(
                    f"back to {_rate(new)}, the last rate that ran {_GOOD_PROBES} probe "
                    "intervals unthrottled"
                )
            else:
                self._good = None  # throttled at or below it: that knowledge is stale
                self._history.clear()
                # Throttled soon after a fresh start means far over: halve.
                far = fresh and sending < s.probe
                new = rate * (_FAST_CUT if far else s.decrease)
                if came_down is not None:
                    new = came_down * _FAST_CUT
                if came_down is not None:
                    why.append(
                        f"the limit came down: throttled twice at or under {_rate(came_down)}, "
                        "which ran unthrottled before"
                    )
                else:
                    why.append(f"after {sending:.3g}s of sending at {_rate(rate)}")
            # A probe past the fit whose throttle found the limit where the fit
            # put it (within ``_CONFIRMED``): the limit has not moved; the next
            # probe waits four times as long (twice after another failed probe).
            confirmed = (
                fitted is not None
                and granted is not None
                and abs(granted - fitted) <= fitted * _CONFIRMED
            )
            self._failed_probe(rate > self._rate_target() * 1.001, confirmed)
            if came_down is not None:
                self._former = max(came_down, self._former or 0.0)
                self._former_at = now
                self._hold = s.hold  # the first probe back after a whole plateau
            elif self._former_rate(now) is not None:
                self._hold = s.probe  # the limit came down lately: probe back soon
            self._bad_rate = rate
            self._rate_steps = 0
            self.rate = min(rate, max(new, rate * s.max_drop, self._rate_floor))
            self._cut_to = self.rate
        self._since_rate = self.rate
        if retry_after is not None:
            only = ", for the throttled attempt only" if self._attempt_only else ""
            why.append(f"Retry-After {pause_text(retry_after)}{only}")
        self._attempt_only = False
        self._slow_start = False
        self._verify = (before_rate, before_conc, share, 0, 0)
        self._verify_paused = self._verify_asked = False
        self._last_decrease = self._last_probe = self._last_change = now
        self._cap_held = False
        self._ends = self._throttles = self._starts = 0
        self._start_times.clear()
        since = self._refit[1] if self._refit is not None else now
        while self._ok_times and self._ok_times[0] < since:
            self._ok_times.popleft()
        if (self.rate, self.concurrency) == (before_rate, before_conc):
            return None
        detail = f" ({', '.join(why)})" if why else ""
        return Change(self.rate, self.concurrency, f"throttled{detail}")

    def _check_deep(self, top: float, deep: float, after: float, now: float) -> None:
        """Check at rate ``deep`` whether the throttles (``after`` of the attempts)
        stop; ``top``: the rate restored if they go on."""
        self._deep = top
        self._verify = (self.rate, self.concurrency, after, 0, 0)
        # Long enough that random throttles as frequent as these would
        # show at least once in 19 checks of 20: (1 - after)^n <= 5%.
        n = math.ceil(math.log(0.05) / math.log(1.0 - after)) if after < 1 else 1
        self._verify_len = min(4 * self.settings.verify, max(self.settings.verify, n))
        self._verify_paused = False
        self._firsts_ok = self._firsts_refused = 0
        self.rate = self._cut_to = self._since_rate = deep
        self._last_decrease = self._last_change = self._last_probe = now
        self._ends = self._throttles = self._starts = 0
        self._start_times.clear()

    def _failed_probe(self, past_bad: bool, confirmed: bool = False) -> None:
        """A throttle at or past the last throttled value: the limit did not move;
        probe it less often. Below it: the limit moved; probe soon again."""
        s = self.settings
        grow = 4 if confirmed else 2
        self._hold = min(self._hold * grow, s.hold * _MAX_HOLD) if past_bad else s.hold

    def _verified(self, throttled: bool, now: float) -> Change | None:
        assert self._verify is not None
        rate, conc, before, ends, throttles = self._verify
        ends += 1
        throttles += int(throttled)
        if ends < self._verify_len:
            self._verify = (rate, conc, before, ends, throttles)
            return None
        self._verify_len = self.settings.verify
        self._verify = None
        after = throttles / ends
        # Were the throttles caused by the rate, the share of throttled attempts
        # would have fallen to 1 - (1 - before) * old/new (the provider grants the
        # same number per second); were they random, it would stay at ``before``.
        # The nearer of the two wins; a tie counts as caused by the rate.
        if rate is not None and self.rate:
            ratio = rate / self.rate
        elif conc is not None and self.concurrency:
            ratio = conc / self.concurrency
        else:
            ratio = 1.0
        predicted = max(0.0, 1.0 - (1.0 - before) * ratio)
        deepest: float | None = None
        if after >= _SURE and rate != self.rate:
            # Most requests still refused: a limit the pool is still over (a
            # penalty that blocks while requests keep coming, a burst of 1 met
            # unevenly), never noise. The next throttle cuts again.
            self._deep = None
            if self._verify_paused or self.rate is None:
                return None
            # And the provider did not say for how long: a penalty may hold
            # while requests keep coming. Back off (a pause of the pool's own,
            # doubling while it goes on, as clients of such APIs do) and halve.
            self._backoff = min(_MAX_BACKOFF, 2 * self._backoff or self.settings.probe)
            self.paused(now, now + self._backoff)
            old = self.rate
            self.rate = self._cut_to = self._since_rate = max(self._rate_floor, old / 2)
            self._last_decrease = self._last_change = self._last_probe = now
            self._verify = (old, self.concurrency, after, 0, 0)
            self._start_times.clear()
            return Change(
                self.rate,
                self.concurrency,
                f"throttled: {after:.0%} still refused after the decrease, without a "
                f"Retry-After: paused {self._backoff:.3g}s",
                pause=self._backoff,
            )
        if self._deep is not None and throttles == 0:
            self._deep, self._limited = None, True  # the throttles stopped: a limit
            return Change(
                self.rate,
                self.concurrency,
                f"no throttle in {ends} attempts at {_rate(self.rate)}: a limit under "
                f"{_rate(rate)}, not noise",
            )
        if self._deep is None and (
            after < _MIN_NOISE or abs(after - predicted) <= abs(after - before)
        ):
            self._backoff = 0.0
            return None  # the decrease helped: the throttles depended on the rate
        if self._deep is not None:
            ok = self._firsts_ok
            if self.rate and not self._firsts_refused and ok and (1.0 - after) ** ok > 0.05:
                # Every first start after a pause admitted so far, too few to be
                # sure: watch on while enough of them (each pause brings one) are
                # due within four times the check, until a first is refused.
                need = math.ceil(math.log(0.05) / math.log(1.0 - after))
                due = math.ceil(need * ends / ok)
                if due <= 4 * self.settings.verify:
                    self._verify = (rate, conc, before, ends, throttles)
                    self._verify_len = due
                    return None
            if self.rate and not self._firsts_refused and ok and (1.0 - after) ** ok <= 0.05:
                # Yet the first start after each pause was admitted, more often
                # than random throttles this frequent would allow once in 20:
                # the provider refilled over each pause and refused what came
                # next (a burst of 1 or 2 met at a rate still over it): a limit
                # under this rate, found as surely as the check's zero would
                # say it. Halve from here, as a decrease, and grow back below it.
                checked = self.rate
                self._deep, self._limited = None, True
                self._bad_rate = checked
                self.rate = self._cut_to = self._since_rate = max(self._rate_floor, checked / 2)
                self._last_decrease = self._last_change = self._last_probe = now
                self._ends = self._throttles = self._starts = 0
                self._start_times.clear()
                return Change(
                    self.rate,
                    self.concurrency,
                    f"throttled: {after:.0%} still refused at {_rate(checked)}, but each "
                    f"first start after a Retry-After pause was admitted ({ok} of {ok}): "
                    f"a limit under {_rate(checked)}, not noise",
                )
            # The deep check: throttles went on as before at a fraction of the
            # rate, so they do not depend on it; back to where the cuts began.
            deepest, self._deep = self._deep, None
        elif self._verify_paused and self._noise == 0.0 and rate != self.rate and self._limited:
            return None  # a deep check found a limit: throttles under pauses are its
        elif (
            self._verify_paused and self._noise == 0.0 and rate != self.rate and rate and self.rate
        ):
            # Throttles under the new rate paused the pool: a provider's penalty
            # throttles what was on its way, and each pause lets a few through
            # however fast the pool sends, so the share hardly falls while the
            # pool is still over the limit, as it would for random throttles.
            # Tell them apart where they differ: far under the rate where the
            # cuts began, a limit's throttles stop and random ones go on.
            top = self._chain_top[0] if self._chain_top is not None else rate
            top = max(top or 0.0, rate)
            # (a quarter of the rate at least: throttles that go on at a rate
            # already that far under can be a small burst met unevenly).
            deep = max(self._rate_floor, min(top / _DEEP_CHECK, self.rate / 4))
            if deep < self.rate:
                self._check_deep(top, deep, after, now)
                return Change(
                    deep,
                    self.concurrency,
                    f"throttled: {after:.0%} still refused under Retry-After pauses after "
                    f"the decrease; checking at {_rate(deep)} whether the throttles stop",
                )
        if conc != self.concurrency and after > before + max(_NOISE_MARGIN, before / 2):
            # A concurrency cut, and more throttled than before: still over the
            # provider's limit (one slow to count requests out), not noise.
            return None
        top_conc = self._chain_top[1] if self._chain_top is not None else conc
        if self._verify_asked and self.concurrency is not None and top_conc != self.concurrency:
            # A cut of the concurrency did not help, and the provider asked for
            # a delay: it limits something else (a rate), and a Retry-After
            # that only the throttled attempt honours lets the others flood it.
            # From now on each one pauses the whole pool.
            self._whole_pauses = True
        if self._noise == 0.0:
            self._noise_seen = (throttles, ends)
        self._noise = max(self._noise, after)
        # Back to where the run of decreases began: each of them may have
        # "helped" by chance, throttles that are noise come and go.
        if self._chain_top is not None:
            rate, conc = self._chain_top
        if deepest is not None:
            rate = max(rate or 0.0, deepest)
        self._chain_top = None
        cut = "the rate" if rate != self.rate else "the concurrency"
        self._ends = self._throttles = 0
        self.rate = rate
        self.concurrency = conc
        self._bad_rate = self._bad_conc = math.inf  # that throttle said nothing of a limit
        self._episode = 0
        return Change(
            rate,
            conc,
            f"restored: {after:.0%} still throttled after the decrease "
            f"({before:.0%} before), not caused by {cut}",
        )


def _rate(r: float | None) -> str:
    return "none" if r is None else f"{r:.3g}/s"
