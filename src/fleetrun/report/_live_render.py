"""What the live view knows about a run, and how it draws it.

``LiveState`` holds counters that the live console updates in O(1) per event
(no rendering, no simulation); ``render`` turns a state into a rich renderable
for a given screen size and instant: the same state, size and ``now`` always
give the same text, the ETA being the state's latest simulation of what
remains (``LiveState.eta``).

The ETA is ``fleetrun plan``'s makespan simulation (``plan.simulate_remaining``)
run on what remains of the run: settled instances are done, running ones
have their elapsed time counted against their expected duration, pool limits
are the ones in effect (``PoolChanged``), and rollout waves and phases hold
work back as the engine does.

Per-phase bars count ``done`` (succeeded or reused), ``failed`` (failed,
cancelled or interrupted) and ``skipped`` (skipped or not started) out of the instances of
that phase in this run; instances whose task has no phase share one
``(no phase)`` bar.
"""

from __future__ import annotations

import heapq
import time

from rich.console import Group
from rich.text import Text

from fleetrun.plan import Graph, wave_targets
from fleetrun.report._live_eta import (
    OUT,
    PENDING,
    RUNNING,
    SETTLED,
    WAITING,
    EtaInputs,
    EtaSchedule,
)
from fleetrun.report._plain import STATE_ORDER, format_duration, printable
from fleetrun.textwidth import clip, display_width, ljust

NO_PHASE = "(no phase)"
"""The bar of instances whose task names no phase."""

# Per-node status (``_live_eta``'s); a node moves forward only, except RUNNING <->
# WAITING on a retry. OUT: not part of this run; PENDING: waiting for
# dependencies or a slot; RUNNING: an attempt started (and has not settled);
# WAITING: sleeping through a retry backoff.

_DONE = frozenset({"succeeded", "reused"})
_FAILED = frozenset({"failed", "cancelled", "interrupted"})

_COUNT_ORDER = ("pending", "running", "retrying", *STATE_ORDER)

_BAR_DONE = "█"
_BAR_LEFT = "░"


