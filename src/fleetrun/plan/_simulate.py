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
start only once its wave is open, by the engine's rule (``plan.Waves``, the
one implementation of it): a wave opens when no instance of the open waves
is *active* (ready to start, or running); an instance that waits for a
requirement, or for a later phase in ``phased``, is not active. Instances of
tasks not fanned over targets are never held. The estimate assumes that no
wave fails too much and that a ``pause`` is promoted at once.

Event-driven with heaps: O((nodes + edges) log nodes), fine for 100,000 nodes.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection, Mapping, Sequence

from fleetrun.plan._expand import longest_paths
from fleetrun.plan._graph import Graph
from fleetrun.plan._pools import Bucket, StaticLimits
from fleetrun.plan._rollout import Waves, wave_targets

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


def _schedule(
    graph: Graph,
    durations: Sequence[float],
    rank: Sequence[float],
    parallelism: int | None,
    limits: StaticLimits,
    layers: Sequence[Sequence[int]],
    waves: Sequence[Sequence[str]] | None,
    workers: int | None = None,
    *,
    settled: Collection[int] = (),
    started: Mapping[int, float] | None = None,
) -> float:
    """List-schedule the whole graph, phase by phase through ``layers`` (one layer:
    no phase barrier), and held by the rollout ``waves`` (None: no rollout).
    A ``runs_on: cluster`` node also needs one of the cluster's ``workers`` free
    (None: no cap).
    The rest of a run in progress: ``settled`` nodes have finished before time 0,
    ``started`` ones run from time 0 for the seconds given (holding their slots);
    neither starts again. The two must not overlap.

    Returns the time the last node finishes.
    """
    n = len(graph.nodes)
    if not n:
        return 0.0
    node_pools = limits.pools_of_task
    jobs = {name for name, task in graph.plan.tasks.items() if task.runs_on == "cluster"}
    is_job = [node.task in jobs for node in graph.nodes]
    # Invariant: free_workers = workers - cluster nodes running (never below 0).
    free_workers = n if workers is None else workers
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

    # Ready instances wait in one heap per combination of capped pools (and apart
    # when they are cluster jobs), so that an instance blocked on a full pool or a
    # busy cluster never holds back one that could start.
    ready: dict[tuple[tuple[int, ...], bool], list[tuple[float, int]]] = {}

    def push(j: int) -> None:
        key = (node_pools[graph.nodes[j].task], is_job[j])
        heapq.heappush(ready.setdefault(key, []), (-rank[j], j))
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
                    gate.open_first()  # each phase is rolled out anew
                for j in held:
                    make_ready(j)
                if gate is not None:
                    gate.advance()

    finished = [False] * n
    gate = (
        Waves(graph, waves, make_ready, finished.__getitem__, lambda i: phase_of[i] > phase)
        if waves is not None
        else None
    )
    if gate is not None:
        gate.open_first()  # the first wave is open before anything is ready
    begun: Mapping[int, float] = {} if started is None else started
    for i in (*settled, *begun):
        unmet[i] = -1  # never made ready (again)
    for i in settled:
        finished[i] = True
        phase_left[phase_of[i]] -= 1
        for j, r in on_finish.get(i, ()):
            waiting[(j, r)] -= 1
            if waiting[(j, r)] == 0:
                unmet[j] -= 1
    for i in begun:
        for k in node_pools[graph.nodes[i].task]:
            limits.in_use[k] += 1  # its slots, taken before time 0 (no rate token)
        free_workers -= is_job[i]
        if gate is not None:
            gate.pushed(i)
    advance_phase()
    for j in range(n):
        if not unmet.get(j):
            make_ready(j)
    if gate is not None:
        gate.advance()  # a first wave with nothing to start is done at once

    limit = parallelism if parallelism else n
    running = [(left, i) for i, left in begun.items()]
    heapq.heapify(running)
    now = 0.0
    end = 0.0
    done = len(settled)
    while done < n:
        # Start what may start, best first. Invariant: len(running) <= limit,
        # and ``limits`` keeps every pool within its cap and its rate.
        wake = math.inf  # when a rate token frees up for a ready instance
        while len(running) < limit:
            best: tuple[float, int] | None = None
            best_key: tuple[tuple[int, ...], bool] = ((), False)
            for (key, job), heap in ready.items():
                if not heap or (best is not None and heap[0] >= best):
                    continue
                if job and free_workers == 0:
                    continue  # a worker frees up only when a running job ends
                wait = limits.wait_time(key, now)
                if wait == 0.0:
                    best, best_key = heap[0], (key, job)
                elif wait < math.inf:
                    wake = min(wake, now + wait)
            if best is None:
                break
            heapq.heappop(ready[best_key])
            limits.acquire(best_key[0], now)
            free_workers -= best_key[1]
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
            free_workers += is_job[i]
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
    cluster_workers: int | None = None,
) -> float:
    """Estimated makespan of ``graph`` in ``mode`` (``sequential``, ``phased`` or ``dag``).

    ``parallelism`` caps running instances (None or 0: no cap beyond the pools).
    ``cluster_workers`` caps running ``runs_on: cluster`` instances, one job per
    worker (None: the plan's ``cluster.workers``); such an instance starts when a
    worker is free as well as its pools and the cap, so the estimate counts no
    slot held by a job that waits in the cluster's queue (the engine does, from
    submission: with ``parallelism`` below the queue's length it may run later).
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
    workers = graph.plan.cluster.workers if cluster_workers is None else cluster_workers
    return _schedule(graph, durs, rank, parallelism, limits, layers, waves, workers)


def simulate_remaining(
    graph: Graph,
    mode: str,
    parallelism: int | None,
    durations: Sequence[float],
    *,
    done: Collection[int] = (),
    running: Mapping[int, float] | None = None,
    rates: Mapping[str, float] | None = None,
    concurrency: Mapping[str, int | None] | None = None,
    waves: Sequence[Sequence[str]] | None = None,
    cluster_workers: int | None = None,
) -> float:
    """Estimated seconds until a run in progress ends: ``simulate`` on what remains.

    ``done``: nodes that need no more time (settled, or not part of the run);
    they count as finished for their dependents, quorums and waves.
    ``running``: node -> seconds it has run; it runs on for its duration less
    that (0 once overdue), holding its slots. Every other node is still to
    run, for its duration in ``durations`` (one per node), in the engine's
    order (``graph.rank``).
    ``rates`` / ``concurrency``: pool name -> the start rate (0: none) and
    cap (None: none) in effect now, for the pools whose limits changed.
    ``waves``: the run's rollout waves (None: the plan's ``rollout``); the
    waves opened so far open again at time 0, as each is done.
    Raises ``ValueError`` as ``simulate`` does, and for a node both done and running.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    n = len(graph.nodes)
    if len(durations) != n:
        raise ValueError(f"{len(durations)} durations for {n} nodes")
    finished = set(done)
    left = {i: max(0.0, durations[i] - ran) for i, ran in (running or {}).items()}
    if not finished.isdisjoint(left):
        raise ValueError("a node is both done and running")
    if mode == "sequential":
        return sum(left.values()) + sum(
            durations[i] for i in range(n) if i not in finished and i not in left
        )
    layers: Sequence[Sequence[int]] = (range(n),) if mode == "dag" else phase_layers(graph)
    if waves is None and graph.plan.rollout is not None:
        waves = wave_targets(graph.plan)
    limits = StaticLimits(graph, 0.0)
    for k, pool in enumerate(graph.plan.pools.values()):
        if concurrency is not None and pool.name in concurrency:
            limits.caps[k] = concurrency[pool.name]
        rate = None if rates is None else rates.get(pool.name)
        if rate is None:
            continue
        bucket = limits.buckets[k]
        if rate <= 0:
            limits.buckets[k] = None
        elif bucket is None:
            limits.buckets[k] = Bucket(rate, pool.burst, 0.0)
        else:
            bucket.rate = rate
    workers = graph.plan.cluster.workers if cluster_workers is None else cluster_workers
    return _schedule(
        graph,
        durations,
        graph.rank,
        parallelism,
        limits,
        layers,
        waves,
        workers,
        settled=finished,
        started=left,
    )
