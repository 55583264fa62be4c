"""``build_report``: a ``RunReport`` measured from the journal.

Every time in the report is a recorded timestamp or a difference of two; the
plan is read only for its graph (phases, dependencies, pools), never for its
estimates. The graph comes from the plan file when it is unchanged since the
run (same ``source_hash``), else from the run's plan snapshot in the journal;
when neither loads, or it no longer expands to the run's instances, the report
leaves out the graph-derived parts and says so in ``notes``.

An instance's *duration* is its ``task_time``: the sum of its attempts'
durations (backoff waits between attempts are not work). The same per-node
durations feed the critical path, the lower bound and the estimates of the
modes that did not run, so ``sequential`` always equals ``task_time``.

A throttled retry is one the engine took as a throttle signal, as journaled
with its attempt (``AttemptRecord.throttled``); the report does not re-derive
it from the retry reason. Likewise queued time and its reasons are the
engine's, as journaled, except that a wait named after a pool's rate or
Retry-After pause is divided at that pool's journaled pauses (``_queued.split``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from pathlib import Path
from typing import TypeVar

from fleetrun.errors import FleetrunError
from fleetrun.plan import (
    MODES,
    Graph,
    Plan,
    expand,
    load_plan,
    load_plan_text,
    phase_layers,
    simulate,
)
from fleetrun.redact import Redactor
from fleetrun.report._chain import longest_chain, peak_overlap, ready_at
from fleetrun.report._model import (
    AttemptRecord,
    CriticalStep,
    InstanceRecord,
    ModeEstimate,
    PoolPause,
    PoolSeries,
    PoolStats,
    RunReport,
    Span,
    TargetStats,
    TaskStats,
)
from fleetrun.report._pool_series import RESUMED, pause_spans, pool_series
from fleetrun.report._queued import add, held_back, merge, ordered, split
from fleetrun.report._text import speedup
from fleetrun.state import AttemptRecord as AttemptRow
from fleetrun.state import InstanceRecord as InstanceRow
from fleetrun.state import JournalReader, RunRecord

T = TypeVar("T")

SLOWEST_TARGETS = 10
"""How many targets ``slowest_targets`` lists."""


def build_report(journal: JournalReader, run_id: str) -> RunReport:
    """Measure run ``run_id`` (an exact id) from ``journal``.

    Raises ``RunNotFoundError`` when the run is not on record; a plan that can
    no longer be loaded only costs the graph-derived parts (noted in ``notes``).
    """
    run = journal.run(run_id)
    rows = journal.instances(run.id)
    notes: list[str] = []
    graph = _load_graph(run, rows, notes)
    redactor = Redactor(graph.plan.secret_values if graph is not None else ())
    ended_at = run.ended_at
    if ended_at is None:
        notes.append("the run has not ended: figures cover what is recorded so far")

    changed = journal.event_data(run.id, "PoolChanged")
    row_of = {r.key: r for r in rows}
    recorded = journal.attempts(run.id)
    # A pause still on when an unended record stops lasts past every recorded start.
    record_end = (
        ended_at
        if ended_at is not None
        else max([run.started_at, *(a.started_at for a in recorded)])
    )
    pauses = pause_spans(changed, record_end)
    attempts = tuple(_attempt(a, row_of, redactor, pauses) for a in recorded)
    cut = sum(a.outcome == "interrupted" for a in attempts)
    if cut:
        notes.append(
            f"{cut} attempt(s) were running when fleetrun stopped: each ends at the run's "
            "last trace in the record (its last event, heartbeat or log write)"
        )
    open_ended = sum(a.ended_at is None for a in attempts)
    if open_ended:
        notes.append(
            f"{open_ended} attempt(s) have no recorded end (still running, or fleetrun "
            "stopped): they count as 0 s"
        )
    by_key: dict[str, list[AttemptRecord]] = {}
    for a in attempts:
        by_key.setdefault(a.key, []).append(a)
    for tries in by_key.values():
        tries.sort(key=lambda a: a.n)

    members = {r.node for r in rows}
    layers = _phases(graph, members) if graph is not None else []
    phase_of = {i: name for name, layer in layers for i in layer}
    dur, start, end = _node_times(rows, by_key)
    parallelism = run.options.get("parallelism") or None
    # What bounds the run: sequential mode runs one instance at a time.
    at_once = 1 if run.mode == "sequential" else parallelism
    path: list[int] = []
    if graph is not None:
        ran = {i for i in members if i in start}
        _, path = longest_chain(graph, ran, dur, start, end)
    on_path = set(path)
    pending = {r.node for r in rows if r.status != "reused"} - set(end)

    queued = {r.key: _queued(by_key.get(r.key, ())) for r in rows}
    instances = tuple(
        InstanceRecord(
            key=r.key,
            task=r.task,
            target=r.target,
            phase=phase_of.get(r.node),
            state=r.status,
            reason=redactor.redact(r.reason or ""),
            attempts=len(by_key.get(r.key, ())),
            started_at=start.get(r.node),
            ended_at=end.get(r.node),
            task_time=dur[r.node],
            exit_code=r.exit_code,
            critical=r.node in on_path,
            queued=sum(queued[r.key].values()),
            queued_reasons=queued[r.key],
        )
        for r in rows
    )
    task_time = sum(i.task_time for i in instances)
    last = max([*end.values(), *start.values(), run.started_at])
    wall = (ended_at if ended_at is not None else last) - run.started_at

    spans = tuple(
        _span(name, [instances[k] for k in _positions(rows, layer)], graph, at_once, dur,
              start, end, set(layer))
        for name, layer in layers
    )  # fmt: skip
    cp_length = sum(dur[i] for i in path)
    overall = _figures(
        "overall", instances, run.started_at, ended_at, wall, task_time, cp_length, at_once,
        _rate_bound(graph, instances),
    )  # fmt: skip
    notes += _limits_notes(graph)
    run_end = ended_at if ended_at is not None else last
    return RunReport(
        run_id=run.id,
        parent_id=run.parent_id,
        kind=run.kind,
        plan_name=run.plan_name,
        plan_path=run.plan_path,
        status=run.status,
        mode=run.mode,
        parallelism=parallelism,
        started_at=run.started_at,
        ended_at=ended_at,
        overall=overall,
        phases=spans,
        estimates=_estimates(graph, run.mode, parallelism, dur, wall),
        critical_path=tuple(
            CriticalStep(
                key=graph.nodes[i].key,
                started_at=start[i],
                ended_at=end.get(i, start[i]),
                duration=dur[i],
                waited=max(0.0, start[i] - ready_at(graph, i, end, pending, run.started_at)),
            )
            for i in path
            if graph is not None
        ),
        instances=instances,
        attempts=attempts,
        tasks=_task_stats(instances, by_key),
        pools=_pool_stats(
            graph, instances, by_key, _rate_changes(_configured(graph), changed), last
        ),
        slowest_targets=_target_stats(instances, by_key),
        notes=tuple(redactor.redact(n) for n in notes),
        pool_series=_series(graph, changed, attempts, run.started_at, run_end, redactor),
    )


def load_run_graph(run: RunRecord, rows: Sequence[InstanceRow]) -> tuple[Graph | None, list[str]]:
    """The graph run ``run`` (with its instance ``rows``) ran, as ``build_report``
    finds it, and notes on where it came from (None when it cannot be had)."""
    notes: list[str] = []
    return _load_graph(run, rows, notes), notes


def load_run_plan(run: RunRecord) -> tuple[Plan | None, list[str]]:
    """The plan run ``run`` ran, found where ``load_run_graph`` finds it (with
    the same notes), but not expanded into instances: for readers that need the
    plan's pools, rollout, tasks or secrets and not its graph, which for a run
    of 50,000 instances costs ten times the loading."""
    notes: list[str] = []
    return _load_source(run, notes, _as_is), notes


def _load_graph(run: RunRecord, rows: Sequence[InstanceRow], notes: list[str]) -> Graph | None:
    """The run's graph: from the unchanged plan file, else from the journal's snapshot."""
    graph = _load_source(run, notes, expand)
    if graph is None:
        return None
    for r in rows:
        if r.node >= len(graph.nodes) or graph.nodes[r.node].key != r.key:
            notes.append("the plan no longer expands to this run's instances")
            return None
    return graph


def _as_is(plan: Plan) -> Plan:
    return plan


def _load_source(run: RunRecord, notes: list[str], make: Callable[[Plan], T]) -> T | None:
    """``make`` applied to the run's plan: the unchanged plan file's, else the
    journal's snapshot's (None, said in ``notes``, when neither can be made)."""
    path = Path(run.plan_path)
    made: T | None = None
    problem = ""
    if path.is_file():
        try:
            plan = load_plan(path)
            if plan.source_hash == run.plan_hash:
                made = make(plan)
            else:
                notes.append(
                    f"the plan {path} changed since this run; its graph comes from the "
                    "journal's snapshot of the plan"
                )
        except FleetrunError as e:
            problem = _first_line(e)
            notes.append(
                f"the plan {path} no longer loads; its graph comes from the journal's snapshot"
            )
    else:
        notes.append(f"the plan {path} is gone; its graph comes from the journal's snapshot")
    if made is None:
        try:
            made = make(load_plan_text(run.plan_snapshot, str(path), path.parent))
        except FleetrunError as e:
            problem = problem or _first_line(e)
            notes.append(f"the plan could not be loaded ({problem})")
            return None
    return made


def _limits_notes(graph: Graph | None) -> list[str]:
    """What the graph-derived figures leave out."""
    if graph is None:
        return [
            "without the plan's graph the report has no phases, critical path, mode "
            "estimates or pools"
        ]
    adaptive = [p.name for p in graph.plan.pools.values() if p.rate and p.adaptive]
    if not adaptive:
        return []
    return [
        f"adaptive pools ({', '.join(adaptive)}) are estimated at their configured rate: "
        "the other modes' estimates cannot foresee throttling"
    ]


def _rate_bound(graph: Graph | None, instances: Sequence[InstanceRecord]) -> float:
    """The least time the attempts of ``instances`` take to start under the pools' rates.

    A bucket of ``burst`` tokens refilled at ``rate`` allows at most
    ``burst + rate * t`` starts in ``t`` seconds, so ``n`` starts need at least
    ``(n - burst) / rate`` seconds.
    """
    if graph is None:
        return 0.0
    bound = 0.0
    for pool in graph.plan.pools.values():
        if not pool.rate:
            continue
        starts = sum(i.attempts for i in instances if pool.name in graph.plan.tasks[i.task].pools)
        bound = max(bound, (starts - max(1, pool.burst)) / pool.rate)
    return bound


def _node_times(
    rows: Sequence[InstanceRow], by_key: Mapping[str, Sequence[AttemptRecord]]
) -> tuple[dict[int, float], dict[int, float], dict[int, float]]:
    """Per node id: task time (its attempts summed in attempt order), first start, last end.

    Every instance has a task time (0 without attempts); only those that ran
    have a start, and only those with a recorded end an end.
    """
    dur: dict[int, float] = {}
    start: dict[int, float] = {}
    end: dict[int, float] = {}
    for r in rows:
        node, tries = r.node, by_key.get(r.key, ())
        dur[node] = sum(a.duration for a in tries)
        if tries:
            start[node] = min(a.started_at for a in tries)
            ends = [a.ended_at for a in tries if a.ended_at is not None]
            if ends:
                end[node] = max(ends)
    return dur, start, end


def _phases(graph: Graph, members: Set[int]) -> list[tuple[str, list[int]]]:
    """The run's instances per phase, in phase order (none when the plan has no phases)."""
    if not graph.plan.phases:
        return []
    layers = []
    for name, layer in _named_layers(graph):
        inside = [i for i in layer if i in members]
        if inside:
            layers.append((name, inside))
    return layers


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]


