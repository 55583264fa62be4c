"""Rolling waves at run time: hold each target's instances until its wave opens.

The plan's ``rollout`` splits the targets into waves (``plan.wave_targets``).
Only instances of tasks fanned over targets are held; an unfanned task's
single instance never waits for a wave. Per-target pipelining inside an open
wave is unchanged.

A wave *opens* when every earlier wave is done and none failed too much
(strictly more failed targets than ``max_failed``), and, with ``pause``, once
``promote()`` was called for it. A wave is *done* when none of its instances
can still run without a later wave: each has settled, or waits for something
that itself waits for a later wave (a quorum over every region) or for a
later phase in ``--mode phased``. An instance that waits for something
outside the waves that will come by itself (an unfanned ``setup`` task that
every target needs) keeps its wave open: otherwise every wave would open at
once while the setup runs.

With ``--mode phased`` the phases stay the outer barrier and each phase is
rolled out anew (``restart``): the canary's infrastructure, then the next
wave's, ...; then, once the phase is settled, the canary's next phase.

When a wave failed too much the rollout halts: every instance of the later
waves is skipped with the reason, and the run ends with status failed.

Invariants: ``active[w]`` = instances of wave ``w`` pushed to the ready heaps
and not yet settled; no instance of a wave ``> opened`` is ever pushed (in
the current phase).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from fleetrun.engine._events import Event, WaveChanged
from fleetrun.plan import Graph, Rollout, allowed_failures, wave_done, wave_targets

if TYPE_CHECKING:
    from fleetrun.engine._scheduler import _Run


def rollout_waves(run: _Run, graph: Graph) -> Waves | None:
    """The run's waves, or None when the plan has no rollout."""
    rollout = graph.plan.rollout
    if rollout is None:
        return None

    def skip(j: int, why: str) -> None:
        run.settle(j, "skipped", why)

    def settled(i: int) -> bool:
        return bool(run.state[i]) or not run.member[i]

    def later_phase(i: int) -> bool:
        return run.phase_of is not None and run.phase_of[i] > run.phase

    waves = Waves(graph, rollout, run.member, run.emit, run._on_wave_open, skip)
    waves.settled_node = settled
    waves.later_phase = later_phase
    return waves


