"""``/metrics``: the record in the Prometheus text format, read on each scrape.

``JournalCollector`` is a prometheus-client custom collector: nothing is
counted in the server; every scrape asks the journals (a few aggregate
queries, plus the plan of each live run for its pools). Families:

| metric | type | labels |
|---|---|---|
| ``fleetrun_runs`` | gauge | ``plan``, ``status`` (a dead run reads ``interrupted``) |
| ``fleetrun_attempts`` | gauge | ``plan``, ``outcome`` (``running`` while it runs) |
| ``fleetrun_attempt_duration_seconds`` | histogram | ``plan``, ``task`` (attempts that ended) |
| ``fleetrun_attempt_queued_seconds`` | histogram | ``plan``, ``task`` (ready to started) |
| ``fleetrun_pool_rate`` | gauge | ``plan``, ``run``, ``pool``: effective starts/s (0: no rate) |
| ``fleetrun_pool_rate_limit`` | gauge | the configured rate (the ceiling when adaptive) |
| ``fleetrun_pool_concurrency`` | gauge | effective concurrency (absent: uncapped) |
| ``fleetrun_pool_concurrency_limit`` | gauge | the configured concurrency |
| ``fleetrun_pool_in_flight`` | gauge | attempts of the pool running now |
| ``fleetrun_pool_paused`` | gauge | 1 while a Retry-After pauses the pool |
| ``fleetrun_pool_throttles_total`` | counter | attempts the engine took as throttle signals |
| ``fleetrun_ui_clients`` | gauge | open live-update streams of this server |

Pool families cover the runs that are live now (one series per run and pool),
so their number stays bounded by what runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from fleetrun.errors import StateError
from fleetrun.state import RunRecord
from fleetrun.ui._plans import Plans
from fleetrun.ui._run import is_live
from fleetrun.ui._store import LiveReader, Stores

DURATION_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0)
"""Upper bounds (seconds) of the attempt duration and queued-time histograms."""


class JournalCollector(Collector):
    """Reads the journals of ``stores`` at each scrape."""

    def __init__(self, stores: Stores, plans: Plans, clients: Callable[[], int]) -> None:
        self.stores = stores
        self.plans = plans
        self.clients = clients

    def describe(self) -> Iterable[Metric]:
        """Nothing up front: the families depend on the record (collected per scrape)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """One family per metric, summed over every readable journal."""
        runs: dict[tuple[str, str], int] = {}
        attempts: dict[tuple[str, str], int] = {}
        durations: dict[tuple[str, str], list[float]] = {}
        queued: dict[tuple[str, str], list[float]] = {}
        pool = _PoolFamilies()
        for store in self.stores.all:
            try:
                reader = store.reader()
            except StateError:
                continue
            for r in reader.runs():
                _add(runs, (r.plan_name, r.status), 1)
                if r.ended_at is None and is_live(r):
                    pool.add(reader, r, self.plans)
            for plan, outcome, n in reader.conn.execute(
                "SELECT r.plan_name, coalesce(a.outcome, 'running'), count(*)"
                " FROM attempts a JOIN runs r ON r.id = a.run_id GROUP BY 1, 2"
            ):
                _add(attempts, (plan, outcome), n)
            _histogram(reader, durations, "a.ended_at - a.started_at", "a.ended_at IS NOT NULL")
            _histogram(reader, queued, "a.started_at - a.ready_at", "a.ready_at IS NOT NULL")
        yield _gauge("fleetrun_runs", "Runs on record by status.", ["plan", "status"], runs)
        yield _gauge(
            "fleetrun_attempts", "Attempts on record by outcome.", ["plan", "outcome"], attempts
        )
        yield _histogram_family(
            "fleetrun_attempt_duration_seconds", "Durations of ended attempts.", durations
        )
        yield _histogram_family(
            "fleetrun_attempt_queued_seconds",
            "Seconds attempts were ready but not started.",
            queued,
        )
        yield from pool.families()
        clients = GaugeMetricFamily(
            "fleetrun_ui_clients", "Open live-update streams of this server."
        )
        clients.add_metric([], self.clients())
        yield clients


def _add(into: dict[tuple[str, str], int], key: tuple[str, str], n: int) -> None:
    into[key] = into.get(key, 0) + n