class LiveState:
    """Counters of one run as events report it, indexed by node id.

    Invariants: ``len(running) + len(waiting) + settled + pending <= members``
    (the rest are between their last attempt's end and their settling);
    ``in_flight[p]`` is the number of nodes in ``running`` whose task draws on
    pool ``p``; ``measured[t]`` / ``measured_n[t]`` are the summed durations
    and the number of task ``t``'s succeeded attempts.
    """

    def __init__(
        self, graph: Graph, *, parallelism: int | None, only: frozenset[int] | None
    ) -> None:
        plan = graph.plan
        nodes = graph.nodes
        self.graph = graph
        self.parallelism = parallelism
        self.run_id = ""
        self.mode = ""
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.outcome = ""  # the run's status once it ended
        self.task_time = 0.0

        phases = list(plan.phases)
        phases += sorted({n.phase for n in nodes if n.phase and n.phase not in plan.phases})
        if any(n.phase is None for n in nodes):
            phases.append(NO_PHASE)
        phase_index = {p: k for k, p in enumerate(phases)}
        self.phase_names = phases
        self.phase_of = [phase_index[n.phase or NO_PHASE] for n in nodes]
        self.phase_total = [0] * len(phases)
        self.phase_done = [0] * len(phases)
        self.phase_failed = [0] * len(phases)
        self.phase_skipped = [0] * len(phases)

        tasks = list(plan.tasks.values())
        task_index = {t.name: k for k, t in enumerate(tasks)}
        self.task_names = [t.name for t in tasks]
        self.task_est = [t.estimate for t in tasks]
        self.task_of = [task_index[n.task] for n in nodes]
        self.est = [n.estimate for n in nodes]
        self.left = [0] * len(tasks)  # members of each task not settled yet
        self.measured = [0.0] * len(tasks)  # summed durations of succeeded attempts
        self.measured_n = [0] * len(tasks)  # their number

        pools = list(plan.pools.values())
        pool_index = {p.name: k for k, p in enumerate(pools)}
        self.pool_names = [p.name for p in pools]
        self.pool_limit = [p.concurrency for p in pools]
        self.pool_base_rate = [p.rate for p in pools]
        self.pool_rate: list[float | None] = [None] * len(pools)
        # The concurrency in effect, where an event named one (None: as configured).
        self.pool_cap: list[int | None] = [None] * len(pools)
        self.in_flight = [0] * len(pools)
        self.pools_of_task = [
            tuple(pool_index[p] for p in t.pools if p in pool_index) for t in tasks
        ]
        # The run's rollout waves (None: no rollout), as the engine splits them.
        self.waves = wave_targets(plan) if plan.rollout is not None else None

        self.status = bytearray(len(nodes))
        self.members = 0
        for i in range(len(nodes)) if only is None else only:
            self._join(i)
        self.running: dict[int, tuple[float, int]] = {}  # node -> (start, attempt), by start
        self.waiting: set[int] = set()
        self.settled = 0
        self.between = 0  # attempts ended for good, instance not settled yet
        self.counts: dict[str, int] = {}
        # The ETA: simulated by ``eta`` itself (inline) unless a live console
        # simulates it on another thread.
        self.eta_schedule = EtaSchedule()
        self.eta_inline = True

    def _join(self, i: int) -> None:
        self.status[i] = PENDING
        self.members += 1
        self.phase_total[self.phase_of[i]] += 1
        self.left[self.task_of[i]] += 1

    # -- updates (O(1) each, called once per event) ------------------------------

    def attempt_started(self, i: int, attempt: int, at: float) -> None:
        """An attempt of node ``i`` began at ``at``."""
        st = self.status[i]
        pools = self.pools_of_task[self.task_of[i]]
        if st == WAITING:
            self.waiting.discard(i)
        elif st == RUNNING:
            if self.running.pop(i, None) is not None:
                for p in pools:
                    self.in_flight[p] -= 1
        elif st != PENDING:
            return
        self.status[i] = RUNNING
        self.running[i] = (at, attempt)
        for p in pools:
            self.in_flight[p] += 1

    def attempt_ended(self, i: int, outcome: str, at: float, started_at: float) -> float:
        """An attempt of node ``i`` ended; returns how long it ran."""
        began = self.running.pop(i, None)
        t = self.task_of[i]
        if began is not None:
            started_at = began[0]
            for p in self.pools_of_task[t]:
                self.in_flight[p] -= 1
        took = max(0.0, at - started_at)
        self.task_time += took
        if outcome == "succeeded":
            self.measured[t] += took
            self.measured_n[t] += 1
        if self.status[i] == RUNNING:
            if outcome == "retrying":
                self.status[i] = WAITING
                self.waiting.add(i)
                self.eta_schedule.stale = True
            else:
                self.between += 1
        return took

    def instance_settled(self, i: int, state: str) -> None:
        """Node ``i`` reached its final ``state``."""
        st = self.status[i]
        if st == SETTLED:
            return
        self.eta_schedule.stale = True
        if st == OUT:
            self._join(i)
            st = PENDING
        if st == WAITING:
            self.waiting.discard(i)
        elif i in self.running:
            self.running.pop(i)
            for p in self.pools_of_task[self.task_of[i]]:
                self.in_flight[p] -= 1
        elif st == RUNNING:
            self.between -= 1
        self.status[i] = SETTLED
        self.settled += 1
        self.left[self.task_of[i]] -= 1
        self.counts[state] = self.counts.get(state, 0) + 1
        ph = self.phase_of[i]
        if state in _DONE:
            self.phase_done[ph] += 1
        elif state in _FAILED:
            self.phase_failed[ph] += 1
        else:
            self.phase_skipped[ph] += 1

    def pool_changed(self, pool: str, rate: float, concurrency: int | None = None) -> None:
        """A pool's limits in effect are now ``rate`` starts a second (0: none) and
        ``concurrency`` (None: as configured)."""
        if pool in self.pool_names:
            k = self.pool_names.index(pool)
            self.pool_rate[k] = rate or None  # 0: the pool has no rate
            self.pool_cap[k] = concurrency
            self.eta_schedule.stale = True

    def wave_changed(self, waves: int) -> None:
        """A rollout wave changed, in a run of ``waves`` waves: fewer than the plan's
        when the run continues one whose first waves opened (they form its first)."""
        if self.waves is not None and len(self.waves) != waves:
            planned = len(wave_targets(self.graph.plan))
            self.waves = wave_targets(self.graph.plan, opened=max(0, planned - waves + 1))
        self.eta_schedule.stale = True

    # -- derived values (at render time) -----------------------------------------

    @property
    def pending(self) -> int:
        """Members neither running, nor waiting for a retry, nor settled."""
        return self.members - len(self.running) - len(self.waiting) - self.settled - self.between

    def state_counts(self) -> dict[str, int]:
        """Non-zero counts per state, in display order (``retrying``: in a backoff)."""
        live = {"pending": self.pending, "running": len(self.running)}
        live["retrying"] = len(self.waiting)
        merged = {**live, **self.counts}
        out = {s: merged[s] for s in _COUNT_ORDER if merged.get(s)}
        out.update({s: n for s, n in self.counts.items() if s not in out and n})
        return out

    def eta_inputs(self, now: float) -> EtaInputs:
        """What the ETA's simulation needs at ``now``, copied (cheaply) from this state."""
        names = self.pool_names
        return EtaInputs(
            graph=self.graph,
            mode=self.mode,
            parallelism=self.parallelism,
            now=now,
            status=bytes(self.status),
            running={i: start for i, (start, _) in self.running.items()},
            task_of=self.task_of,
            est=self.est,
            task_est=self.task_est,
            measured=tuple(self.measured),
            measured_n=tuple(self.measured_n),
            left=tuple(self.left),
            rates={n: r for n, r in zip(names, self.pool_rate, strict=True) if r is not None},
            caps={n: c for n, c in zip(names, self.pool_cap, strict=True) if c is not None},
            waves=self.waves,
        )

    def estimate_remaining(self, now: float) -> float | None:
        """Estimated seconds until the run ends, simulated now; None without a basis.

        ``plan.simulate_remaining`` on the run's mode, parallelism and rollout
        waves (``EtaInputs.simulate``): settled instances are done, running
        ones have run since their attempt's start, durations are the ones
        measured in this run (else the estimates, scaled by how the measured
        tasks compared to theirs), pools have the limits in
        effect (``PoolChanged``).
        """
        if self.ended_at is not None:
            return 0.0
        return self.eta_inputs(now).simulate()

    def eta(self, now: float) -> float | None:
        """The ETA at ``now``: the latest simulation, less the time since it ran.

        With ``eta_inline`` (no live console simulating on another thread) it
        is simulated here when ``eta_schedule`` says it is due. None: no
        basis yet, or no simulation has come back yet (``eta_known``).
        """
        if self.ended_at is not None:
            return 0.0
        sched = self.eta_schedule
        if self.eta_inline and sched.due(now):
            began = time.perf_counter()
            sched.begin()
            value = self.estimate_remaining(now)
            sched.store(now, value, time.perf_counter() - began)
        return sched.eta(now)

    @property
    def eta_known(self) -> bool:
        """Whether a simulation of the ETA has come back."""
        return self.eta_schedule.at is not None


