"""Shared pools at run time: one concurrency, rate, pause and adaptive state for
every run of this user on this machine that names the pool (``pools.X.shared``),
whatever its plan and state directory (``layout.shared_pools_dir``).

``SharedLimits`` is the run's ``Limits`` when its plan has a shared pool: the
pools of the plan that are not shared go to ``Limits`` as before; the shared
ones are decided on the coordination file (``_shared_store.py``), still
synchronously, as the scheduler core decides:

- ``wait_time`` reads the pool's row (a read, microseconds; a snapshot younger
  than ``FRESH`` is reused within one scheduling round) and says how long to
  wait. No event comes from another process when it gives a slot back, so a
  pool full of other runs' slots answers ``RECHECK`` seconds: the core's one
  timer then looks again (a read every 25 ms while a run waits; no
  notification channel, no thread). A pool full of this run's own slots
  answers ``inf`` as a local pool does: its own releases wake it.
- ``take`` re-checks and takes the slots and tokens of all the node's shared
  pools in one transaction. Another run may have taken the last slot since
  ``wait_time`` looked: then nothing is taken, the core leaves the node
  queued, and ``wait_time`` answers the fresh wait for that pool.
- The shared adaptive state gets the calls ``Limits`` makes on a pool's
  ``AdaptiveLimit`` (``started``, ``held``, ``paused``, ``succeeded``,
  ``throttled``, ``tick``; ``ramp_at`` is read), with the global slots in use
  as its in-flight count; each call is logged and replayed by every run
  (``_shared_store``). A Retry-After pauses the pool for every run, unless
  the shared state counts the throttle against the concurrency
  (``AdaptiveLimit.pauses``, asked inside the same transaction): then only
  the throttled attempt's retry waits for it, as in ``Limits``. When
  ``Limits`` makes a new call on its adaptive limits, this module makes it
  too (``_calls`` and the methods below are the one place).
- Changes made by another run reach this run's events at its next read, as a
  ``PoolChanged`` naming that run; a run that joins a pool opened by another
  one with other settings is told so in one ``PoolChanged`` (the opener's
  settings hold until the pool has no live user; see ``_shared_store``).

A file that fails at every use (made unusable mid-run: removed tables,
damaged, locked for long) is not tried forever in silence: after
``GIVE_UP_AFTER`` seconds of failures with no success between them, the
pool takes no more starts in this run, and one ``PoolChanged`` says why and
what to do; what waits for it ends not started, so ``fleetrun retry``
starts it once the file is fixed. The attempts already running finish.

Blocking file I/O on the event loop is deliberate here: every operation is one
SQLite transaction of tens of microseconds (``bench/bench_shared_pool.py``),
cheaper than a hop to a thread, and a start must not wait for anything else.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Callable
from pathlib import Path

from fleetrun.engine._adaptive import pause_text
from fleetrun.engine._limits import Limits, Notify, ThrottleMatch, ThrottleSignal
from fleetrun.engine._shared_file import FULL, PAUSE, PoolRow, config_of, settings_of
from fleetrun.engine._shared_state import describe
from fleetrun.engine._shared_store import Call, SharedStore
from fleetrun.plan import Graph, Pool

log = logging.getLogger(__name__)

RECHECK = 0.025
"""Seconds between two looks at a shared pool that other runs keep full."""

FRESH = 0.005
"""A pool's row read less than this long ago is not read again (one scheduling
round asks about the same pools many times)."""

RECLAIM_EVERY = 0.25
"""Seconds between two looks of a run for dead users of a shared pool (at a
start, or while the pool is full): their slots come back at the pool's next
start by any run, full or not, without a start reading the process table."""

GIVE_UP_AFTER = 30.0
"""Seconds of failures of a shared pool's file, with no success between them,
after which the pool takes no more starts in this run (module doc)."""


def limits_for(
    graph: Graph, now: float, notify: Notify, pools_dir: Path | None, run_id: str
) -> Limits:
    """The run's limits: ``SharedLimits`` when the plan has a shared pool and the
    run has a directory to share it through (``RunOptions.pools_dir``), else
    ``Limits`` (a shared pool then limits this run alone)."""
    if pools_dir is None or not any(p.shared for p in graph.plan.pools.values()):
        return Limits(graph, now, notify)
    return SharedLimits(graph, now, notify, SharedStore(pools_dir, run_id))


class SharedLimits(Limits):
    """``Limits`` whose shared pools live in the coordination file (module doc)."""

    __slots__ = (
        "_blocked",
        "_cfg",
        "_failing",
        "_gave_up",
        "_held",
        "_next_reclaim",
        "_notify_shared",
        "_owed",
        "_pausing",
        "_plan_names",
        "_read_at",
        "_rows",
        "_seen",
        "_split",
        "_store",
    )

    def __init__(self, graph: Graph, now: float, notify: Notify, store: SharedStore) -> None:
        super().__init__(graph, now, notify)
        pools: list[Pool] = list(graph.plan.pools.values())
        n = len(pools)
        self._store = store
        self._notify_shared = notify
        self._plan_names = [p.name for p in pools]
        self._cfg = [config_of(p) if p.shared else None for p in pools]
        self._rows: list[PoolRow | None] = [None] * n  # None: not joined yet
        self._read_at = [-math.inf] * n
        self._seen = [-1] * n  # the row's ``seq`` this run has reported
        self._pausing = [False] * n  # a pause was reported and its end not yet
        self._blocked = [-math.inf] * n  # a lost ``take``: no new try before
        self._next_reclaim = [-math.inf] * n
        self._owed: list[str] = []  # releases the file refused (busy), given back later
        # Since when every use of pool k's file failed (inf: the last one worked),
        # and whether a write failed since (a read that works then is no success:
        # a file locked for long still reads).
        self._failing: list[tuple[float, bool]] = [(math.inf, False)] * n
        self._gave_up = [False] * n  # no more starts in pool k (GIVE_UP_AFTER)
        # An adaptive pool's last ``held`` call not yet made (it only sets a flag
        # that the next start or throttle reads: made then, first).
        self._held: list[bool | None] = [None] * n
        # Per pool signature: (its pools that are not shared, its shared pools).
        self._split: dict[tuple[int, ...], tuple[tuple[int, ...], tuple[int, ...]]] = {}

    def _parts(self, pools: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        parts = self._split.get(pools)
        if parts is None:
            cfg = self._cfg
            parts = self._split[pools] = (
                tuple(k for k in pools if cfg[k] is None),
                tuple(k for k in pools if cfg[k] is not None),
            )
        return parts

    # -- reading the file ---------------------------------------------------------------

    def _row(self, k: int, now: float) -> PoolRow | None:
        """Pool ``k``'s row, fresh to ``FRESH``; joins it on first use (None: the
        file could not be used just now)."""
        row = self._rows[k]
        if row is not None and now - self._read_at[k] < FRESH:
            return row
        cfg = self._cfg[k]
        assert cfg is not None
        try:
            if row is None:
                row, opened = self._store.join(cfg, now)
                self._next_reclaim[k] = now + RECLAIM_EVERY  # joining took them back
                self._failing[k] = (math.inf, False)
                self._seen[k] = row.seq
                self._see(k, row, now)
                if not opened:
                    self._joined(k, row, now)
                return row
            fresh = self._store.read(cfg.shared)
        except sqlite3.Error as e:
            _hiccup("reading", cfg.shared, e, logging.DEBUG)
            self._failed(k, now, e, write=row is None)
            return None
        if fresh is not None:
            self._see(k, fresh, now)
        return self._rows[k]

    def _see(self, k: int, row: PoolRow, now: float) -> None:
        """Take ``row`` as pool ``k``'s state; report another run's change."""
        if not self._failing[k][1]:
            self._failing[k] = (math.inf, False)  # the file works
        self._rows[k] = row
        self._read_at[k] = now
        self.caps[k] = row.concurrency
        b = self.buckets[k]
        if b is not None and row.rate:
            b.rate = row.rate
        self.paused_until[k] = row.paused_until
        if row.seq == self._seen[k]:
            return
        self._seen[k] = row.seq
        if row.changed_by == self._store.run_id or not row.reason:
            return  # this run reported it as it made it
        paused = 0.0
        if row.paused_until > now and not self._pausing[k]:
            self._pausing[k] = True
            paused = row.paused_until - now
        self._emit_shared(k, row, paused, f"{row.reason} (run {row.changed_by})")

    def _joined(self, k: int, row: PoolRow, now: float) -> None:
        """This run joined a pool that another run opened: say whose limits hold."""
        cfg = self._cfg[k]
        assert cfg is not None
        paused = 0.0
        if row.paused_until > now:
            self._pausing[k] = True
            paused = row.paused_until - now
        if row.settings != cfg.settings:
            why = (
                f"shared pool {cfg.shared!r}: the limits of run {row.opened_by}, which opened "
                f"it, hold ({describe(row.settings)}; this plan: {describe(cfg.settings)})"
            )
        elif (row.concurrency, row.rate) != (cfg.concurrency, cfg.rate) or paused:
            why = f"shared pool {cfg.shared!r}: joined at its current limits (run {row.opened_by})"
        else:
            return
        self._emit_shared(k, row, paused, why)

    def _emit_shared(self, k: int, row: PoolRow, paused: float, reason: str) -> None:
        self._notify_shared(self._plan_names[k], row.rate, row.concurrency, paused, reason)

    # -- slots ----------------------------------------------------------------------------

    def wait_time(self, pools: tuple[int, ...], now: float) -> float:
        """As ``Limits.wait_time``; a shared pool full of other runs' slots waits
        ``RECHECK`` seconds (then the core looks again)."""
        local, shared = self._parts(pools)
        wait = 0.0
        why = ""
        if local:
            wait = super().wait_time(local, now)
            if wait == math.inf:
                return wait
            if wait > 0:
                why = self.blocked_by
        full = False
        for k in shared:
            w, kind = self._shared_wait(k, now)
            if w <= 0:
                continue
            name = self._plan_names[k]
            if kind == FULL:
                if not full:
                    full, why = True, f"pool {name} full"
                    if self._gave_up[k]:
                        why = f"pool {name}: its shared pools file cannot be used"
                wait = max(wait, w)
            elif w > wait:
                wait = w
                if not full:
                    why = f"pool {name} " + ("paused for Retry-After" if kind == PAUSE else "rate")
        if wait > 0:
            self.blocked_by = why
        return wait

    def _shared_wait(self, k: int, now: float) -> tuple[float, int]:
        if self._gave_up[k]:
            return math.inf, FULL
        if now < self._blocked[k]:
            return self._blocked[k] - now, FULL
        row = self._row(k, now)
        if row is None:
            return (math.inf if self._gave_up[k] else RECHECK), FULL
        if self._pausing[k] and row.paused_until <= now:
            self._pausing[k] = False
            self._emit_shared(k, row, 0.0, "resumed: the Retry-After pause is over")
        w, kind = row.wait(now)
        adaptive = _adaptive(row)
        if kind != FULL or w <= 0:
            if adaptive and w > 0 and kind != PAUSE:
                self._held[k] = False  # held back by the rate
            return w, kind
        ramp = math.inf
        if adaptive:
            # As ``Limits``: a full adaptive pool in slow start grows with time.
            self._held[k] = True
            ramp = self._ramp_at(row, now)
            if ramp <= now:
                self._observe(k, now, lambda n, *_: [("tick", (now, n))])
                row = self._rows[k] or row
                w, kind = row.wait(now)
                if kind != FULL or w <= 0:
                    return w, kind
                ramp = self._ramp_at(row, now)
        if self.in_use[k] >= row.in_use:
            # Every slot is this run's: its own releases (or the ramp) wake it.
            return (ramp - now if ramp < math.inf else math.inf), FULL
        if now >= self._next_reclaim[k]:
            self._next_reclaim[k] = now + RECLAIM_EVERY
            try:
                fresh = self._store.reclaim(row.name)
            except sqlite3.Error as e:
                _hiccup("reclaiming the slots of dead runs in", row.name, e)
                self._failed(k, now, e, write=True)
                fresh = None
            else:
                self._failing[k] = (math.inf, False)
            if fresh is not None:
                self._see(k, fresh, now)
                w, kind = fresh.wait(now)
                if w <= 0 or kind != FULL:
                    return w, kind
        return min(RECHECK, ramp - now), FULL

    def _ramp_at(self, row: PoolRow, now: float) -> float:
        try:
            limit = self._store.replica(row, now)
        except sqlite3.Error as e:
            _hiccup("reading the ramp of", row.name, e, logging.DEBUG)
            return math.inf
        return math.inf if limit is None else limit.ramp_at()

    def _calls(self, k: int, *calls: Call) -> list[Call]:
        """``calls`` on pool ``k``'s adaptive state, after its pending ``held``."""
        held = self._held[k]
        if held is None:
            return list(calls)
        self._held[k] = None
        return [("held", (held,)), *calls]

    def take(self, pools: tuple[int, ...], now: float) -> bool:
        """Take a slot and a token in each of ``pools`` after ``wait_time`` said 0:
        False, and nothing taken, when another run took a shared one meanwhile."""
        local, shared = self._parts(pools)
        if shared:
            names = tuple(self._shared_name(k) for k in shared)
            for k in shared:
                if self._rows[k] is None:
                    self._row(k, now)  # joins (the core asks wait_time first)
            # Dead users' slots come back at a start, full pool or not (RECLAIM_EVERY).
            sweep = tuple(k for k in shared if now >= self._next_reclaim[k])
            try:
                if self._owed:
                    self._store.release(tuple(self._owed))
                    self._owed.clear()
                calls = [self._calls(k, ("started", (now,))) for k in shared]
                ok, rows, changes = self._store.take(
                    names, now, calls, tuple(self._shared_name(k) for k in sweep)
                )
            except sqlite3.Error as e:
                _hiccup("taking a slot in", ", ".join(names), e)
                for k in shared:
                    self._failed(k, now, e, write=True)
                ok, rows, changes = False, [], []
            else:
                for k in shared:
                    self._failing[k] = (math.inf, False)
                for k in sweep:
                    self._next_reclaim[k] = now + RECLAIM_EVERY
            for k, fresh in zip(shared, rows, strict=False):
                self._see(k, fresh, now)
            for k, decided in zip(shared, changes, strict=False):
                for change in decided:
                    self._emit_shared(k, self._rows[k] or rows[0], 0.0, change.reason)
            if not ok:
                # Progress: the next round does not try again before the pool that
                # refused (or all, when the file did) may have changed.
                for k in shared:
                    w = row.wait(now)[0] if rows and (row := self._rows[k]) else 0.0
                    if w > 0 or not rows:
                        self._blocked[k] = now + (min(w, RECHECK) if w > 0 else RECHECK)
                return False
            for k in shared:
                self.in_use[k] += 1
        if local:
            super().acquire(local, now)
        return True

    def release(self, pools: tuple[int, ...]) -> None:
        """Give back the slots taken by ``take``."""
        local, shared = self._parts(pools)
        if local:
            super().release(local)
        if not shared:
            return
        for k in shared:
            self.in_use[k] -= 1
            row = self._rows[k]
            if row is not None and row.in_use > 0:
                row.in_use -= 1
        names = tuple(self._shared_name(k) for k in shared)
        try:
            self._store.release(names)
        except sqlite3.Error as e:
            _hiccup("giving a slot back to", ", ".join(names), e)
            self._owed.extend(names)  # the next take gives them back; leaving does in any case

    def _failed(self, k: int, now: float, e: sqlite3.Error, write: bool) -> None:
        """Pool ``k``'s file failed once; past ``GIVE_UP_AFTER`` of failures the
        pool takes no more starts in this run, and says so once."""
        since, wrote = self._failing[k]
        since = min(since, now)
        self._failing[k] = (since, wrote or write)
        if self._gave_up[k] or now - since < GIVE_UP_AFTER:
            return
        self._gave_up[k] = True
        name = self._shared_name(k)
        path = self._store.path
        log.warning("shared pool %s: its file %s failed for %gs: %s", name, path, now - since, e)
        row = self._rows[k]
        self._notify_shared(
            self._plan_names[k],
            row.rate if row is not None else None,
            row.concurrency if row is not None else None,
            0.0,
            f"shared pool {name!r}: no more starts in this run: its file {path} failed at "
            f"every use for {now - since:.0f}s ({e}); `fleetrun pools` says what is wrong "
            "with it; once it is fixed (or removed while no run uses it), `fleetrun retry` "
            "runs what did not start",
        )

    def close(self) -> None:
        """Leave the shared pools (their slots come back) and close the file."""
        self._store.close()

    def _shared_name(self, k: int) -> str:
        cfg = self._cfg[k]
        assert cfg is not None
        return cfg.shared

    # -- signals ----------------------------------------------------------------------------

    def succeeded(self, pools: tuple[int, ...], started_at: float, now: float) -> None:
        """As ``Limits.succeeded``; a shared adaptive pool learns it in the file."""
        local, shared = self._parts(pools)
        if local:
            super().succeeded(local, started_at, now)
        for k in shared:
            row = self._rows[k]
            if row is not None and _adaptive(row):
                self._observe(k, now, lambda n, *_: [("succeeded", (started_at, now, n))])

    def throttled(
        self, matched: tuple[ThrottleMatch, ...], started_at: float, now: float
    ) -> ThrottleSignal | None:
        """As ``Limits.throttled``; a shared pool pauses and adapts for every run."""
        local = tuple(m for m in matched if self._cfg[m.pool] is None)
        shared = tuple(m for m in matched if self._cfg[m.pool] is not None)
        signal = super().throttled(local, started_at, now) if local else None
        if not shared:
            return signal
        own = 0.0  # a Retry-After for the throttled attempt's retry only
        for m in shared:
            delay = m.retry_after
            until = now + delay if delay is not None and delay > 0 else 0.0

            def calls(
                n: int,
                paused: bool,
                whole: bool,
                k: int = m.pool,
                delay: float | None = delay,
                until: float = until,
            ) -> list[Call]:
                # As ``Limits``: a pause that grows is told to the state first.
                pause: list[Call] = [("paused", (now, until))] if paused else []
                return self._calls(k, *pause, ("throttled", (started_at, now, n, delay, whole)))

            reason = f"paused {pause_text(delay or 0.0)} for Retry-After"
            if not self._observe(m.pool, now, calls, until, reason, started_at) and delay:
                own = max(own, delay)  # as ``Limits``: only this attempt waits
        pause = max(own, signal.pause if signal is not None else 0.0)
        pause = max(pause, max(self.paused_until[m.pool] for m in matched) - now)
        paced = (signal is not None and signal.paced) or any(
            settings_of(cfg.settings)[3] is not None
            for m in shared
            if (cfg := self._cfg[m.pool]) is not None
        )
        return ThrottleSignal(matched[0].what, pause, self.rules_attempts(matched), paced)

    def _observe(
        self,
        k: int,
        now: float,
        calls: Callable[[int, bool, bool], list[Call]],
        until: float = 0.0,
        pause_reason: str = "",
        started_at: float | None = None,
    ) -> bool:
        """Record an observation in shared pool ``k``; False when it was a
        throttle whose Retry-After pauses only its attempt, not the pool."""
        try:
            row, paused, changes, whole = self._store.observe(
                self._shared_name(k), now, calls, until, pause_reason, started_at
            )
        except sqlite3.Error as e:
            _hiccup("recording an observation in", self._shared_name(k), e)
            self._failed(k, now, e, write=True)
            return True  # one observation lost: the algorithm sees the next one
        self._failing[k] = (math.inf, False)
        if row is None:
            return True
        self._see(k, row, now)
        if paused:
            self._pausing[k] = True
            self._emit_shared(k, row, until - now, pause_reason)
        for change in changes:
            self._emit_shared(k, row, 0.0, change.reason)
        return whole


def _adaptive(row: PoolRow) -> bool:
    return settings_of(row.settings)[3] is not None


def _hiccup(doing: str, pool: str, e: sqlite3.Error, level: int = logging.INFO) -> None:
    """A shared pool's file could not be used this once; the run goes on (each
    caller says how: a start tried again, a slot owed, an observation lost).
    Reads polled while a pool is full log at debug: they may repeat many times."""
    log.log(level, "shared pool %s: %s it failed: %s", pool, doing, e)
