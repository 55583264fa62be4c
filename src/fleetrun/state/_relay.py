"""``RecordFirst``: a console is told what happened once the journal holds it.

The journal writer commits events from its own thread (``_writer``). A console
that printed each event as the engine emitted it could say ``succeeded
spew@a`` for an event the writer then failed to commit (a full disk), while
``show`` has that instance as interrupted. With ``JournalWriter.follow``, the
console's subscribers get each event only after the batch that holds it was
committed, in the order the engine emitted them; task output
(``AttemptOutput``, never journaled) travels in the same queue, so it keeps
its place between the status lines.

An event whose batch could not be committed is not shown as it happened:

- ``AttemptStarted`` and task output are shown (the attempt is on record
  anyway: the next command finds it by its log file);
- ``RunEnded`` is shown as ``interrupted``, which is what the record says of a
  run whose journal failed;
- every other event is held back, and one line per batch (through ``say``)
  names what is not on record, a failure with its cause:
  ``not on record: spew@a failed (exit 1), small@a skipped ...``.

The end of an attempt and the settling of its instance are emitted together
but could be committed in two batches: a final ``AttemptEnded`` waits for its
``InstanceSettled``, and both are shown only if both are on record (``show``
has the instance as the record holds it).

Threads: ``add`` is called by the writer thread; everything else runs on the
event loop (``add`` hands over through ``call_soon_threadsafe``). A follower
that raises is told nothing more, and ``flush`` raises what it raised (as the
engine would have, had it called the follower itself).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Sequence

from fleetrun.engine import (
    AttemptEnded,
    AttemptOutput,
    AttemptStarted,
    Event,
    InstanceReused,
    InstanceSettled,
    PoolChanged,
    RunEnded,
    Subscriber,
    WaveChanged,
    ending_text,
)

log = logging.getLogger(__name__)

__all__ = ["NOT_ON_RECORD", "RecordFirst"]

NOT_ON_RECORD = "not on record"
"""How the line naming what the journal could not record begins."""

_FINAL = frozenset({"succeeded", "failed"})


class RecordFirst:
    """Tells ``followers`` each event once it is on record (see the module doc)."""

    def __init__(
        self,
        followers: Sequence[Subscriber],
        loop: asyncio.AbstractEventLoop,
        say: Callable[[str], None],
    ) -> None:
        self.followers = tuple(followers)
        self.loop = loop
        self.say = say
        # Batches handed over by the writer thread: (events, committed).
        self._ready: collections.deque[tuple[list[Event], bool]] = collections.deque()
        # A final AttemptEnded waiting for its InstanceSettled, and what came
        # after it meanwhile (each with whether it is on record).
        self._held: list[tuple[Event, bool]] = []
        self._held_batches = 0
        self._missing: list[str] = []
        self.error: Exception | None = None

    # -- writer thread -----------------------------------------------------------

    def add(self, events: list[Event], recorded: bool) -> None:
        """A batch the writer committed (``recorded``) or could not."""
        self._ready.append((events, recorded))
        # RuntimeError: the loop is closed; ``flush`` delivers what is left.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.pump)

    # -- event loop --------------------------------------------------------------

    def pump(self) -> None:
        """Deliver the batches handed over so far."""
        while self._ready:
            events, recorded = self._ready.popleft()
            for ev in events:
                self._take(ev, recorded)
            if self._held:
                self._held_batches += 1
                if self._held_batches > 1:
                    # Its instance did not settle right after it (the engine
                    # emits both at once): shown on its own terms.
                    self._release(None, True)
        self._tell_missing()

    def flush(self) -> None:
        """Deliver everything handed over, and what is held (the run is over);
        raise what a follower raised, if one did."""
        self.pump()
        if self._held:
            self._release(None, True)
        self._tell_missing()
        if self.error is not None:
            raise self.error

    def _take(self, ev: Event, recorded: bool) -> None:
        if self._held:
            self._held.append((ev, recorded))
            head = self._held[0][0]
            assert isinstance(head, AttemptEnded)
            if isinstance(ev, InstanceSettled) and ev.node == head.node:
                self._release(ev, recorded)
            return
        if isinstance(ev, AttemptEnded) and ev.outcome in _FINAL:
            self._held = [(ev, recorded)]
            self._held_batches = 0
            return
        self._deliver(ev, recorded)

    def _release(self, settled: InstanceSettled | None, settled_recorded: bool) -> None:
        """Deliver the held group: the attempt's end and its instance's settling
        as one (on record only if both are), the rest each on its own terms."""
        held, self._held = self._held, []
        head, head_recorded = held[0]
        both = head_recorded and settled_recorded
        for ev, recorded in held:
            if ev is head or ev is settled:
                if both:
                    self._tell(ev)
                elif ev is head:
                    assert isinstance(head, AttemptEnded)
                    self._missing.append(_ended(head))
            else:
                self._deliver(ev, recorded)

    def _deliver(self, ev: Event, recorded: bool) -> None:
        if recorded or isinstance(ev, AttemptStarted | AttemptOutput):
            self._tell(ev)
        elif isinstance(ev, RunEnded):
            self._tell(dataclasses.replace(ev, status="interrupted"))
        else:
            what = _what(ev)
            if what:
                self._missing.append(what)

    def _tell(self, ev: Event) -> None:
        self._tell_missing()  # what was held back before it, in its place
        for follower in self.followers:
            try:
                follower(ev)
            except Exception as e:  # raised again by flush(), after the run
                log.warning(
                    "a follower of the record (%s) failed on %s and is dropped: %s: %s",
                    getattr(follower, "__qualname__", type(follower).__name__),
                    type(ev).__name__,
                    type(e).__name__,
                    e,
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
                self.followers = tuple(f for f in self.followers if f is not follower)
                self.error = self.error or e

    def _tell_missing(self) -> None:
        if self._missing:
            names, self._missing = list(dict.fromkeys(self._missing)), []
            self.say(  # the session's notice: printed by the CLI, never raises
                f"{NOT_ON_RECORD}: {', '.join(names)} (the journal could not be written; "
                "`fleetrun show` has them as interrupted or not started)"
            )


def _ended(ev: AttemptEnded) -> str:
    """An attempt's end in a few words, with its cause when it failed (a failure
    the journal could not record is said nowhere else)."""
    if ev.outcome not in ("failed", "retrying"):
        return f"{ev.key} {ev.outcome}"
    cause = ending_text(ev.exit_code, ev.signal, ev.timed_out, ev.reason)
    return f"{ev.key} {ev.outcome} ({cause})"


def _what(ev: Event) -> str:
    """A few words for an event that is not on record ('' for one of no interest)."""
    if isinstance(ev, AttemptEnded):
        return _ended(ev)
    if isinstance(ev, InstanceSettled):
        return f"{ev.key} {ev.state}"
    if isinstance(ev, InstanceReused):
        return f"{ev.key} reused"
    if isinstance(ev, WaveChanged):
        return f"wave {ev.wave} {ev.state}"
    if isinstance(ev, PoolChanged):
        return ""  # a rate change: shown by no record view
    return ""
