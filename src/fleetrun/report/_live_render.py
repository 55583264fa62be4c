"""What the live view knows about a run, and how it draws it.

``LiveState`` holds counters that the live console updates in O(1) per event
(no rendering, no allocation beyond a dict entry); ``render`` turns a state into
a rich renderable for a given screen size and instant, and is pure: the same
state, size and ``now`` always give the same text. ``estimate_remaining`` is
the ETA; in a ``phased`` run it adds up the phases, which a barrier separates.

Per-phase bars count ``done`` (succeeded or reused), ``failed`` (failed,
cancelled or interrupted) and ``skipped`` (skipped or not started) out of the instances of
that phase in this run; instances whose task has no phase share one
``(no phase)`` bar.
"""

from __future__ import annotations

import heapq

from rich.console import Group
from rich.text import Text

from fleetrun.plan._graph import Graph
from fleetrun.plan._simulate import phase_layers
from fleetrun.report._plain import STATE_ORDER, format_duration, printable

NO_PHASE = "(no phase)"
"""The bar of instances whose task names no phase."""

# Per-node status; a node moves forward only, except RUNNING <-> WAITING on a retry.
OUT = 0  # not part of this run
PENDING = 1  # waiting for dependencies or a slot
RUNNING = 2  # an attempt started (and has not settled)
WAITING = 3  # sleeping through a retry backoff
SETTLED = 4

_DONE = frozenset({"succeeded", "reused"})
_FAILED = frozenset({"failed", "cancelled", "interrupted"})

_COUNT_ORDER = ("pending", "running", "retrying", *STATE_ORDER)

_BAR_DONE = "█"
_BAR_LEFT = "░"


class _Phases:
    """The phases of a ``phased`` run as the engine runs them, for the ETA.

    ``phase_of[i]`` is node i's phase in ``phase_layers`` order (the engine's:
    a phase opens once every earlier one has settled), ``rank[i]`` the longest
    path by estimate from the start of i that stays inside its phase and among
    the run's members. Counters are kept per group, one group per (phase,
    task) pair: ``work[g]`` sums the estimates of the group's nodes that are
    pending or waiting for a retry, ``unstarted[g]`` counts them, the same
    invariant as ``LiveState.pending_work`` and ``unstarted`` per task.
    """

    def __init__(self, state: LiveState) -> None:
        graph, status, est = state.graph, state.status, state.est
        n = len(status)
        layers = phase_layers(graph)
        self.count = len(layers)
        phase_of = [0] * n
        for k, layer in enumerate(layers):
            for i in layer:
                phase_of[i] = k
        self.phase_of = phase_of
        # Backwards through a topological order: dependents first.
        rank = [0.0] * n
        for wave in reversed(graph.waves):
            for i in wave:
                if status[i] == OUT:
                    continue  # not part of this run: it never runs
                k, best = phase_of[i], 0.0
                for j in graph.dependents[i]:
                    if phase_of[j] == k and rank[j] > best and status[j] != OUT:
                        best = rank[j]
                rank[i] = est[i] + best
        self.rank = rank
        groups: dict[tuple[int, int], int] = {}
        group_of = [0] * n
        for i in range(n):
            group_of[i] = groups.setdefault((phase_of[i], state.task_of[i]), len(groups))
        self.group_of = group_of
        self.group_phase = [k for k, _ in groups]
        self.group_task = [t for _, t in groups]
        self.work = [0.0] * len(groups)
        self.unstarted = [0] * len(groups)
        # Per group, its members by rank, highest first; ``_at[g]`` only moves
        # forward (a node never becomes pending again).
        self._by_rank: list[list[int]] = [[] for _ in groups]
        for i in range(n):
            st = status[i]
            if st == OUT:
                continue
            g = group_of[i]
            self._by_rank[g].append(i)
            if st in (PENDING, WAITING):
                self.work[g] += est[i]
                self.unstarted[g] += 1
        for nodes in self._by_rank:
            nodes.sort(key=lambda i: -rank[i])
        self._at = [0] * len(groups)

    def move(self, i: int, est: float, count: int) -> None:
        """Node i (estimate ``est``) became pending (``count`` 1) or stopped being so (-1)."""
        g = self.group_of[i]
        self.work[g] += count * est
        self.unstarted[g] += count

    def top_pending(self, g: int, status: bytearray) -> int | None:
        """Group ``g``'s pending node of highest in-phase rank (amortized O(1))."""
        order = self._by_rank[g]
        k = self._at[g]
        while k < len(order) and status[order[k]] != PENDING:
            k += 1
        self._at[g] = k
        return order[k] if k < len(order) else None