def _named_layers(graph: Graph) -> list[tuple[str, tuple[int, ...]]]:
    """``phase_layers`` with each layer's phase name.

    A layer's effective phase is the latest own phase among its nodes: a node
    lands in a later layer only through a requirement in that layer, and
    following requirements back ends at a node whose own phase is the layer's.
    """
    index = {name: i for i, name in enumerate(graph.plan.phases)}
    named = []
    for layer in phase_layers(graph):
        p = max(
            (index.get(graph.nodes[i].phase or "", 0) for i in layer),
            default=0,
        )
        named.append((graph.plan.phases[p], layer))
    return named


def _positions(rows: Sequence[InstanceRow], nodes: Iterable[int]) -> list[int]:
    """Positions in ``rows`` of the given node ids."""
    wanted = set(nodes)
    return [k for k, r in enumerate(rows) if r.node in wanted]


def _attempt(
    a: AttemptRow,
    row_of: Mapping[str, InstanceRow],
    redactor: Redactor,
    pauses: Mapping[str, Sequence[PoolPause]],
) -> AttemptRecord:
    row = row_of[a.key]  # Invariant (journal check): every attempt has its instance.
    return AttemptRecord(
        key=a.key,
        task=row.task,
        target=row.target,
        n=a.n,
        started_at=a.started_at,
        ended_at=a.ended_at,
        outcome=a.outcome,
        exit_code=a.exit_code,
        signal=a.signal,
        timed_out=a.timed_out,
        retry_reason=redactor.redact(a.retry_reason) if a.retry_reason else None,
        log_path=a.log_path,
        throttled=a.throttled,
        ready_at=a.ready_at,
        queued=a.queued,
        queued_reason=a.queued_reason,
        queued_reasons=split(a.queued_reason, a.ready_at, a.started_at, pauses),
    )


