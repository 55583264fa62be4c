"""Adaptive pool limits: settle just under what the provider grants.

The choice, from the anchors (TCP AIMD, Netflix concurrency-limits AIMD and
Gradient2, BBR):

- **Rate, from a delivery-rate estimate (BBR-style), applied with a
  multiplicative decrease (AIMD x0.9, as Netflix's AIMDLimit).** A provider
  such as Azure Resource Manager meters *starts* with a token bucket. Between
  two throttle signals the starts that succeeded, divided by the time between
  the signals (the Retry-After pause included), is what the bucket refilled:
  the rate the provider grants. On a throttle the rate becomes
  ``decrease x that estimate`` (never above ``decrease x rate``, never below
  ``max_drop x rate``), so one or two signals bring a pool configured 5x too
  high to just under the provider's rate, where halving (TCP) would need many
  signals and overshoot below. Gradient2 needs latency samples that a
  throttled API does not give (its 429 comes back fast), so it is not used.
- **Concurrency, AIMD as Netflix's AIMDLimit**: on a throttle with the pool
  at least half full, the limit becomes ``decrease x`` what was in flight;
  it grows by one (or ``increase``) per probe only while in flight x 2 >= limit.
- **One episode, one decrease** (TCP's one cut per window): a throttle from
  an attempt that started before the last decrease says nothing about the new
  limits and is ignored for adapting (a Retry-After still pauses the pool).
- **Probe upward slowly**: after ``probe`` seconds without a throttle, and
  only while the pool really uses at least half its rate (BBR's
  "application-limited" rule), the limits grow by ``increase`` (2%); above
  the rate last measured as granted, 5x slower (BBR's cruising near the
  estimated bandwidth, CUBIC's plateau near the last maximum): each probe
  past the provider's limit costs a few throttled attempts.
- **Random 429s do not collapse the pool**: after a decrease the next
  ``verify`` attempts started under the new limits are watched. Were the
  throttles caused by the rate, the provider still grants the same starts per
  second and the throttled share falls to ``1 - (1 - before) * old/new``;
  were they random, it stays where it was. When it stays nearer ``before``
  (and >= 10%), the decrease is undone and that share becomes the pool's
  noise level; later decreases need a share clearly above it (+15 points)
  over at least ``verify`` attempts. A decrease is trusted to the delivered
  rate only with at least 5 successes in the interval (else x ``decrease``). Nothing ever goes below
  ``floor`` x the configured values, and the configured values are ceilings.

All times come from the caller's clock, so tests drive this without sleeping.
Every change is returned as a ``Change`` with its reason; ``Limits`` turns
each into a ``PoolChanged`` event.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from fleetrun.plan import AdaptiveSettings

_NOISE_MARGIN = 0.15
"""A pool that has seen rate-independent throttles decreases only above noise + this."""

_MIN_SAMPLES = 5
"""Successes needed in an interval before its delivered rate is trusted."""

_CRUISE = 0.2
"""Probing above the rate last measured as granted goes this much slower."""

_MIN_NOISE = 0.10
"""A throttled share under this after a decrease counts as "helped", whatever before was."""


@dataclass(frozen=True, slots=True)
class Change:
    """New effective limits of a pool and why."""

    rate: float | None
    concurrency: int | None
    reason: str


class AdaptiveLimit:
    """The effective rate and concurrency of one adaptive pool (see the module doc)."""

    __slots__ = (
        "_conc_floor",
        "_ends",
        "_granted",
        "_last_decrease",
        "_last_probe",
        "_last_throttle",
        "_mark",
        "_noise",
        "_rate_floor",
        "_starts",
        "_successes",
        "_throttles",
        "_verify",
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
        self.settings = settings
        self.rate_ceiling = rate
        self.conc_ceiling = concurrency
        self.rate = rate
        self.concurrency = concurrency
        self._rate_floor = rate * settings.floor if rate else 0.0
        self._conc_floor = max(1, math.ceil(concurrency * settings.floor)) if concurrency else 1
        # Start of the current measuring interval (the last signal acted upon).
        self._mark = now
        self._last_decrease = -math.inf
        self._last_throttle = -math.inf
        self._last_probe = now
        # End times of successful attempts since ``_mark`` (delivery-rate estimate).
        self._successes: deque[float] = deque()
        self._starts = 0  # starts since the last probe or change (application-limited check)
        self._ends = 0  # attempts ended since the last decrease
        self._throttles = 0  # ... of which throttled
        # After a decrease: (rate, concurrency, share before, ends seen, throttles seen).
        self._verify: tuple[float | None, int | None, float, int, int] | None = None
        self._noise = 0.0
        self._granted = math.inf  # the rate last measured as granted (delivered)

    # -- observations -------------------------------------------------------------

    def started(self) -> None:
        """An attempt of the pool started."""
        self._starts += 1

    def succeeded(self, started_at: float, now: float, in_flight: int) -> Change | None:
        """An attempt that started at ``started_at`` succeeded at ``now``."""
        self._successes.append(now)
        self._ends += 1
        if self._verify is not None and started_at >= self._last_decrease:
            change = self._verified(throttled=False)
            if change is not None:
                return change
        return self._probe(now, in_flight)

    def throttled(
        self, started_at: float, now: float, in_flight: int, retry_after: float | None
    ) -> Change | None:
        """An attempt that started at ``started_at`` was throttled at ``now``.

        ``in_flight`` counts the pool's attempts still running (this one not
        included); ``retry_after`` is the delay the provider asked for, if any.
        """
        self._ends += 1
        self._throttles += 1
        self._last_throttle = now
        if started_at < self._last_decrease:
            return None  # the same episode: already acted upon
        if self._verify is not None:
            return self._verified(throttled=True)
        if self._noise > 0.0:
            share = self._throttles / self._ends
            if self._ends < self.settings.verify or share <= self._noise + _NOISE_MARGIN:
                return None  # within the rate-independent noise seen before
        return self._decrease(now, in_flight + 1, retry_after)

    # -- decisions ----------------------------------------------------------------

    def _decrease(self, now: float, in_flight: int, retry_after: float | None) -> Change | None:
        s = self.settings
        before_rate, before_conc = self.rate, self.concurrency
        share = self._throttles / max(1, self._ends)
        interval = now - self._mark
        while self._successes and self._successes[0] < self._mark:
            self._successes.popleft()
        delivered = len(self._successes) / interval if interval > 0 else math.inf
        why: list[str] = []
        if self.rate is not None:
            target = self.rate * s.decrease
            # Too few successes say nothing about what the provider grants.
            if delivered < self.rate and len(self._successes) >= _MIN_SAMPLES:
                target = min(target, delivered * s.decrease)
                self._granted = delivered
                why.append(f"{len(self._successes)} succeeded in {interval:.3g}s")
            new = max(target, self.rate * s.max_drop, self._rate_floor)
            self.rate = min(new, self.rate)
        if self.concurrency is not None and in_flight * 2 >= self.concurrency:
            new_c = max(
                math.floor(in_flight * s.decrease),
                math.ceil(self.concurrency * s.max_drop),
                self._conc_floor,
            )
            self.concurrency = min(new_c, self.concurrency)
            why.append(f"{in_flight} in flight")
        if retry_after is not None:
            why.append(f"Retry-After {retry_after:g}s")
        self._verify = (before_rate, before_conc, share, 0, 0)
        self._last_decrease = self._mark = self._last_probe = now
        self._successes.clear()
        self._ends = self._throttles = self._starts = 0
        if (self.rate, self.concurrency) == (before_rate, before_conc):
            return None
        detail = f" ({', '.join(why)})" if why else ""
        return Change(self.rate, self.concurrency, f"throttled{detail}")

    def _verified(self, throttled: bool) -> Change | None:
        assert self._verify is not None
        rate, conc, before, ends, throttles = self._verify
        ends += 1
        throttles += int(throttled)
        if ends < self.settings.verify:
            self._verify = (rate, conc, before, ends, throttles)
            return None
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
        if after < _MIN_NOISE or abs(after - predicted) <= abs(after - before):
            return None  # the decrease helped: the throttles depended on the rate
        self._noise = max(self._noise, after)
        self.rate = rate
        self.concurrency = conc
        return Change(
            rate,
            conc,
            f"restored: {after:.0%} still throttled after the decrease "
            f"({before:.0%} before), not caused by the rate",
        )

    def _probe(self, now: float, in_flight: int) -> Change | None:
        s = self.settings
        elapsed = now - max(self._last_probe, self._last_throttle)
        if self._verify is not None or elapsed < s.probe:
            return None
        grew: list[str] = []
        rate, conc = self.rate, self.concurrency
        if rate is not None and self.rate_ceiling is not None and rate < self.rate_ceiling:
            # Application-limited (BBR): probing a rate the pool does not use proves nothing.
            used = self._starts / max(elapsed, 1e-9)
            if used >= rate * 0.5:
                # Cruise: above the rate last measured as granted, probe 5x slower.
                step = s.increase if rate < self._granted * 0.98 else s.increase * _CRUISE
                self.rate = min(self.rate_ceiling, rate * (1 + step))
                grew.append("rate")
        ceiling = self.conc_ceiling
        # Netflix AIMD: grow the concurrency only while it is in use.
        if (
            conc is not None
            and ceiling is not None
            and conc < ceiling
            and (in_flight + 1) * 2 >= conc
        ):
            self.concurrency = min(ceiling, conc + max(1, int(conc * s.increase)))
            grew.append("concurrency")
        self._last_probe = now
        self._starts = 0
        if not grew:
            return None
        return Change(self.rate, self.concurrency, f"probing up: no throttle for {elapsed:.3g}s")