class LiveState:
    """Counters of one run as events report it, indexed by node id.

    Invariants: ``len(running) + len(waiting) + settled + pending <= members``
    (the rest are between their last attempt's end and their settling);
    ``in_flight[p]`` is the number of nodes in ``running`` whose task draws on
    pool ``p``; ``pending_work[t]`` is the sum of the estimates of task ``t``'s
    nodes that are pending or waiting for a retry, ``unstarted[t]`` their number.
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
        self.task_estimated = [t.estimate is not None for t in tasks]
        self.task_of = [task_index[n.task] for n in nodes]
        self.est = [n.estimate for n in nodes]
        self.rank = graph.rank
        self.pending_work = [0.0] * len(tasks)
        self.unstarted = [0] * len(tasks)
        self.left = [0] * len(tasks)  # members of each task not settled yet
        self.measured = [0.0] * len(tasks)  # summed durations of succeeded attempts
        self.measured_est = [0.0] * len(tasks)  # their estimates, summed

        pools = list(plan.pools.values())
        pool_index = {p.name: k for k, p in enumerate(pools)}
        self.pool_names = [p.name for p in pools]
        self.pool_limit = [p.concurrency for p in pools]
        self.pool_base_rate = [p.rate for p in pools]
        self.pool_rate: list[float | None] = [None] * len(pools)
        self.in_flight = [0] * len(pools)
        self.pools_of_task = [
            tuple(pool_index[p] for p in t.pools if p in pool_index) for t in tasks
        ]

        # Phased runs only: built at the first estimate, then kept up per event.
        self._phases: _Phases | None = None
        self.status = bytearray(len(nodes))
        self.members = 0
        for i in range(len(nodes)) if only is None else only:
            self._join(i)
        self.running: dict[int, tuple[float, int]] = {}  # node -> (start, attempt), by start
        self.waiting: set[int] = set()
        self.settled = 0
        self.between = 0  # attempts ended for good, instance not settled yet
        self.counts: dict[str, int] = {}
        # Per task, its members by rank, highest first; ``_rank_at[t]`` only
        # moves forward (a node never becomes pending again).
        self._by_rank: list[list[int]] | None = None
        self._rank_at: list[int] = []

    def _join(self, i: int) -> None:
        self.status[i] = PENDING
        self.members += 1
        self.phase_total[self.phase_of[i]] += 1
        t = self.task_of[i]
        self.left[t] += 1
        self.pending_work[t] += self.est[i]
        self.unstarted[t] += 1
        if self._phases is not None:
            self._phases.move(i, self.est[i], 1)

    # -- updates (O(1) each, called once per event) ------------------------------

    def attempt_started(self, i: int, attempt: int, at: float) -> None:
        """An attempt of node ``i`` began at ``at``."""
        st = self.status[i]
        t = self.task_of[i]
        pools = self.pools_of_task[t]
        if st in (PENDING, WAITING):
            self.pending_work[t] -= self.est[i]
            self.unstarted[t] -= 1
            if self._phases is not None:
                self._phases.move(i, self.est[i], -1)
            if st == WAITING:
                self.waiting.discard(i)
        elif st != RUNNING:
            return
        elif self.running.pop(i, None) is not None:
            for p in pools:
                self.in_flight[p] -= 1
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
            self.measured_est[t] += self.est[i]
        if self.status[i] == RUNNING:
            if outcome == "retrying":
                self.status[i] = WAITING
                self.waiting.add(i)
                self.pending_work[t] += self.est[i]
                self.unstarted[t] += 1
                if self._phases is not None:
                    self._phases.move(i, self.est[i], 1)
            else:
                self.between += 1
        return took

    def instance_settled(self, i: int, state: str) -> None:
        """Node ``i`` reached its final ``state``."""
        st = self.status[i]
        if st == SETTLED:
            return
        t = self.task_of[i]
        if st == OUT:
            self._join(i)
            st = PENDING
        if st in (PENDING, WAITING):
            self.pending_work[t] -= self.est[i]
            self.unstarted[t] -= 1
            if self._phases is not None:
                self._phases.move(i, self.est[i], -1)
            self.waiting.discard(i)
        elif i in self.running:
            self.running.pop(i)
            for p in self.pools_of_task[t]:
                self.in_flight[p] -= 1
        else:
            self.between -= 1
        self.status[i] = SETTLED
        self.settled += 1
        self.left[t] -= 1
        self.counts[state] = self.counts.get(state, 0) + 1
        ph = self.phase_of[i]
        if state in _DONE:
            self.phase_done[ph] += 1
        elif state in _FAILED:
            self.phase_failed[ph] += 1
        else:
            self.phase_skipped[ph] += 1

    def pool_changed(self, pool: str, rate: float) -> None:
        """A pool's adaptive rate is now ``rate``."""
        if pool in self.pool_names:
            self.pool_rate[self.pool_names.index(pool)] = rate

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

    def _top_pending(self, t: int) -> int | None:
        """Task ``t``'s pending node of highest rank (amortized O(1))."""
        if self._by_rank is None:
            # Built once, at the first render, not per event.
            lists: list[list[int]] = [[] for _ in self.task_names]
            for i in range(len(self.status)):
                if self.status[i] != OUT:
                    lists[self.task_of[i]].append(i)
            for nodes in lists:
                nodes.sort(key=lambda i: -self.rank[i])
            self._by_rank = lists
            self._rank_at = [0] * len(lists)
        order, status = self._by_rank[t], self.status
        k = self._rank_at[t]
        while k < len(order) and status[order[k]] != PENDING:
            k += 1
        self._rank_at[t] = k
        return order[k] if k < len(order) else None

    def _factors(self) -> tuple[list[float | None], float | None]:
        """Per task: measured mean / estimate; overall: the same over every task.

        A task without measurements takes the overall factor; before anything
        finished, its plan estimate as given (factor 1) when it has one, else None.
        """
        done = sum(self.measured_est)
        overall: float | None = sum(self.measured) / done if done > 0 else None
        if overall is None and all(self.task_estimated):
            overall = 1.0
        per: list[float | None] = []
        for t in range(len(self.task_names)):
            if self.measured_est[t] > 0:
                per.append(self.measured[t] / self.measured_est[t])
            elif overall is None and self.task_estimated[t]:
                per.append(1.0)
            else:
                # Plan estimates tend to be off by a common factor (they were
                # written for another machine, or another day): calibrate a
                # task not yet measured by what was measured so far.
                per.append(overall)
        return per, overall

    def estimate_remaining(self, now: float) -> float | None:
        """Estimated seconds until the run ends, or None when there is no basis yet.

        The remaining critical path: for a running node its rank minus its
        elapsed time, for a pending (or retrying) one its rank; with a
        parallelism N, at least the remaining work divided by N; for each pool,
        at least its tasks' remaining work divided by its concurrency and their
        remaining starts divided by its (current) rate. Estimates are scaled by
        how long finished instances of the same task really took (a task never
        measured takes the factor of all measured tasks; before anything is
        measured, plan estimates are taken as given).

        In a ``phased`` run (``mode``) a phase starts only once every earlier
        one has settled, so the estimate is the sum, over the phases not yet
        settled, of each phase's own bound: the same three bounds computed on
        that phase's nodes alone, its critical path being the longest path
        that stays inside the phase. ``sequential`` runs have a parallelism of
        1, which makes the remaining work the bound.
        """
        if self.ended_at is not None:
            return 0.0
        per, overall = self._factors()
        if overall is None or any(
            per[t] is None and self.left[t] for t in range(len(self.task_names))
        ):
            return None
        factor = [overall if f is None else f for f in per]
        if self.mode == "phased":
            return self._phased_remaining(now, factor, overall)

        def through(i: int, own: float) -> float:
            # Its own part as given, what follows it by the overall factor.
            return own + (self.rank[i] - self.est[i]) * overall

        path = 0.0
        work = [w * f for w, f in zip(self.pending_work, factor, strict=True)]
        for t, w in enumerate(work):
            if w > 0:
                top = self._top_pending(t)
                if top is not None:
                    path = max(path, through(top, self.est[top] * factor[t]))
        for i in self.waiting:
            path = max(path, through(i, self.est[i] * factor[self.task_of[i]]))
        for i, (start, _) in self.running.items():
            t = self.task_of[i]
            own = max(0.0, self.est[i] * factor[t] - (now - start))
            work[t] += own
            path = max(path, through(i, own))
        return self._bound(path, work, self.unstarted)

    def _phased_remaining(self, now: float, factor: list[float], overall: float) -> float:
        """``estimate_remaining`` with the barriers of ``phased`` mode: the phases' sum."""
        ph = self._phases
        if ph is None:
            # Built once, at the first estimate, then kept up by the events.
            ph = self._phases = _Phases(self)
        rank, est, status = ph.rank, self.est, self.status

        def through(i: int, own: float) -> float:
            return own + (rank[i] - est[i]) * overall

        tasks = len(self.task_names)
        path = [0.0] * ph.count
        work = [[0.0] * tasks for _ in range(ph.count)]
        starts = [[0] * tasks for _ in range(ph.count)]
        for g, left in enumerate(ph.unstarted):
            if left <= 0:
                continue
            k, t = ph.group_phase[g], ph.group_task[g]
            work[k][t] += ph.work[g] * factor[t]
            starts[k][t] += left
            top = ph.top_pending(g, status)
            if top is not None:
                path[k] = max(path[k], through(top, est[top] * factor[t]))
        for i in self.waiting:
            k = ph.phase_of[i]
            path[k] = max(path[k], through(i, est[i] * factor[self.task_of[i]]))
        for i, (start, _) in self.running.items():
            k, t = ph.phase_of[i], self.task_of[i]
            own = max(0.0, est[i] * factor[t] - (now - start))
            work[k][t] += own
            path[k] = max(path[k], through(i, own))
        # A settled phase has no path, work or starts left: it adds 0.
        return sum(self._bound(path[k], work[k], starts[k]) for k in range(ph.count))

    def _bound(self, path: float, work: list[float], starts: list[int]) -> float:
        """The largest of ``path``, the work (per task) over the parallelism, and
        for each pool its tasks' work over its concurrency and starts over its rate."""
        bound = path
        if self.parallelism:
            bound = max(bound, sum(work) / self.parallelism)
        pool_work = [0.0] * len(self.pool_names)
        pool_starts = [0] * len(self.pool_names)
        for t, pools in enumerate(self.pools_of_task):
            for p in pools:
                pool_work[p] += work[t]
                pool_starts[p] += starts[t]
        for p, limit in enumerate(self.pool_limit):
            if limit:
                bound = max(bound, pool_work[p] / limit)
            rate = self.pool_rate[p] or self.pool_base_rate[p]
            if rate:
                bound = max(bound, pool_starts[p] / rate)
        return bound


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
    eta = state.estimate_remaining(now)
    if eta is None:
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
    name_w = min(24, max(len(state.phase_names[k]) for k in shown))
    total_w = len(str(max(state.phase_total[k] for k in shown)))
    stats_w = 2 * total_w + 1 + len(" done · ") + total_w + len(" failed · ")
    stats_w += total_w + len(" skipped")
    bar_w = max(10, min(40, width - name_w - stats_w - 3))
    lines = []
    for k in shown:
        total = state.phase_total[k]
        done, failed, skipped = state.phase_done[k], state.phase_failed[k], state.phase_skipped[k]
        cells = _segments((done, failed, skipped), total, bar_w)
        line = Text(state.phase_names[k][:name_w].ljust(name_w) + " ")
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
    name_w = max((len(n) for n in state.pool_names), default=0)
    for p, name in enumerate(state.pool_names):
        limit = state.pool_limit[p]
        line = Text(f"pool {name.ljust(name_w)} ")
        line.append(f"{state.in_flight[p]}/{'∞' if limit is None else limit} in flight")
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
    key_w = min(48, max(map(len, keys.values()), default=0))
    for i, (start, attempt) in picked:
        key = keys[i]
        line = Text(f"  {key[:key_w].ljust(key_w)} {format_duration(max(0.0, now - start)):>7}")
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
