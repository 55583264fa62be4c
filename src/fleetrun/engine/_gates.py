"""The gates between "ready" and "started", each saying why it holds an instance.

An instance is *ready* once its requirements are met. Before it starts it
passes two kinds of gate:

- **hold gates** keep a ready instance aside until they open for it: the
  rollout (``RolloutGate``: its wave is not open yet, reason ``wave closed``)
  and, with ``--mode phased``, the phase barrier (``PhaseGate``, reason
  ``phase``). A hold gate hands the instance back through its release
  callback; the core then offers it to the next gate.
- **start gates** are asked at each start: the run is stopping (fail-fast,
  interrupt), the ``-j`` cap (``CapGate``), and the pools of the instance's
  task (``engine._limits.Limits``: full, rate, Retry-After pause). They hold
  the ready queue, not single instances.

Every gate names its reason in the words the reports show (``AttemptStarted.
queued_reason``). The gates never await and never emit on their own, except
the rollout's ``WaveChanged`` events.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Protocol

from fleetrun.engine._events import Event, WaveChanged
from fleetrun.plan import (
    Graph,
    Rollout,
    Waves,
    allowed_failures,
    percent_text,
    phase_layers,
    wave_targets,
)


class HoldGate(Protocol):
    """Keeps ready instances until it opens for them (see the module doc)."""

    reason: str
    """The queued reason of an instance this gate holds."""

    def hold(self, j: int) -> bool:
        """True when ready instance ``j`` must wait (the gate keeps it until it opens)."""
        ...


class CapGate:
    """The ``-j`` limit on attempts holding a slot at once (1 in ``sequential`` mode).

    Invariant: ``running <= cap`` whenever a slot is taken.
    """

    __slots__ = ("cap", "full_at", "reason", "running")

    def __init__(self, mode: str, parallelism: int | None) -> None:
        self.cap = 1 if mode == "sequential" else parallelism
        self.reason = (
            "parallelism limit (-j 1, sequential mode)"
            if mode == "sequential"
            else f"parallelism limit (-j {self.cap})"
        )
        # Attempts holding their slots (taken before the spawn, given back after
        # the executor returned).
        self.running = 0
        # Wall time the cap last held ready instances back.
        self.full_at = -math.inf

    def room(self) -> bool:
        """Whether one more attempt may start."""
        return self.cap is None or self.running < self.cap


class PhaseGate:
    """``--mode phased``: instances of a later phase wait until every earlier one
    has settled.

    Invariant: phases before ``phase`` are fully settled; ``held[p]`` keeps the
    ready instances of phase ``p > phase``.
    """

    __slots__ = ("_release", "held", "left", "names", "phase", "phase_of", "rollout")

    reason = "phase"

    def __init__(self, graph: Graph, member: Sequence[bool], release: Callable[[int], None]):
        layers = phase_layers(graph)
        self.names = [graph.nodes[layer[0]].phase or str(p + 1) for p, layer in enumerate(layers)]
        self.phase_of = [0] * len(graph.nodes)
        self.left = [0] * len(layers)
        self.held: list[list[int]] = [[] for _ in layers]
        for p, layer in enumerate(layers):
            for i in layer:
                self.phase_of[i] = p
                if member[i]:
                    self.left[p] += 1
        self.phase = 0
        self._release = release
        # Set by the core when the plan has a rollout: each phase rolls out anew.
        self.rollout: RolloutGate | None = None

    def start(self) -> None:
        """Pass over the leading phases that have nothing to run (before the rollout starts)."""
        while self.phase < len(self.left) and self.left[self.phase] == 0:
            self.phase += 1
        if self.rollout is not None and self.phase < len(self.names):
            self.rollout.phase = self.names[self.phase]

    def hold(self, j: int) -> bool:
        p = self.phase_of[j]
        if p <= self.phase:
            return False
        self.held[p].append(j)
        return True

    def later(self, i: int) -> bool:
        """Whether node ``i`` belongs to a phase that has not begun."""
        return self.phase_of[i] > self.phase

    def settled(self, i: int) -> None:
        """Node ``i`` settled; begin the next phases that may begin."""
        self.left[self.phase_of[i]] -= 1
        while self.phase < len(self.left) and self.left[self.phase] == 0:
            self.phase += 1
            if self.phase >= len(self.held):
                return
            held, self.held[self.phase] = self.held[self.phase], []
            if self.rollout is not None:
                self.rollout.restart(self.names[self.phase])
            for j in held:
                self._release(j)
            if self.rollout is not None:
                self.rollout.advance()


class RolloutGate(Waves):
    """The plan's ``rollout`` at run time: ``plan.Waves`` (the one rule of when a
    wave opens, shared with the estimate) plus what only a real run has:
    failures, halts and ``pause``.

    A wave may open when every earlier wave is done and none failed too much
    (strictly more failed targets than ``max_failed``), and, with ``pause``,
    once ``promote()`` was called for it. When a wave failed too much the
    rollout halts: every instance of the later waves is skipped with the
    reason. With ``--mode phased`` each phase is rolled out anew (``restart``).

    A continued run (``opened_before`` > 1) starts with the waves that had
    opened merged into one, but each of them keeps its own ``max_failed``:
    the wave that halted the rollout, or the one that was running when the
    run stopped, has proved nothing and must not hide its failures among the
    targets of the waves before it (``parts``).
    """

    __slots__ = (
        "_emit",
        "_opening",
        "_skip",
        "failed",
        "halted",
        "parts",
        "phase",
        "promoted",
        "rollout",
        "waiting",
    )

    reason = "wave closed"

    def __init__(
        self,
        graph: Graph,
        rollout: Rollout,
        opened_before: int,
        member: Sequence[bool],
        release: Callable[[int], None],
        settled_node: Callable[[int], bool],
        later_phase: Callable[[int], bool],
        emit: Callable[[Event], None],
        skip: Callable[[int, str], None],
    ) -> None:
        targets = wave_targets(graph.plan, rollout, opened_before)
        super().__init__(graph, targets, release, settled_node, later_phase, member)
        # Per wave: its parts as the plan's waves had them (number, targets,
        # failures allowed); only a merged first wave has more than one.
        shift = max(0, opened_before - 1)  # the plan's number of merged wave w is w + 1 + shift
        self.parts: list[list[tuple[int, frozenset[str], int]]] = [
            [(w + 1 + (shift if w else 0), frozenset(ts), allowed_failures(rollout, len(ts)))]
            for w, ts in enumerate(targets)
        ]
        if opened_before > 1 and targets:
            before = wave_targets(graph.plan, rollout)[:opened_before]
            self.parts[0] = [
                (w + 1, frozenset(ts), allowed_failures(rollout, len(ts)))
                for w, ts in enumerate(before)
            ]
        self.rollout = rollout
        self.failed: list[set[str]] = [set() for _ in targets]
        self.halted = False
        self.waiting = False  # a wave waits for promote()
        # A promote approved the next wave, which has not opened yet. A flag, not
        # a count: one promote opens one wave, and promotes given before it
        # opens approve that same wave (they do not open the waves after it).
        self.promoted = False
        # The phase being rolled out (``--mode phased``; "" otherwise): its
        # WaveChanged events name it, since every phase has a wave 1.
        self.phase = ""
        self._emit = emit
        self._skip = skip
        # Why the wave being opened opens (the WaveChanged reason).
        self._opening = (
            "first wave"
            if opened_before <= 1
            else f"first wave: waves 1-{opened_before} had opened in the run continued"
        )

    def start(self) -> None:
        """Open the first wave."""
        self.open_first()

    def restart(self, phase: str) -> None:
        """A new phase begins (``--mode phased``): roll it out from the first wave.

        The caller releases the phase's instances, then calls ``advance``."""
        if self.halted:
            return
        self.waiting = False
        self.phase = phase
        self._opening = f"phase {phase}: first wave"
        self.open_first()

    def settled(self, j: int, state: str, target: str | None) -> None:
        """Node ``j`` settled in ``state``; open the next wave when the open ones are done."""
        w = self.wave_of[j]
        if w < 0:
            return
        if state == "failed" and target is not None:
            self.failed[w].add(target)
        self.finished(j)

    def promote(self, wave: int | None = None) -> None:
        """Approve the next wave (``pause: true``): the one waiting now, or, while
        the open waves still run, the one after them (it opens once they are
        done). Promotes given before that wave opens approve it again: they are
        not kept for the waves after it, each of which waits for a promote of its
        own, given while it waits or after the wave before it opened. ``wave``
        (1-based) names the wave approved: one that is already open is not
        approved again (a second promote for the wave the first one opened)."""
        if wave is not None and wave - 1 <= self.opened:
            return
        self.promoted = True
        if self.waiting:
            self.advance()

    def advance(self) -> None:
        if not self.halted:
            super().advance()

    def may_open(self, w: int) -> bool:
        for done in range(self.opened + 1):
            for number, part, allowed in self.parts[done]:
                failed = len(self.failed[done] & part)
                if failed > allowed:
                    self._halt(done, number, len(part), failed, allowed)
                    return False
        if self.rollout.pause:
            if not self.promoted:
                if not self.waiting:
                    self.waiting = True
                    self._event(w, "waiting", "waiting for promote")
                return False
            self.promoted = False
            self.waiting = False
            self._opening = "promoted"
        else:
            self._opening = f"wave {w} is done"
        return True

    def open(self, w: int) -> None:
        if w < len(self.targets):
            self._event(w, "open", self._opening)
        super().open(w)

    def _halt(self, w: int, number: int, size: int, failed: int, allowed: int) -> None:
        """Wave ``w`` (the plan's wave ``number``, of ``size`` targets) failed too much."""
        self.halted = True
        self.waiting = False
        m = self.rollout.max_failed
        if self.rollout.max_failed_fraction and isinstance(m, Fraction):
            shown = f"{percent_text(m)} of {size}, {allowed}"
        else:
            shown = str(allowed)
        why = (
            f"rollout halted: wave {number} had {failed} failed target(s), "
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
                phase=self.phase,
            )
        )