def _queued(tries: Sequence[AttemptRecord]) -> dict[str, float]:
    """An instance's queued seconds by reason, over its attempts (each divided
    at its pool's pauses, ``_queued.split``), most first."""
    out: dict[str, float] = {}
    for a in tries:
        for reason, seconds in a.queued_reasons.items():
            add(out, reason, seconds)
    return ordered(out)


def _counts(instances: Iterable[InstanceRecord]) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in instances:
        out[i.state] = out.get(i.state, 0) + 1
    return out


def _figures(
    name: str,
    instances: Sequence[InstanceRecord],
    started_at: float | None,
    ended_at: float | None,
    wall: float,
    task_time: float,
    critical_path: float,
    parallelism: int | None,
    rate_bound: float = 0.0,
    phase: bool = False,
) -> Span:
    """A ``Span`` from its measured parts, with the derived ratios (efficiency 0 when wall
    is 0; speedup ``None`` when too short to measure, see ``_text.speedup``).

    For a ``phase``, waiting for the phase to open happened before its span
    began, so it never explains the phase's own speedup."""
    lower = max(critical_path, task_time / parallelism if parallelism else 0.0, rate_bound)
    reasons = merge(i.queued_reasons for i in instances)
    return Span(
        name=name,
        instances=len(instances),
        counts=_counts(instances),
        started_at=started_at,
        ended_at=ended_at,
        wall=wall,
        task_time=task_time,
        speedup=speedup(task_time, wall),
        critical_path=critical_path,
        lower_bound=lower,
        efficiency=lower / wall if wall > 0 else 0.0,
        queued=sum(i.queued for i in instances),
        queued_reasons=reasons,
        held_back=held_back(
            wall,
            critical_path,
            task_time,
            parallelism,
            {r: s for r, s in reasons.items() if r != "phase"} if phase else reasons,
        ),
    )


