"""Why each instance waited between becoming ready and starting: its queued reason.

An instance is *ready* at ``ready_at`` (its requirements met, or its retry
backoff over). Until it starts it may wait in up to three spans, each with
the reason the reports show (``AttemptStarted.queued_reason``):

1. held by hold gates (its rollout wave, its phase), until ``unheld_at``;
   when several held it in turn (``--mode phased`` with a rollout), the
   one that held it longest names this span;
2. in the ready queue, behind the start gates: its pools (full, rate,
   Retry-After pause; the obstacle that held its pools longest while it
   waited: a pause followed by a token's wait is the pause), else the ``-j``
   limit;
3. handed to an executor that queues it (a cluster job waiting for a free
   worker: the executor's ``queue_reason``), until the executor says it
   started.

When two spans have a reason, the longer one names the wait.
"""

from __future__ import annotations

_CHANGES = 64
"""Changes of what held a pool signature back kept for naming waits."""


class Queued:
    """The queued bookkeeping of one run (see the module doc).

    Invariant: ``why[j]`` is the reason of the span that names node ``j``'s
    wait so far (None: it did not wait, or nothing held it); ``unheld_at``
    and ``submitted`` hold entries only for nodes in those spans.
    """

    __slots__ = (
        "cap_reason",
        "held_for",
        "hold_since",
        "ready_at",
        "sig_blocked",
        "sig_changes",
        "submitted",
        "unheld_at",
        "why",
    )

    def __init__(self, n: int, cap_reason: str) -> None:
        # When each node last became ready (requirements met, or backoff over).
        self.ready_at = [0.0] * n
        self.why: list[str | None] = [None] * n
        self.unheld_at: dict[int, float] = {}
        # A node held now: since when and by which gate; per node, seconds held per gate.
        self.hold_since: dict[int, tuple[str, float]] = {}
        self.held_for: dict[int, dict[str, float]] = {}
        # Wall time an attempt was handed to an executor that queues, until it started.
        self.submitted: dict[int, float] = {}
        # Per pool signature: (wall time, reason) of the last time its pools held it back.
        self.sig_blocked: dict[tuple[int, ...], tuple[float, str]] = {}
        # Per pool signature: (wall time, reason) at each change of what held it
        # back, the last ``_CHANGES`` of them.
        self.sig_changes: dict[tuple[int, ...], list[tuple[float, str]]] = {}
        self.cap_reason = cap_reason

    def ready(self, j: int, now: float) -> None:
        """Node ``j`` became ready (again: a retry is never held by a gate)."""
        self.ready_at[j] = now
        self.why[j] = None
        if self.held_for:
            self.held_for.pop(j, None)

    def held(self, j: int, reason: str, now: float) -> None:
        """A hold gate keeps ready node ``j``."""
        self.why[j] = reason
        self.hold_since[j] = (reason, now)

    def unheld(self, j: int, now: float) -> None:
        """The hold gate let node ``j`` go on."""
        self.unheld_at[j] = now
        got = self.hold_since.pop(j, None)
        if got is not None:
            acc = self.held_for.setdefault(j, {})
            acc[got[0]] = acc.get(got[0], 0.0) + (now - got[1])

    def blocked(self, sig: tuple[int, ...], now: float, reason: str) -> None:
        """The pools of signature ``sig`` held the ready queue back."""
        self.sig_blocked[sig] = (now, reason)
        changes = self.sig_changes.setdefault(sig, [])
        if not changes or changes[-1][1] != reason:
            changes.append((now, reason))
            if len(changes) > _CHANGES:
                del changes[0]

    def _longest(self, sig: tuple[int, ...], since: float, now: float) -> str | None:
        """What held ``sig``'s pools back longest between ``since`` and ``now``
        (each reason lasts until the next change)."""
        changes = self.sig_changes.get(sig, [])
        total: dict[str, float] = {}
        for k, (at, reason) in enumerate(changes):
            end = changes[k + 1][0] if k + 1 < len(changes) else now
            span = min(end, now) - max(at, since)
            if span > 0 or (span == 0 and at >= since):
                total[reason] = total.get(reason, 0.0) + max(span, 0.0)
        # A tie goes to the later reason (the one that held it last).
        return max(reversed(total), key=total.__getitem__) if total else None

    def waited(self, j: int, cap_full_at: float) -> bool:
        """Whether node ``j`` may have waited at all: held by a gate, or queued
        behind the ``-j`` cap since it became ready (pools are checked apart)."""
        return self.why[j] is not None or cap_full_at >= self.ready_at[j]

    def taken(self, j: int, sig: tuple[int, ...], now: float, cap_full_at: float) -> None:
        """Node ``j`` takes its slots now: decide which span names its wait so far."""
        held = self.why[j]
        acc = self.held_for.pop(j, None)
        if acc:
            held = max(acc, key=acc.__getitem__)  # the gate that held it longest
        ready = self.ready_at[j]
        queued = ready if held is None else self.unheld_at.pop(j, ready)
        reason: str | None = None
        if sig:
            blocked = self.sig_blocked.get(sig)
            if blocked is not None and blocked[0] >= queued:
                reason = self._longest(sig, queued, now) or blocked[1]
        if reason is None and cap_full_at >= queued:
            reason = self.cap_reason
        if held is not None and reason is not None and (queued - ready >= now - queued):
            reason = held
        self.why[j] = reason if reason is not None else held

    def submitted_at(self, j: int, now: float) -> None:
        """Node ``j``'s attempt went to an executor that may queue it."""
        self.submitted[j] = now

    def started(self, j: int, now: float, queue_reason: str | None) -> str | None:
        """Node ``j``'s attempt started: its queued reason, the executor's wait included."""
        if self.submitted:
            sent = self.submitted.pop(j, None)
            if sent is not None:
                ready = self.ready_at[j] or sent
                if now - sent > sent - ready:
                    self.why[j] = queue_reason
        return self.why[j]

    def ended(self, j: int) -> None:
        """Node ``j``'s attempt ended (perhaps before it started)."""
        if self.submitted:
            self.submitted.pop(j, None)