def _gauge(
    name: str, doc: str, labels: list[str], values: dict[tuple[str, str], int]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for key, n in sorted(values.items()):
        family.add_metric(list(key), n)
    return family


def _histogram(
    reader: LiveReader, into: dict[tuple[str, str], list[float]], value: str, where: str
) -> None:
    """Add the bucket counts (per bound, not yet cumulative across journals: each
    bound counts values at or below it), the count and the sum of ``value`` per
    plan and task, computed in SQL, to ``into``."""
    cases = ", ".join(f"sum(v <= {b!r})" for b in DURATION_BUCKETS)
    rows = reader.conn.execute(
        f"SELECT plan, task, {cases}, count(*), sum(v) FROM ("
        f" SELECT r.plan_name AS plan, i.task AS task, max(0, {value}) AS v"
        " FROM attempts a JOIN instances i ON i.run_id = a.run_id AND i.key = a.key"
        f" JOIN runs r ON r.id = a.run_id WHERE {where}) GROUP BY plan, task"
    )
    for plan, task, *numbers in rows:
        values = [float(x or 0.0) for x in numbers]
        have = into.setdefault((plan, task), [0.0] * len(values))
        into[(plan, task)] = [a + b for a, b in zip(have, values, strict=True)]


def _histogram_family(
    name: str, doc: str, values: dict[tuple[str, str], list[float]]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=["plan", "task"])
    for (plan, task), numbers in sorted(values.items()):
        *counts, total, summed = numbers
        buckets = [(_bound(b), c) for b, c in zip(DURATION_BUCKETS, counts, strict=True)]
        buckets.append(("+Inf", total))
        family.add_metric([plan, task], buckets, summed)
    return family


def _bound(b: float) -> str:
    return repr(float(b))


class _PoolFamilies:
    """The pool gauges of live runs."""

    def __init__(self) -> None:
        labels = ["plan", "run", "pool"]
        self.rate = GaugeMetricFamily(
            "fleetrun_pool_rate", "A live run's pool: effective starts per second.", labels=labels
        )
        self.rate_limit = GaugeMetricFamily(
            "fleetrun_pool_rate_limit",
            "A live run's pool: configured starts per second (the ceiling when adaptive).",
            labels=labels,
        )
        self.concurrency = GaugeMetricFamily(
            "fleetrun_pool_concurrency",
            "A live run's pool: effective concurrency.",
            labels=labels,
        )
        self.concurrency_limit = GaugeMetricFamily(
            "fleetrun_pool_concurrency_limit",
            "A live run's pool: configured concurrency (the ceiling when adaptive).",
            labels=labels,
        )
        self.in_flight = GaugeMetricFamily(
            "fleetrun_pool_in_flight", "A live run's pool: attempts running now.", labels=labels
        )
        self.paused = GaugeMetricFamily(
            "fleetrun_pool_paused",
            "A live run's pool: 1 while a Retry-After pauses its starts.",
            labels=labels,
        )
        self.throttles = CounterMetricFamily(
            "fleetrun_pool_throttles",
            "A live run's pool: attempts the engine took as throttle signals.",
            labels=labels,
        )

    def add(self, reader: LiveReader, run: RunRecord, plans: Plans) -> None:
        plan = plans.of(run)
        if plan.plan is None or not plan.plan.pools:
            return
        latest: dict[str, dict[str, Any]] = {}
        for changed in reader.event_data(run.id, "PoolChanged"):
            latest[str(changed.get("pool"))] = changed
        rows = reader.conn.execute(
            "SELECT i.task, a.outcome IS NULL, a.throttled FROM attempts a"
            " JOIN instances i ON i.run_id = a.run_id AND i.key = a.key WHERE a.run_id=?",
            (run.id,),
        ).fetchall()
        now = time.time()
        for name, p in plan.plan.pools.items():
            labels = [run.plan_name, run.id, name]
            mine = [r for r in rows if name in plan.pools_of(r[0])]
            ev = latest.get(name)
            rate = float(ev["rate"]) if ev is not None else float(p.rate or 0.0)
            conc = ev.get("concurrency") if ev is not None else p.concurrency
            self.rate.add_metric(labels, rate)
            if p.rate is not None:
                self.rate_limit.add_metric(labels, float(p.rate))
            if conc is not None:
                self.concurrency.add_metric(labels, float(conc))
            if p.concurrency is not None:
                self.concurrency_limit.add_metric(labels, float(p.concurrency))
            self.in_flight.add_metric(labels, float(sum(1 for r in mine if r[1])))
            paused = (
                ev is not None
                and float(ev.get("paused") or 0) > 0
                and float(ev["at"]) + float(ev["paused"]) > now
            )
            self.paused.add_metric(labels, 1.0 if paused else 0.0)
            self.throttles.add_metric(labels, float(sum(1 for r in mine if r[2])))

    def families(self) -> tuple[Metric, ...]:
        return (
            self.rate,
            self.rate_limit,
            self.concurrency,
            self.concurrency_limit,
            self.in_flight,
            self.paused,
            self.throttles,
        )