class Waves:
    """The rollout state of one run."""

    __slots__ = (
        "_emit",
        "_on_open",
        "_skip",
        "active",
        "failed",
        "graph",
        "halted",
        "held",
        "later_phase",
        "members",
        "opened",
        "promotions",
        "pushed",
        "rollout",
        "settled_node",
        "targets",
        "waiting",
        "wave_of",
    )

    def __init__(
        self,
        graph: Graph,
        rollout: Rollout,
        member: list[bool],
        emit: Callable[[Event], None],
        on_open: Callable[[int], None],
        skip: Callable[[int, str], None],
    ) -> None:
        self.rollout = rollout
        self.graph = graph
        # Set by ``rollout_waves``: whether a node has settled (or is not in the
        # run), and whether it waits for a later phase.
        self.settled_node: Callable[[int], bool] = lambda i: False
        self.later_phase: Callable[[int], bool] = lambda i: False
        self.targets = wave_targets(graph.plan, rollout)
        wave_of_target = {t: w for w, ts in enumerate(self.targets) for t in ts}
        # -1: not held by any wave (an unfanned task's instance).
        self.wave_of = [
            -1 if node.target is None else wave_of_target.get(node.target, -1)
            for node in graph.nodes
        ]
        self.members: list[list[int]] = [[] for _ in self.targets]
        for i, w in enumerate(self.wave_of):
            if w >= 0 and member[i]:
                self.members[w].append(i)
        self.active = [0] * len(self.targets)
        self.failed: list[set[str]] = [set() for _ in self.targets]
        self.held: list[list[int]] = [[] for _ in self.targets]
        self.pushed = [False] * len(graph.nodes)
        self.opened = -1
        self.halted = False
        self.waiting = False  # a wave waits for promote()
        self.promotions = 0  # promote() calls not used yet
        self._emit = emit
        self._on_open = on_open
        self._skip = skip

    def start(self) -> None:
        """Open the first wave."""
        self._open(0, "first wave")

    def restart(self, phase: str) -> None:
        """A new phase begins (``--mode phased``): roll it out from the first wave.

        The caller admits the phase's instances, then calls ``advance``."""
        if self.halted:
            return
        self.opened = -1
        self.waiting = False
        self._open(0, f"phase {phase}: first wave")

    def hold(self, j: int) -> bool:
        """True when ready node ``j`` must wait for its wave (it is kept until then)."""
        w = self.wave_of[j]
        if w <= self.opened:
            return False
        self.held[w].append(j)
        return True

    def pushed_node(self, j: int) -> None:
        """Node ``j`` went into a ready heap (it is active until it settles)."""
        w = self.wave_of[j]
        if w >= 0 and not self.pushed[j]:
            self.pushed[j] = True
            self.active[w] += 1

    def settled(self, j: int, state: str, target: str | None) -> None:
        """Node ``j`` settled in ``state``; open the next wave when the open ones are done."""
        w = self.wave_of[j]
        if w < 0:
            return
        if state == "failed" and target is not None:
            self.failed[w].add(target)
        if self.pushed[j]:
            self.pushed[j] = False
            self.active[w] -= 1
        self.advance()

    def promote(self) -> None:
        """Approve the next wave (``pause: true``); given early, it is kept for it."""
        self.promotions += 1
        if self.waiting:
            self.advance()

    def advance(self) -> None:
        """Open the next wave if every open wave is done and within ``max_failed``."""
        while not self.halted and self.opened + 1 < len(self.targets):
            if any(self.active[w] for w in range(self.opened + 1)):
                return
            if not self._done():
                return
            for w in range(self.opened + 1):
                allowed = allowed_failures(self.rollout, len(self.targets[w]))
                if len(self.failed[w]) > allowed:
                    self._halt(w, allowed)
                    return
            nxt = self.opened + 1
            if self.rollout.pause:
                if self.promotions == 0:
                    if not self.waiting:
                        self.waiting = True
                        self._event(nxt, "waiting", "waiting for promote")
                    return
                self.promotions -= 1
                self.waiting = False
            self._open(nxt, "promoted" if self.rollout.pause else f"wave {nxt} is done")

    def _done(self) -> bool:
        """The open waves are done (``plan.wave_done``): nothing of them is pushed
        and unsettled, and nothing else of them can start before a later wave or
        phase opens."""
        opened = self.opened
        wave_of = self.wave_of
        later_phase = self.later_phase

        def later(i: int) -> bool:
            return wave_of[i] > opened or later_phase(i)

        return wave_done(
            self.graph, self.members, opened, self.pushed.__getitem__, later, self.settled_node
        )

    def _open(self, w: int, reason: str) -> None:
        if w >= len(self.targets):
            return
        self.opened = w
        self._event(w, "open", reason)
        held, self.held[w] = self.held[w], []
        for j in held:
            self._on_open(j)

    def _halt(self, w: int, allowed: float) -> None:
        self.halted = True
        self.waiting = False
        failed = len(self.failed[w])
        limit = f"{self.rollout.max_failed:.0%}" if self.rollout.max_failed_fraction else ""
        shown = f"{limit} of {len(self.targets[w])}, {allowed:g}" if limit else f"{allowed:g}"
        why = (
            f"rollout halted: wave {w + 1} had {failed} failed target(s), "
            f"more than max_failed ({shown})"
        )
        self._event(w + 1, "halted", why)
        for later in range(w + 1, len(self.targets)):
            self.held[later] = []
            # Dependents first, so that each gets the rollout's reason.
            for j in reversed(self.members[later]):
                self._skip(j, why)

    def _event(self, w: int, state: str, reason: str) -> None:
        targets = self.targets[w] if w < len(self.targets) else ()
        self._emit(
            WaveChanged(
                at=time.time(),
                wave=w + 1,
                waves=len(self.targets),
                state=state,  # type: ignore[arg-type]
                targets=targets,
                reason=reason,
            )
        )