def _span(
    name: str,
    instances: Sequence[InstanceRecord],
    graph: Graph | None,
    parallelism: int | None,
    dur: Mapping[int, float],
    start: Mapping[int, float],
    end: Mapping[int, float],
    nodes: set[int],
) -> Span:
    """One phase: first start to last end of its instances' attempts."""
    starts = [start[i] for i in nodes if i in start]
    ends = [end[i] for i in nodes if i in end]
    first = min(starts) if starts else None
    last = max(ends) if ends else None
    wall = last - first if first is not None and last is not None else 0.0
    cp = 0.0
    if graph is not None:
        cp, _ = longest_chain(graph, {i for i in nodes if i in start}, dur, start, end)
    task_time = sum(i.task_time for i in instances)
    return _figures(
        name, instances, first, last, wall, task_time, cp, parallelism,
        _rate_bound(graph, instances), phase=True,
    )  # fmt: skip


def _estimates(
    graph: Graph | None,
    mode: str,
    parallelism: int | None,
    dur: Mapping[int, float],
    wall: float,
) -> tuple[ModeEstimate, ...]:
    """Measured for the mode that ran; list-scheduled from measured durations otherwise."""
    if graph is None:
        return (ModeEstimate(mode=mode, makespan=wall, measured=True),)
    durations = [dur.get(i, 0.0) for i in range(len(graph.nodes))]
    return tuple(
        ModeEstimate(mode=m, makespan=wall, measured=True)
        if m == mode
        else ModeEstimate(
            mode=m, makespan=simulate(graph, m, parallelism, durations), measured=False
        )
        for m in MODES
    )


def _task_stats(
    instances: Sequence[InstanceRecord],
    by_key: Mapping[str, Sequence[AttemptRecord]],
) -> tuple[TaskStats, ...]:
    """Per task, in plan order (order of first appearance without a graph)."""
    grouped: dict[str, list[InstanceRecord]] = {}
    for i in instances:
        grouped.setdefault(i.task, []).append(i)
    out = []
    for task, members in grouped.items():
        tries = [a for i in members for a in by_key.get(i.key, ())]
        retries = [a for a in tries if a.outcome == "retrying"]
        ran = [i for i in members if i.attempts]
        slowest = max(ran, key=lambda i: i.task_time, default=None)
        task_time = sum(i.task_time for i in members)
        out.append(
            TaskStats(
                task=task,
                instances=len(members),
                attempts=len(tries),
                retries=len(retries),
                throttled=sum(a.throttled for a in retries),
                failed=sum(i.state == "failed" for i in members),
                task_time=task_time,
                mean=task_time / len(ran) if ran else 0.0,
                slowest_key=slowest.key if slowest else None,
                slowest=slowest.task_time if slowest else 0.0,
                queued=sum(i.queued for i in members),
                queued_reasons=merge(i.queued_reasons for i in members),
            )
        )
    return tuple(out)


