"""Splitting the fleet into rollout waves (pure; used by the engine and the planner).

As Ansible's ``serial``: sizes are taken in order and the last one repeats
until every target has a wave. Only targets that some task fans out over
take part (the fleet, in plan order). A percentage is of the whole fleet,
truncated, at least 1; a group takes its members that no earlier wave took
(in fleet order); a count takes the next targets in fleet order. A wave that
would be empty (a group whose members all went earlier) is left out; when the
last size is a group and targets remain, they form one last wave.

The arithmetic on percentages is exact (the plan's percentages are
``Fraction`` values and every result is an integer): ``wave_size`` and
``allowed_failures`` are the only places that compute with them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction

from fleetrun.plan._graph import Graph
from fleetrun.plan._model import ALL_TARGETS, Plan, Rollout


def wave_targets(
    plan: Plan, rollout: Rollout | None = None, opened: int = 0
) -> list[tuple[str, ...]]:
    """The targets of each wave, in order (one wave of every target without a rollout).

    ``opened``: how many waves had already opened in the run being continued
    (``retry``, ``--resume``). Those waves proved the change, so their targets
    form the first wave together; the waves that never opened keep their
    order and gates.
    """
    waves = _split(plan, rollout if rollout is not None else plan.rollout)
    if opened > 1:
        first = tuple(t for wave in waves[:opened] for t in wave)
        waves = [first, *waves[opened:]]
    return waves


def _split(plan: Plan, rollout: Rollout | None) -> list[tuple[str, ...]]:
    used = {t for task in plan.tasks.values() for t in task.targets or ()}
    fleet = [t for t in plan.targets if t in used]
    if rollout is None or not rollout.waves or not fleet:
        return [tuple(fleet)] if fleet else []
    taken: set[str] = set()
    waves: list[tuple[str, ...]] = []
    sizes = rollout.waves
    k = 0
    # Invariant: every target of fleet[:cursor] is taken (counts take from here).
    cursor = 0
    while len(taken) < len(fleet):
        size = sizes[min(k, len(sizes) - 1)]
        last = k >= len(sizes) - 1
        k += 1
        if isinstance(size, str):
            members = set(fleet if size == ALL_TARGETS else plan.groups.get(size, ()))
            wave = [t for t in fleet if t in members and t not in taken]
            if not wave and last:
                wave = [t for t in fleet if t not in taken]
        else:
            n = wave_size(size, len(fleet))
            wave = []
            while cursor < len(fleet) and len(wave) < n:
                if fleet[cursor] not in taken:
                    wave.append(fleet[cursor])
                cursor += 1
        if wave:
            waves.append(tuple(wave))
            taken.update(wave)
        while cursor < len(fleet) and fleet[cursor] in taken:
            cursor += 1
    return waves


def wave_size(size: int | Fraction, fleet: int) -> int:
    """The targets a count or a percentage of a fleet of ``fleet`` targets takes:
    a count as it is; a fraction of the fleet truncated, at least 1 (Ansible's
    ``serial``). Integer arithmetic: 29% of 100 is 29."""
    if isinstance(size, int):
        return size
    return max(1, size.numerator * fleet // size.denominator)


def allowed_failures(rollout: Rollout, wave_size: int) -> int:
    """How many failed targets a wave of ``wave_size`` may have without halting
    the rollout: it halts on strictly more (Ansible's ``max_fail_percentage``).
    A percentage of the wave, truncated, since more than ``p%`` failed exactly
    when the failures exceed ``p% x size`` truncated: 29% of 100 allows 29."""
    m = rollout.max_failed
    if isinstance(m, Fraction):
        if rollout.max_failed_fraction:
            return m.numerator * wave_size // m.denominator
        return m.numerator // m.denominator
    return m


def percent_text(fraction: Fraction) -> str:
    """A plan's percentage as it writes it: 29/100 -> ``29%``, 1/8 -> ``12.5%``."""
    pct = fraction * 100
    if pct.denominator == 1:
        return f"{pct.numerator}%"
    return f"{float(pct):g}%"


def waits_for_later(
    graph: Graph,
    j: int,
    later: Callable[[int], bool],
    settled: Callable[[int], bool],
    memo: dict[int, bool],
) -> bool:
    """Whether unsettled node ``j`` waits, itself or through an unsettled
    requirement (transitively), for a node that ``later`` holds back (a wave not
    open yet, a later phase).

    A wave is done when each of its unsettled instances waits for something
    later: so a quorum over every region cannot hold its own wave open for ever,
    while an unfanned ``setup`` that the wave needs does. ``memo`` is shared by
    the calls of one decision. The engine's ``Waves`` and the estimate use it.
    """
    nodes = graph.nodes
    stack = [j]
    while stack:
        i = stack[-1]
        if i in memo:
            stack.pop()
            continue
        if later(i):
            memo[i] = True
            stack.pop()
            continue
        deps = [d for req in nodes[i].requires for d in req.nodes if not settled(d)]
        todo = [d for d in deps if d not in memo]
        if todo:
            stack.extend(todo)
            continue
        memo[i] = any(memo[d] for d in deps)
        stack.pop()
    return memo[j]


def wave_done(
    graph: Graph,
    members: Sequence[Sequence[int]],
    opened: int,
    active: Callable[[int], bool],
    later: Callable[[int], bool],
    settled: Callable[[int], bool],
) -> bool:
    """Whether the open waves ``0..opened`` are done: no member is ``active``
    (queued, running, between retries) or can still become so without a later
    wave or phase (``waits_for_later``)."""
    memo: dict[int, bool] = {}
    for w in range(opened + 1):
        for j in members[w]:
            if settled(j):
                continue
            if active(j) or not waits_for_later(graph, j, later, settled, memo):
                return False
    return True


class Waves:
    """Which rollout waves are open, in one run or in one simulation of it.

    The one rule of when a wave opens, shared by the engine (real time, with
    failures, halts and ``pause``), the planner's estimate and the live ETA
    (simulated time): a wave opens when nothing of the open waves is *active*
    (made ready and not settled: in a ready queue, running, or between
    retries) and the open waves are done (``wave_done``), and ``may_open``
    lets it (the engine's halts and promotions; always, in a simulation).
    Only instances of tasks fanned over targets are held; an unfanned task's
    single instance never waits for a wave.

    Invariants: ``active[w]`` = instances of wave ``w`` made ready and not yet
    settled; ``busy`` = waves with ``active[w] > 0`` (so most checks cost
    O(1)); no instance of a wave ``> opened`` is ever made ready (in the
    current phase); ``held[w]`` keeps the ready instances of wave ``w`` until
    it opens, when each goes to ``on_open``.
    """

    __slots__ = (
        "_pushed",
        "active",
        "busy",
        "graph",
        "held",
        "later_phase",
        "members",
        "on_open",
        "opened",
        "settled_node",
        "targets",
        "wave_of",
    )

    def __init__(
        self,
        graph: Graph,
        targets: Sequence[Sequence[str]],
        on_open: Callable[[int], None],
        settled_node: Callable[[int], bool],
        later_phase: Callable[[int], bool],
        member: Sequence[bool] | None = None,
    ) -> None:
        self.graph = graph
        self.targets = [tuple(ts) for ts in targets]
        wave_of_target = {t: w for w, ts in enumerate(targets) for t in ts}
        # -1: not held by any wave (an unfanned task's instance).
        self.wave_of = [
            -1 if node.target is None else wave_of_target.get(node.target, -1)
            for node in graph.nodes
        ]
        self.members: list[list[int]] = [[] for _ in targets]
        for i, w in enumerate(self.wave_of):
            if w >= 0 and (member is None or member[i]):
                self.members[w].append(i)
        self.active = [0] * len(targets)
        self.busy = 0
        self.held: list[list[int]] = [[] for _ in targets]
        self._pushed = [False] * len(graph.nodes)
        self.opened = -1
        self.on_open = on_open
        self.settled_node = settled_node
        self.later_phase = later_phase

    def hold(self, j: int) -> bool:
        """True when ready node ``j`` must wait for its wave (it is kept until then)."""
        w = self.wave_of[j]
        if w <= self.opened:
            return False
        self.held[w].append(j)
        return True

    def pushed(self, j: int) -> None:
        """Node ``j`` was made ready: it is active until it settles."""
        w = self.wave_of[j]
        if w >= 0 and not self._pushed[j]:
            self._pushed[j] = True
            self.active[w] += 1
            if self.active[w] == 1:
                self.busy += 1

    def finished(self, j: int) -> None:
        """Node ``j`` settled (after its dependents were told); open what may open."""
        w = self.wave_of[j]
        if w < 0:
            return
        if self._pushed[j]:
            self._pushed[j] = False
            self.active[w] -= 1
            if self.active[w] == 0:
                self.busy -= 1
        self.advance()

    def open_first(self) -> None:
        """Open the first wave (at the start, and at each phase in ``--mode phased``);
        the caller admits what is ready, then calls ``advance``."""
        self.opened = -1
        self.open(0)

    def may_open(self, w: int) -> bool:
        """Whether wave ``w`` may open once the earlier ones are done (a hook: the
        engine halts a rollout and waits for promotions here)."""
        return True

    def advance(self) -> None:
        """Open the next waves while the open ones are done."""
        while self.busy == 0 and self.opened + 1 < len(self.targets) and self._done():
            if not self.may_open(self.opened + 1):
                return
            self.open(self.opened + 1)

    def _done(self) -> bool:
        opened = self.opened
        wave_of = self.wave_of
        later_phase = self.later_phase

        def later(i: int) -> bool:
            return wave_of[i] > opened or later_phase(i)

        # ``busy == 0``: nothing of the open waves is active.
        return wave_done(self.graph, self.members, opened, _never, later, self.settled_node)

    def open(self, w: int) -> None:
        """Open wave ``w``: its held instances go to ``on_open``."""
        if w >= len(self.targets):
            return
        self.opened = w
        held, self.held[w] = self.held[w], []
        for j in held:
            self.on_open(j)


def _never(_: int) -> bool:
    return False
