"""Pools: concurrency slots, start-rate token buckets and adaptive rates.

A node holds one slot in every pool of its task at once. ``wait_time`` and
``acquire`` look at all of a node's pools together, so a node either takes
every slot it needs or none (no partial holding, hence no deadlock between
pools). Invariant: ``in_use[p] <= cap[p]`` for every capped pool at all times.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from fleetrun.plan import Bucket, Graph, Pool, pools_of_tasks

ADAPTIVE_FLOOR = 1 / 64
"""An adaptive rate never drops below this fraction of the configured rate."""

ADAPTIVE_STEP = 1 / 10
"""On each success an adaptive rate grows back by this fraction of the configured rate."""


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
        self._names = [p.name for p in pools]
        self._caps: list[int | None] = [p.concurrency for p in pools]
        self.in_use = [0] * len(pools)
        self._buckets: list[Bucket | None] = [
            Bucket(p.rate, p.burst, now) if p.rate else None for p in pools
        ]
        self._notify = notify
        # Only pools that limit something matter to the scheduler.
        self.pools_of_task = pools_of_tasks(graph)
        self._adaptive = [p.adaptive for p in pools]

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
