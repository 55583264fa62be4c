"""The live view's ETA: ``fleetrun plan``'s makespan simulation on what remains.

``EtaInputs`` is what the simulation needs, copied from the live state at one
instant with C-level copies only (the status bytes, the running instances),
so that taking it costs the event loop little and the simulation itself
(``plan.simulate_remaining``, O((nodes + edges) log nodes)) may run on
another thread. ``EtaSchedule`` keeps the latest result and says when the
next simulation is due: ``ETA_EVERY`` seconds after the last one, or sooner
once something it depends on changed (``stale``), but never sooner than the
last one's cost allows (``ETA_SHARE``). Between simulations the ETA counts
down with the clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import median

from fleetrun.plan import Graph, simulate_remaining

ETA_EVERY = 1.0
"""Seconds after which the ETA is simulated again even if nothing changed."""

ETA_SHARE = 0.05
"""At most this share of the time goes to simulating: after a simulation that
took ``c`` seconds, the next one waits at least ``c / ETA_SHARE``."""

# Node statuses as ``LiveState`` keeps them (``_live_render``).
OUT, PENDING, RUNNING, WAITING, SETTLED = range(5)


@dataclass(frozen=True, slots=True)
class EtaInputs:
    """A run in progress at instant ``now``, as the ETA's simulation needs it.

    ``status`` per node (``OUT`` .. ``SETTLED``); ``running`` maps a node whose
    attempt runs to the attempt's start (a ``RUNNING`` node not in it has
    ended its last attempt and is settling); per task (``task_of``): the
    summed seconds and the number of its succeeded attempts (``measured``,
    ``measured_n``), its unsettled members (``left``) and the plan's estimate
    (``task_est``, None: none); ``est`` per node; pool limits in effect (``rates``,
    ``caps``), by name; the run's rollout ``waves`` (None: none).
    """

    graph: Graph
    mode: str
    parallelism: int | None
    now: float
    status: bytes
    running: Mapping[int, float]
    task_of: Sequence[int]
    est: Sequence[float]
    task_est: Sequence[float | None]
    measured: Sequence[float]
    measured_n: Sequence[int]
    left: Sequence[int]
    rates: Mapping[str, float]
    caps: Mapping[str, int]
    waves: Sequence[Sequence[str]] | None

    def pace(self) -> float:
        """How this run's tasks compare to their estimates: the median, over the
        tasks with an estimate and a succeeded attempt, of their mean attempt
        over their estimate (1.0 before any)."""
        ratios = [
            self.measured[t] / n / e
            for t, n in enumerate(self.measured_n)
            if n and (e := self.task_est[t])
        ]
        return median(ratios) if ratios else 1.0

    def durations(self) -> list[float] | None:
        """Each node's expected duration, or None when there is no basis yet.

        A task's mean succeeded attempt in this run; before one succeeded, the
        node's estimate (the plan's) times the run's ``pace``; for a task
        without an estimate, the mean succeeded attempt of every task so far
        (None before any, while such a task has instances left).
        """
        count = sum(self.measured_n)
        overall = sum(self.measured) / count if count else None
        per: list[float | None] = []
        for t, n in enumerate(self.measured_n):
            if n:
                per.append(self.measured[t] / n)
            elif self.task_est[t] is not None or not self.left[t]:
                per.append(None)
            elif overall is None:
                return None
            else:
                per.append(overall)
        task_of, est, pace = self.task_of, self.est, self.pace()
        return [est[i] * pace if (d := per[task_of[i]]) is None else d for i in range(len(est))]

    def simulate(self) -> float | None:
        """Estimated seconds from ``now`` until the run ends; None without a basis.

        Settled instances, those outside the run and those settling are done;
        running ones have run since their attempt's start; one in a retry
        backoff runs again in full.
        """
        durs = self.durations()
        if durs is None:
            return None
        live = self.running
        done = [
            i
            for i, st in enumerate(self.status)
            if st in (OUT, SETTLED) or (st == RUNNING and i not in live)
        ]
        now = self.now
        return simulate_remaining(
            self.graph,
            self.mode or "dag",
            self.parallelism,
            durs,
            done=done,
            running={i: max(0.0, now - start) for i, start in live.items()},
            rates=self.rates,
            concurrency=self.caps,
            waves=self.waves,
        )


class EtaSchedule:
    """The latest ETA simulation of one live view, and when the next one is due.

    Invariant: ``at`` is None until a first result was stored; ``in_flight``
    while a simulation taken by ``begin`` has not been stored.
    """

    __slots__ = ("at", "cost", "in_flight", "simulations", "stale", "value")

    def __init__(self) -> None:
        self.at: float | None = None  # the ``now`` of the latest stored simulation
        self.value: float | None = None
        self.cost = 0.0  # seconds the latest simulation took
        self.stale = True  # something it depends on changed since
        self.in_flight = False
        self.simulations = 0

    def due(self, now: float) -> bool:
        """Whether to simulate again at ``now``."""
        if self.in_flight:
            return False
        if self.at is None:
            return True
        wait = self.cost / ETA_SHARE
        if not self.stale:
            wait = max(wait, ETA_EVERY)
        return now - self.at >= wait

    def begin(self) -> None:
        """A simulation starts from inputs taken now: changes from here on make it stale."""
        self.in_flight = True
        self.stale = False

    def store(self, at: float, value: float | None, cost: float) -> None:
        """The result of the simulation begun at ``at`` (its inputs' ``now``)."""
        self.in_flight = False
        self.at, self.value, self.cost = at, value, cost
        self.simulations += 1

    def eta(self, now: float) -> float | None:
        """The latest result counted down to ``now`` (None: no basis, or none yet)."""
        if self.at is None or self.value is None:
            return None
        return max(0.0, self.value - max(0.0, now - self.at))