def _line(text: Text, width: int) -> Text:
    text.no_wrap = True
    text.overflow = "ellipsis"
    text.truncate(width, overflow="ellipsis")
    return text


def _header(state: LiveState, now: float) -> Text:
    head = Text()
    if state.started_at is None:
        head.append("waiting for the run to start")
        return head
    j = "unbounded" if not state.parallelism else str(state.parallelism)
    head.append(f"run {state.run_id}", style="bold")
    head.append(f" · {state.mode} · -j {j} · ")
    if state.ended_at is not None:
        style = "green" if state.outcome == "succeeded" else "red"
        head.append(state.outcome, style=style)
        head.append(f" after {format_duration(state.ended_at - state.started_at)}")
        return head
    head.append(f"elapsed {format_duration(max(0.0, now - state.started_at))} · ")
    eta = state.eta(now)
    if eta is None and not state.eta_known:
        head.append("ETA being estimated", style="dim")
    elif eta is None:
        head.append("ETA unknown until an instance finishes", style="dim")
    elif eta <= 0 and state.running:
        head.append("ETA overdue", style="yellow")
        head.append(" (running longer than estimated)", style="dim")
    else:
        head.append(f"ETA ~{format_duration(eta)}", style="cyan")
        head.append(" (estimate)", style="dim")
    return head


def _segments(counts: tuple[int, ...], total: int, width: int) -> list[int]:
    """Cells of each bar segment: cumulative rounding (a finished phase fills the
    bar exactly), and a non-empty segment never shrinks to nothing."""
    cells, edge, cum = [], 0, 0
    for n in counts:
        cum += n
        nxt = cum * width // total
        cells.append(nxt - edge)
        edge = nxt
    for k, n in enumerate(counts):
        if n and not cells[k]:
            big = cells.index(max(cells))
            if cells[big] > 1:
                cells[big] -= 1
                cells[k] = 1
    return cells


