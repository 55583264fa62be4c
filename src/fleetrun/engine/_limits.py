"""Pools: concurrency slots, start-rate token buckets and adaptive rates.

A node holds one slot in every pool of its task at once. ``wait_time`` and
``acquire`` look at all of a node's pools together, so a node either takes
every slot it needs or none (no partial holding, hence no deadlock between
pools). Invariant: ``in_use[p] <= cap[p]`` for every capped pool at all times.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from fleetrun.plan._graph import Graph
from fleetrun.plan._model import Pool

ADAPTIVE_FLOOR = 1 / 64
"""An adaptive rate never drops below this fraction of the configured rate."""

ADAPTIVE_STEP = 1 / 10
"""On each success an adaptive rate grows back by this fraction of the configured rate."""


class _Bucket:
    """A token bucket: ``rate`` tokens per second, at most ``burst`` saved up."""

    __slots__ = ("base", "burst", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.base = rate
        self.rate = rate
        self.burst = max(1, burst)
        self.tokens = float(self.burst)
        self.last = now

    def refill(self, now: float) -> None:
        if now > self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now

    def wait(self, now: float) -> float:
        """Seconds until a token is available (0 when one is)."""
        self.refill(now)
        if self.tokens >= 1.0:
            return 0.0
        return (1.0 - self.tokens) / self.rate


class Limits:
    """Per-pool slot counts and rate buckets for one run."""

    __slots__ = ("_adaptive", "_buckets", "_caps", "_names", "_notify", "in_use", "pools_of_task")

    def __init__(
        self,
        graph: Graph,
        now: float,
        notify: Callable[[str, float, str], None],
    ) -> None:
        pools: list[Pool] = list(graph.plan.pools.values())
        index = {p.name: k for k, p in enumerate(pools)}
        self._names = [p.name for p in pools]
        self._caps: list[int | None] = [p.concurrency for p in pools]
        self.in_use = [0] * len(pools)
        self._buckets: list[_Bucket | None] = [
            _Bucket(p.rate, p.burst, now) if p.rate else None for p in pools
        ]
        adaptive = [p.adaptive for p in pools]
        self._notify = notify
        # Only pools that limit something matter to the scheduler.
        self.pools_of_task: dict[str, tuple[int, ...]] = {}
        for task in graph.plan.tasks.values():
            ids = []
            for name in task.pools:
                k = index.get(name)
                if k is not None and (
                    pools[k].concurrency is not None or pools[k].rate or adaptive[k]
                ):
                    ids.append(k)
            self.pools_of_task[task.name] = tuple(ids)
        self._adaptive = adaptive

    def wait_time(self, pools: tuple[int, ...], now: float) -> float:
        """0 when a node holding ``pools`` may start now; the seconds until a rate
        token frees up when only rates hold it back; ``inf`` when a slot is full."""
        wait = 0.0
        for k in pools:
            cap = self._caps[k]
            if cap is not None and self.in_use[k] >= cap:
                return math.inf
            b = self._buckets[k]
            if b is not None:
                w = b.wait(now)
                if w > wait:
                    wait = w
        return wait

    def acquire(self, pools: tuple[int, ...], now: float) -> None:
        """Take one slot (and one rate token) in each pool; call only after ``wait_time`` == 0."""
        for k in pools:
            self.in_use[k] += 1
            b = self._buckets[k]
            if b is not None:
                b.refill(now)
                b.tokens -= 1.0

    def release(self, pools: tuple[int, ...]) -> None:
        """Give back the slots taken by ``acquire``."""
        for k in pools:
            self.in_use[k] -= 1

    def throttled(self, pools: tuple[int, ...]) -> None:
        """An attempt was throttled: halve each adaptive pool's rate."""
        for k in pools:
            b = self._buckets[k]
            if b is not None and self._adaptive[k]:
                new = max(b.base * ADAPTIVE_FLOOR, b.rate / 2)
                if new != b.rate:
                    b.rate = new
                    self._notify(self._names[k], new, "throttled")

    def succeeded(self, pools: tuple[int, ...]) -> None:
        """An attempt succeeded: grow each lowered adaptive rate back a step."""
        for k in pools:
            b = self._buckets[k]
            if b is not None and self._adaptive[k] and b.rate < b.base:
                b.rate = min(b.base, b.rate + b.base * ADAPTIVE_STEP)
                self._notify(self._names[k], b.rate, "recovered")

    def cap(self, name: str) -> int | None:
        """The concurrency cap of pool ``name`` (None: uncapped)."""
        return self._caps[self._names.index(name)]
