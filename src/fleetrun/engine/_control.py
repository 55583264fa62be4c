"""``RunControl``: the handle through which a caller interrupts a running graph."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class RunControl:
    """Lets a caller (typically a SIGINT handler) stop a run.

    The first ``interrupt()`` stops starting new work and ends running attempts
    (SIGTERM to each process group, the grace period, SIGKILL, reap); the run
    returns with status ``interrupted``. A second call skips what is left of
    the grace period. Safe to call from a handler installed with
    ``loop.add_signal_handler`` and from another thread; a call before the run
    starts takes effect as soon as it does.
    """

    __slots__ = ("_handler", "_loop", "_promote", "presses", "promotions")

    def __init__(self) -> None:
        self.presses = 0
        self.promotions: list[int | None] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handler: Callable[[int], None] | None = None
        self._promote: Callable[[int | None], None] | None = None

    def promote(self) -> None:
        """Open the next rollout wave of a run whose ``rollout`` has ``pause: true``.

        A promote opens one wave: the one waiting for it, or, given while the
        open waves still run (or before the run starts), the next wave, as soon
        as they are done. Promotes given before that wave opens approve it
        once: they are not kept for the waves after it, each of which waits
        for a promote given while it waits or after the wave before it opened.
        Without ``pause`` it changes nothing. Safe from a signal handler and
        from another thread.
        """
        self.promote_wave(None)

    def promote_wave(self, wave: int | None) -> None:
        """``promote``, naming the wave (1-based, as ``WaveChanged.wave``) it
        approves: a promote for a wave that is already open changes nothing, so
        two ``fleetrun promote`` given while one wave waits open that one wave."""
        self.promotions.append(wave)
        loop, handler = self._loop, self._promote
        if loop is None or handler is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            loop.call_soon(handler, wave)
        else:
            loop.call_soon_threadsafe(handler, wave)

    def interrupt(self) -> None:
        """Ask the run to stop (first call) or to stop now (later calls)."""
        self.presses += 1
        loop, handler = self._loop, self._handler
        if loop is None or handler is None:
            return
        presses = self.presses
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            # Deferred by one loop iteration so that a handler never runs
            # inside the scheduler's own bookkeeping.
            loop.call_soon(handler, presses)
        else:
            loop.call_soon_threadsafe(handler, presses)

    @property
    def interrupted(self) -> bool:
        """True once ``interrupt()`` was called."""
        return self.presses > 0

    def _attach(
        self,
        loop: asyncio.AbstractEventLoop,
        handler: Callable[[int], None],
        promote: Callable[[int | None], None] | None = None,
    ) -> None:
        self._loop, self._handler, self._promote = loop, handler, promote
        if self.presses:
            loop.call_soon(handler, self.presses)
        if promote is not None:
            for wave in self.promotions:
                loop.call_soon(promote, wave)

    def _detach(self) -> None:
        self._loop = self._handler = self._promote = None
