"""Makespan estimates by list scheduling on the task graph.

The same rules the engine follows, on paper: ``sequential`` runs one instance
at a time; ``phased`` runs the phases in order with a barrier between them,
each phase list-scheduled; ``dag`` starts every instance as soon as its
requirements are met. Ready instances start critical-path-first (highest rank,
then lowest id) within the ``parallelism`` cap and every pool's
``concurrency`` cap (an instance holds one slot in each capped pool of its
task) and every pool's start ``rate`` (the engine's own token buckets, in
simulated time (``StaticLimits``, the same buckets the engine uses); an
adaptive rate is taken as configured, since throttling
cannot be foreseen). A quorum requirement is met when ``at_least`` of its nodes
have finished.

With the plan's ``rollout`` (unless ``rollout=False``), a target's instances
start only once its wave is open, by the engine's rule
(``fleetrun.engine._waves``): a wave opens when no instance of the open waves
is *active* (ready to start, or running); an instance that waits for a
requirement, or for a later phase in ``phased``, is not active. Instances of
tasks not fanned over targets are never held. The estimate assumes that no
wave fails too much and that a ``pause`` is promoted at once.

Event-driven with heaps: O((nodes + edges) log nodes), fine for 100,000 nodes.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence

from fleetrun.plan._expand import longest_paths
from fleetrun.plan._graph import Graph
from fleetrun.plan._pools import StaticLimits
from fleetrun.plan._rollout import wave_done, wave_targets

MODES = ("sequential", "phased", "dag")


def phase_layers(graph: Graph) -> tuple[tuple[int, ...], ...]:
    """The node ids of each phase as ``phased`` mode runs them, in phase order.

    A node's phase is its task's phase, moved later when it needs a node of a
    later phase (a plan the loader would reject for ``phased``; moving keeps the
    estimate finite rather than deadlocked). A task without a phase runs in the
    phase of its latest requirement (the first phase when it has none).
    Phases that end up empty are omitted.
    """
    index = {name: i for i, name in enumerate(graph.plan.phases)}
    eff = [0] * len(graph.nodes)
    for wave in graph.waves:
        for i in wave:
            node = graph.nodes[i]
            p = index.get(node.phase, 0) if node.phase is not None else 0
            for req in node.requires:
                for d in req.nodes:
                    if eff[d] > p:
                        p = eff[d]
            eff[i] = p
    buckets: dict[int, list[int]] = {}
    for i, p in enumerate(eff):
        buckets.setdefault(p, []).append(i)
    return tuple(tuple(buckets[p]) for p in sorted(buckets))


class _Waves:
    """Rollout waves in simulated time: ``fleetrun.engine._waves.Waves`` without
    failures, halts or pauses; the same rule for a done wave (``wave_done``) and
    the same restart at each phase.

    Invariants: ``active[w]`` = instances of wave ``w`` made ready (in a ready
    heap or running) and not finished; no instance of a wave ``> opened`` is
    ever made ready (in the current phase); ``busy`` = waves with
    ``active[w] > 0`` (so that most checks of the open waves cost O(1)).
    """

    __slots__ = (
        "active",
        "busy",
        "finished_node",
        "graph",
        "held",
        "later_phase",
        "members",
        "on_open",
        "opened",
        "wave_of",
    )

    def __init__(
        self,
        graph: Graph,
        targets: Sequence[Sequence[str]],
        on_open: Callable[[int], None],
        finished_node: Callable[[int], bool],
        later_phase: Callable[[int], bool],
    ) -> None:
        wave_of_target = {t: w for w, ts in enumerate(targets) for t in ts}
        # -1: not held by any wave (an unfanned task's instance).
        self.wave_of = [
            -1 if node.target is None else wave_of_target.get(node.target, -1)
            for node in graph.nodes
        ]
        self.members: list[list[int]] = [[] for _ in targets]
        for i, w in enumerate(self.wave_of):
            if w >= 0:
                self.members[w].append(i)
        self.graph = graph
        self.active = [0] * len(targets)
        self.busy = 0
        self.held: list[list[int]] = [[] for _ in targets]
        self.opened = 0  # the engine opens the first wave before anything is ready
        self.on_open = on_open
        self.finished_node = finished_node
        self.later_phase = later_phase

    def hold(self, j: int) -> bool:
        """True when ready node ``j`` must wait for its wave (it is kept until then)."""
        w = self.wave_of[j]
        if w <= self.opened:
            return False
        self.held[w].append(j)
        return True

    def pushed(self, j: int) -> None:
        """Node ``j`` went into a ready heap: it is active until it finishes."""
        w = self.wave_of[j]
        if w >= 0:
            self.active[w] += 1
            if self.active[w] == 1:
                self.busy += 1

    def finished(self, j: int) -> None:
        """Node ``j`` finished (after its dependents were made ready)."""
        w = self.wave_of[j]
        if w >= 0:
            self.active[w] -= 1
            if self.active[w] == 0:
                self.busy -= 1
                self.advance()

    def restart(self) -> None:
        """A new phase begins: roll it out from the first wave again."""
        self._open(0)

    def advance(self) -> None:
        """Open the next waves while the open ones are done."""
        while self.busy == 0 and self.opened + 1 < len(self.active) and self._done():
            self._open(self.opened + 1)

    def _done(self) -> bool:
        opened = self.opened
        wave_of = self.wave_of
        later_phase = self.later_phase

        def later(i: int) -> bool:
            return wave_of[i] > opened or later_phase(i)

        # ``busy == 0``: nothing of the open waves is in a heap or running.
        return wave_done(
            self.graph, self.members, opened, lambda i: False, later, self.finished_node
        )

    def _open(self, w: int) -> None:
        self.opened = w
        held, self.held[w] = self.held[w], []
        for j in held:
            self.on_open(j)


def _schedule(
    graph: Graph,
    durations: Sequence[float],
    rank: Sequence[float],
    parallelism: int | None,
    limits: StaticLimits,
    layers: Sequence[Sequence[int]],
    waves: Sequence[Sequence[str]] | None,
) -> float:
    """List-schedule the whole graph, phase by phase through ``layers`` (one layer:
    no phase barrier), and held by the rollout ``waves`` (None: no rollout).

    Returns the time the last node finishes.
    """
    n = len(graph.nodes)
    if not n:
        return 0.0
    node_pools = limits.pools_of_task
    # waiting[(j, r)]: finishes still missing before requirement r of node j is met.
    waiting: dict[tuple[int, int], int] = {}
    unmet: dict[int, int] = {}
    # on_finish[i]: the (node, requirement index) pairs that node i counts towards.
    on_finish: dict[int, list[tuple[int, int]]] = {}
    for j, node in enumerate(graph.nodes):
        count = 0
        for r, req in enumerate(node.requires):
            if req.at_least <= 0:
                continue
            waiting[(j, r)] = req.at_least
            count += 1
            for d in req.nodes:
                on_finish.setdefault(d, []).append((j, r))
        if count:
            unmet[j] = count

    # Phases: nodes of later layers wait in ``phase_held`` until theirs begins;
    # layers before ``phase`` have finished (the engine's ``_advance_phase``).
    phase_of = [0] * n
    for p, layer in enumerate(layers):
        for i in layer:
            phase_of[i] = p
    phase_left = [len(layer) for layer in layers]
    phase_held: list[list[int]] = [[] for _ in layers]
    phase = 0

    # Ready instances wait in one heap per combination of capped pools, so that an
    # instance blocked on a full pool never holds back one that could start.
    ready: dict[tuple[int, ...], list[tuple[float, int]]] = {}

    def push(j: int) -> None:
        heapq.heappush(ready.setdefault(node_pools[graph.nodes[j].task], []), (-rank[j], j))
        if gate is not None:
            gate.pushed(j)

    def make_ready(j: int) -> None:
        # The engine's order: the wave first, then the phase.
        if gate is not None and gate.hold(j):
            return
        if phase_of[j] > phase:
            phase_held[phase_of[j]].append(j)
            return
        push(j)

    def advance_phase() -> None:
        nonlocal phase
        while phase < len(layers) and phase_left[phase] == 0:
            phase += 1
            if phase < len(layers):
                held, phase_held[phase] = phase_held[phase], []
                if gate is not None:
                    gate.restart()  # each phase is rolled out anew
                for j in held:
                    make_ready(j)
                if gate is not None:
                    gate.advance()

    finished = [False] * n
    gate = (
        _Waves(graph, waves, make_ready, finished.__getitem__, lambda i: phase_of[i] > phase)
        if waves is not None
        else None
    )
    advance_phase()
    for j in range(n):
        if j not in unmet:
            make_ready(j)
    if gate is not None:
        gate.advance()  # a first wave with nothing to start is done at once

    limit = parallelism if parallelism else n
    running: list[tuple[float, int]] = []
    now = 0.0
    end = 0.0
    done = 0
    while done < n:
        # Start what may start, best first. Invariant: len(running) <= limit,
        # and ``limits`` keeps every pool within its cap and its rate.
        wake = math.inf  # when a rate token frees up for a ready instance
        while len(running) < limit:
            best: tuple[float, int] | None = None
            best_key: tuple[int, ...] = ()
            for key, heap in ready.items():
                if not heap or (best is not None and heap[0] >= best):
                    continue
                wait = limits.wait_time(key, now)
                if wait == 0.0:
                    best, best_key = heap[0], key
                elif wait < math.inf:
                    wake = min(wake, now + wait)
            if best is None:
                break
            heapq.heappop(ready[best_key])
            limits.acquire(best_key, now)
            heapq.heappush(running, (now + durations[best[1]], best[1]))
        if len(running) < limit and wake < (running[0][0] if running else math.inf):
            # Only a rate holds the next start back; the nudge makes the
            # refilled bucket hold a whole token despite rounding.
            now = wake + 1e-9
            continue
        if not running:
            break  # nothing runs and nothing can start: unreachable for a valid graph
        now, i = heapq.heappop(running)
        ended = [i]
        while running and running[0][0] <= now:
            ended.append(heapq.heappop(running)[1])
        # One at a time, as the engine settles them: dependents are made ready,
        # then the phase may end, then the node's wave may be done.
        for i in ended:
            done += 1
            finished[i] = True
            end = now
            limits.release(node_pools[graph.nodes[i].task])
            for j, r in on_finish.get(i, ()):
                left = waiting[(j, r)] - 1
                waiting[(j, r)] = left
                if left == 0:
                    unmet[j] -= 1
                    if unmet[j] == 0:
                        make_ready(j)
            phase_left[phase_of[i]] -= 1
            advance_phase()
            if gate is not None:
                gate.finished(i)
    return end


def simulate(
    graph: Graph,
    mode: str,
    parallelism: int | None,
    durations: Sequence[float] | None = None,
    *,
    rollout: bool = True,
) -> float:
    """Estimated makespan of ``graph`` in ``mode`` (``sequential``, ``phased`` or ``dag``).

    ``parallelism`` caps running instances (None or 0: no cap beyond the pools).
    ``durations`` gives one duration per node instead of the estimates; ranks are
    then recomputed from them, as the engine would with measured durations.
    ``rollout``: hold each target's instances until its wave of the plan's
    ``rollout`` opens (no effect on a plan without one, nor on ``sequential``).
    Raises ``ValueError`` for an unknown mode or a wrong number of durations.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if durations is None:
        durs: Sequence[float] = [node.estimate for node in graph.nodes]
        rank: Sequence[float] = graph.rank
    else:
        if len(durations) != len(graph.nodes):
            raise ValueError(f"{len(durations)} durations for {len(graph.nodes)} nodes")
        durs = durations
        order = [i for wave in graph.waves for i in wave]
        rank = longest_paths(order, graph.dependents, durs)
    if mode == "sequential":
        return float(sum(durs))
    if mode == "dag":
        layers: Sequence[Sequence[int]] = (range(len(graph.nodes)),)
    else:
        layers = phase_layers(graph)
    waves = wave_targets(graph.plan) if rollout and graph.plan.rollout is not None else None
    # One set of pools for the whole run: a rate bucket emptied in one phase
    # is still refilling when the next phase begins.
    limits = StaticLimits(graph, 0.0)
    return _schedule(graph, durs, rank, parallelism, limits, layers, waves)
