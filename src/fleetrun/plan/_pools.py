"""Pool limits as configured: concurrency slots and start-rate token buckets.

Pure arithmetic on a clock the caller passes in: the planner's estimates run
it in simulated time, and the engine's ``Limits`` builds its adaptive limits
on the same ``Bucket``. A node holds one slot in every pool of its task at
once; ``wait_time`` and ``acquire`` look at all of a node's pools together, so
a node takes every slot it needs or none (no partial holding, hence no
deadlock between pools). Invariant: ``in_use[p] <= cap[p]`` for every capped
pool at all times.
"""

from __future__ import annotations

import math

from fleetrun.plan._graph import Graph
from fleetrun.plan._model import Pool


class Bucket:
    """A token bucket: ``rate`` tokens per second, at most ``burst`` saved up.

    ``base`` keeps the configured rate (a ceiling when ``rate`` adapts).
    """

    __slots__ = ("base", "burst", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.base = rate
        self.rate = rate
        self.burst = max(1, burst)
        self.tokens = float(self.burst)
        self.last = now

    def refill(self, now: float) -> None:
        """Add the tokens earned since the last call."""
        if now > self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now

    def wait(self, now: float) -> float:
        """Seconds until a token is available (0 when one is)."""
        self.refill(now)
        if self.tokens >= 1.0:
            return 0.0
        return (1.0 - self.tokens) / self.rate


def pools_of_tasks(graph: Graph) -> dict[str, tuple[int, ...]]:
    """Per task, the indexes (in plan order) of its pools that limit anything."""
    pools: list[Pool] = list(graph.plan.pools.values())
    index = {p.name: k for k, p in enumerate(pools)}
    out: dict[str, tuple[int, ...]] = {}
    for task in graph.plan.tasks.values():
        ids = []
        for name in task.pools:
            k = index.get(name)
            if k is not None and (
                pools[k].concurrency is not None or pools[k].rate or pools[k].adaptive
            ):
                ids.append(k)
        out[task.name] = tuple(ids)
    return out


class StaticLimits:
    """Per-pool slot counts and rate buckets at their configured values."""

    __slots__ = ("buckets", "caps", "in_use", "pools_of_task")

    def __init__(self, graph: Graph, now: float) -> None:
        pools = list(graph.plan.pools.values())
        self.caps: list[int | None] = [p.concurrency for p in pools]
        self.in_use = [0] * len(pools)
        self.buckets: list[Bucket | None] = [
            Bucket(p.rate, p.burst, now) if p.rate else None for p in pools
        ]
        self.pools_of_task = pools_of_tasks(graph)

    def wait_time(self, pools: tuple[int, ...], now: float) -> float:
        """0 when a node holding ``pools`` may start now; the seconds until a rate
        token frees up when only rates hold it back; ``inf`` when a slot is full."""
        wait = 0.0
        for k in pools:
            cap = self.caps[k]
            if cap is not None and self.in_use[k] >= cap:
                return math.inf
            b = self.buckets[k]
            if b is not None:
                w = b.wait(now)
                if w > wait:
                    wait = w
        return wait

    def acquire(self, pools: tuple[int, ...], now: float) -> None:
        """Take one slot (and one rate token) in each pool; only after ``wait_time`` == 0."""
        for k in pools:
            self.in_use[k] += 1
            b = self.buckets[k]
            if b is not None:
                b.refill(now)
                b.tokens -= 1.0

    def release(self, pools: tuple[int, ...]) -> None:
        """Give back the slots taken by ``acquire``."""
        for k in pools:
            self.in_use[k] -= 1