def _phase_lines(state: LiveState, width: int) -> list[Text]:
    shown = [k for k, total in enumerate(state.phase_total) if total]
    if not shown:
        return []
    name_w = min(24, max(display_width(state.phase_names[k]) for k in shown))
    total_w = len(str(max(state.phase_total[k] for k in shown)))
    stats_w = 2 * total_w + 1 + len(" done · ") + total_w + len(" failed · ")
    stats_w += total_w + len(" skipped")
    bar_w = max(10, min(40, width - name_w - stats_w - 3))
    lines = []
    for k in shown:
        total = state.phase_total[k]
        done, failed, skipped = state.phase_done[k], state.phase_failed[k], state.phase_skipped[k]
        cells = _segments((done, failed, skipped), total, bar_w)
        line = Text(ljust(clip(state.phase_names[k], name_w, ellipsis=""), name_w) + " ")
        for n, style in zip(cells, ("green", "red", "yellow"), strict=True):
            line.append(_BAR_DONE * n, style=style)
        line.append(_BAR_LEFT * (bar_w - sum(cells)), style="dim")
        line.append(f" {done:>{total_w}}/{total:<{total_w}} done")
        if failed:
            line.append(f" · {failed} failed", style="red")
        if skipped:
            line.append(f" · {skipped} skipped", style="yellow")
        lines.append(_line(line, width))
    return lines


def _pool_lines(state: LiveState, width: int) -> list[Text]:
    lines = []
    name_w = max((display_width(n) for n in state.pool_names), default=0)
    for p, name in enumerate(state.pool_names):
        limit, cap = state.pool_limit[p], state.pool_cap[p]
        line = Text(f"pool {ljust(name, name_w)} ")
        shown = limit if cap is None else cap  # an adaptive pool's concurrency in force
        line.append(f"{state.in_flight[p]}/{'∞' if shown is None else shown} in flight")
        if cap is not None and limit is not None and cap < limit:
            line.append(f" of {limit}", style="yellow")
        rate, base = state.pool_rate[p], state.pool_base_rate[p]
        if rate is not None:
            line.append(f" · rate {rate:.3g}/s", style="yellow" if base and rate < base else "")
            if base:
                line.append(f" of {base:.3g}/s")
        elif base:
            line.append(f" · rate {base:.3g}/s")
        lines.append(_line(line, width))
    return lines


def _running_lines(state: LiveState, width: int, rows: int, now: float) -> list[Text]:
    n = len(state.running)
    if n == 0:
        return []
    lines = [Text(f"running {n}", style="bold")]
    if rows <= 0:
        return lines
    show = n if n <= rows else rows - 1
    # Only the rows shown are ordered: O(running * log(rows)) per redraw.
    picked = heapq.nsmallest(show, state.running.items(), key=lambda item: item[1][0])
    keys = {i: printable(state.graph.nodes[i].key) for i, _ in picked}
    key_w = min(48, max(map(display_width, keys.values()), default=0))
    for i, (start, attempt) in picked:
        key = keys[i]
        shown_key = ljust(clip(key, key_w, ellipsis=""), key_w)
        line = Text(f"  {shown_key} {format_duration(max(0.0, now - start)):>7}")
        if attempt > 1:
            line.append(f"  (attempt {attempt})", style="yellow")
        lines.append(_line(line, width))
    if show < n:
        lines.append(Text(f"  and {n - show} more", style="dim"))
    return lines


def _counts_line(state: LiveState, width: int) -> Text:
    parts = [f"{n} {s.replace('_', ' ')}" for s, n in state.state_counts().items()]
    return _line(Text(" · ".join(parts) + f" (of {state.members})"), width)


def render(state: LiveState, width: int, height: int, now: float) -> Group:
    """The live area for a ``width`` x ``height`` screen at instant ``now``.

    Top to bottom: the run (elapsed, ETA), a bar per phase, each pool's
    in-flight count against its limit (and its adaptive rate), the running
    instances longest first (as many as fit, then "and N more"), and the
    counts per state. Never taller than ``height`` unless the phases and pools
    alone are.
    """
    top = [_header(state, now), *_phase_lines(state, width), *_pool_lines(state, width)]
    bottom = _counts_line(state, width)
    room = height - len(top) - 1 - 1  # the counts line and the "running N" title
    running = _running_lines(state, width, max(0, room), now)
    return Group(*top, *running, bottom)