def _series(
    graph: Graph | None,
    changed: Sequence[Mapping[str, object]],
    attempts: Sequence[AttemptRecord],
    started_at: float,
    end_at: float,
    redactor: Redactor,
) -> tuple[PoolSeries, ...]:
    """Each plan pool's limits over the run (none without the plan's graph)."""
    if graph is None:
        return ()
    tasks = graph.plan.tasks.values()
    uses = {p: {t.name for t in tasks if p in t.pools} for p in graph.plan.pools}
    return pool_series(
        graph.plan.pools.values(), uses, changed, attempts, started_at, end_at, redactor.redact
    )


def _configured(graph: Graph | None) -> dict[str, tuple[float, int | None]]:
    """Each pool's configured (rate, concurrency), as ``PoolChanged`` states them
    (rate 0: no rate; concurrency None: uncapped)."""
    if graph is None:
        return {}
    return {p.name: (float(p.rate or 0.0), p.concurrency) for p in graph.plan.pools.values()}


def _rate_changes(
    configured: Mapping[str, tuple[float, int | None]], changed: Iterable[Mapping[str, object]]
) -> dict[str, int]:
    """Changes of each pool's effective rate or concurrency, from the run's
    ``PoolChanged`` events' fields (journal order), starting from ``configured``.
    A Retry-After pause and its resume change neither limit, and an event that
    states the limits already in force changes nothing: none of them counts."""
    last = dict(configured)
    out: dict[str, int] = {}
    for data in changed:
        pool, rate, conc = data.get("pool"), data.get("rate"), data.get("concurrency")
        paused = data.get("paused")
        if not isinstance(pool, str) or not isinstance(rate, (int, float)):
            continue
        if isinstance(paused, (int, float)) and paused > 0:
            continue
        if str(data.get("reason", "")).startswith(RESUMED):
            continue
        now = (float(rate), conc if isinstance(conc, int) else None)
        if last.get(pool) != now:
            last[pool] = now
            out[pool] = out.get(pool, 0) + 1
    return out


def _pool_stats(
    graph: Graph | None,
    instances: Sequence[InstanceRecord],
    by_key: Mapping[str, Sequence[AttemptRecord]],
    rate_changes: Mapping[str, int],
    last: float,
) -> tuple[PoolStats, ...]:
    """Per pool of the plan: what its tasks did, and the most attempts running at once."""
    if graph is None:
        return ()
    stats = {t.task: t for t in _task_stats(instances, by_key)}
    out = []
    for pool in graph.plan.pools.values():
        tasks = [t for t in graph.plan.tasks.values() if pool.name in t.pools and t.name in stats]
        names = {t.name for t in tasks}
        users = [i for i in instances if i.task in names]
        tries = [a for i in users for a in by_key.get(i.key, ())]
        out.append(
            PoolStats(
                pool=pool.name,
                concurrency=pool.concurrency,
                rate=pool.rate,
                instances=sum(stats[t.name].instances for t in tasks),
                attempts=sum(stats[t.name].attempts for t in tasks),
                retries=sum(stats[t.name].retries for t in tasks),
                throttled=sum(stats[t.name].throttled for t in tasks),
                peak_in_flight=peak_overlap(
                    (a.started_at, a.ended_at if a.ended_at is not None else last) for a in tries
                ),
                rate_changes=rate_changes.get(pool.name, 0),
                queued=sum(i.queued for i in users),
                queued_reasons=merge(i.queued_reasons for i in users),
            )
        )
    return tuple(out)


def _target_stats(
    instances: Sequence[InstanceRecord], by_key: Mapping[str, Sequence[AttemptRecord]]
) -> tuple[TargetStats, ...]:
    """The targets with the most task time, slowest first (ties by name)."""
    grouped: dict[str, list[InstanceRecord]] = {}
    for i in instances:
        if i.target is not None:
            grouped.setdefault(i.target, []).append(i)
    out = []
    for target, members in grouped.items():
        tries = [a for i in members for a in by_key.get(i.key, ())]
        ends = [a.ended_at for a in tries if a.ended_at is not None]
        first = min((a.started_at for a in tries), default=None)
        out.append(
            TargetStats(
                target=target,
                instances=len(members),
                task_time=sum(i.task_time for i in members),
                wall=max(ends) - first if ends and first is not None else 0.0,
                failed=sum(i.state == "failed" for i in members),
            )
        )
    out.sort(key=lambda t: (-t.task_time, t.target))
    return tuple(out[:SLOWEST_TARGETS])
