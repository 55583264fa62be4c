"""``LiveConsole``: the run drawn live on a terminal with rich (``use_live``, kept
apart from rich in ``_plain``, says when).

The console is an engine subscriber. Events only update counters in a
``LiveState`` (O(1) each); the screen is redrawn from the event loop at most
``refresh_per_second`` times a second by a ``loop.call_later`` chain armed by
the first event, so nothing reads the state from another thread and a burst of
events costs no extra drawing. The ETA is simulated at a redraw, not per
event: about once a second, sooner after an instance settled, and never
more than a small share of the loop's time (``LiveState.eta``). Lines worth
keeping (failures with the end of their log, retries, skips, throttling,
rollout waves) are printed above the live area, in the words of the plain
console, at the next redraw.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from fleetrun.engine import (
    AttemptEnded,
    AttemptStarted,
    Event,
    InstanceReused,
    InstanceSettled,
    PoolChanged,
    RunEnded,
    RunResult,
    RunStarted,
    WaveChanged,
)
from fleetrun.plan import Graph
from fleetrun.report._live_render import LiveState, render
from fleetrun.report._plain import SkipBatch, event_text, reused_text, stamp, summary_text
from fleetrun.report._plain import use_live as use_live

log = logging.getLogger(__name__)

MAX_QUEUED = 256 * 1024
"""Characters of task output held for the next redraw before it is printed at once."""


class LiveConsole:
    """A subscriber that draws the run live with rich on ``console``.

    ``start()``/``stop()`` (or ``with``) begin and end the live display; events
    must be delivered on the event loop's thread, as the engine does, and so
    must calls to ``write_text``. ``parallelism`` is the run's ``-j`` (the
    value in ``RunStarted`` wins when it has one); ``only`` the node ids the
    run may start (None: all). ``clock`` gives the wall-clock time, the same
    clock as the events' ``at``.
    """

    def __init__(
        self,
        graph: Graph,
        *,
        console: Console,
        parallelism: int | None = None,
        only: frozenset[int] | None = None,
        refresh_per_second: float = 8.0,
        clock: Callable[[], float] = time.time,
        tail_lines: int = 5,
    ) -> None:
        if refresh_per_second <= 0:
            raise ValueError("refresh_per_second must be > 0")
        self.console = console
        self.state = LiveState(graph, parallelism=parallelism, only=only)
        self.interval = 1.0 / refresh_per_second
        self.clock = clock
        self.tail_lines = tail_lines
        self.refreshes = 0  # redraws so far, the one in ``start`` included
        # Event lines and ``write_text`` blocks (no final newline), in order, to
        # print above the live area at the next redraw.
        self._above: list[str] = []
        self._queued = 0
        self._reused: list[InstanceReused] = []
        self._reused_at = 0.0
        self._skipped = SkipBatch()
        self._armed = False
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._live = Live(
            console=console,
            auto_refresh=False,
            transient=False,
            get_renderable=self._renderable,
        )

    # -- the subscriber (runs on the loop; must stay cheap) -----------------------

    def __call__(self, ev: Event) -> None:
        """Update the counters for ``ev``; queue a line above the live area if it matters."""
        if not self._armed:
            self._arm()
        said = self._skipped.before(ev)
        if said is not None:
            self._queue(*said)
        if self._reused and not isinstance(ev, InstanceReused):
            self._queue(self._reused_at, [reused_text(self._reused)])
            self._reused = []
        state = self.state
        # Most frequent first: two of these per attempt, one per instance.
        if isinstance(ev, AttemptStarted):
            state.attempt_started(ev.node, ev.attempt, ev.at)
        elif isinstance(ev, AttemptEnded):
            took = state.attempt_ended(ev.node, ev.outcome, ev.at, ev.started_at)
            if ev.outcome == "failed" or ev.outcome == "retrying" or ev.left_running:
                self._queue(ev.at, event_text(ev, took=took, tail_lines=self.tail_lines))
        elif isinstance(ev, InstanceSettled):
            state.instance_settled(ev.node, ev.state)
            if SkipBatch.holds(ev):
                self._skipped.add(ev)  # said as one line with the skips after it
            elif ev.state != "succeeded":
                self._queue(ev.at, event_text(ev))
        elif isinstance(ev, InstanceReused):
            state.instance_settled(ev.node, "reused")
            self._reused.append(ev)
            self._reused_at = ev.at
        elif isinstance(ev, PoolChanged):
            state.pool_changed(ev.pool, ev.rate, ev.concurrency)
            self._queue(ev.at, event_text(ev))
        elif isinstance(ev, WaveChanged):
            state.wave_changed(ev.waves)
            self._queue(ev.at, event_text(ev))
        elif isinstance(ev, RunStarted):
            state.run_id, state.mode, state.started_at = ev.run_id, ev.mode, ev.at
            if ev.mode == "sequential":
                state.parallelism = 1
            elif ev.parallelism is not None:
                state.parallelism = ev.parallelism
        elif isinstance(ev, RunEnded):
            state.ended_at, state.outcome = ev.at, ev.status
            # The last picture: drawn now, and the chain of redraws ends.
            if self._handle is not None:
                self._handle.cancel()
                self._handle = None
            self.refresh()

    def _queue(self, at: float, lines: list[str]) -> None:
        if lines:
            self._above.append(f"{stamp(at)} {lines[0]}")
            self._above.extend(lines[1:])

    def _arm(self) -> None:
        self._armed = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # events fed outside a loop: redraws only when asked (``refresh``)
        self._loop = loop
        self.state.eta_inline = False  # simulated on a thread, from ``refresh``
        self._handle = loop.call_later(self.interval, self._tick)

    def _tick(self) -> None:
        self.refresh()
        if self.state.ended_at is None:
            loop = asyncio.get_running_loop()
            self._handle = loop.call_later(self.interval, self._tick)
        else:
            self._handle = None

    # -- drawing --------------------------------------------------------------------

    def _area_height(self) -> int:
        # Leave a line so the last line printed above stays in view.
        return max(3, self.console.size.height - 1)

    def _renderable(self) -> Group:
        return render(self.state, self.console.size.width, self._area_height(), self.clock())

    def write_text(self, text: str) -> None:
        """Print ``text`` (complete lines) above the live area at the next redraw.

        ANSI colour codes in it are kept; cursor movements and other control
        sequences are dropped, so a task's output cannot tear the live area.
        Without a live display it is printed at once; with one, as soon as
        ``MAX_QUEUED`` characters wait, so a noisy task cannot grow the queue.
        """
        self._above.append(text.removesuffix("\n"))
        self._queued += len(text)
        if not self._live.is_started or self._queued > MAX_QUEUED:
            self.refresh()

    def _flush(self) -> None:
        if not self._above:
            return
        above, self._above = self._above, []
        self._queued = 0
        # One Text per item: colours a task leaves open end with its block.
        out = [Text.from_ansi(item) for item in above]
        self.console.print(*out, sep="\n", soft_wrap=True, highlight=False)

    def refresh(self) -> None:
        """Print the queued lines above the live area and redraw it (one write)."""
        if not self._live.is_started:
            self._flush()
            return
        self.refreshes += 1
        self._simulate_eta()
        with self.console:  # buffer both, so the terminal gets one write
            self._flush()
            self._live.refresh()

    def _simulate_eta(self) -> None:
        """Start a simulation of the ETA on a thread when one is due.

        Its inputs are copied here, on the loop; the result comes back through
        the loop (``call_soon_threadsafe``) and is drawn at the next redraw.
        """
        state, loop = self.state, self._loop
        sched = state.eta_schedule
        if loop is None or state.eta_inline or state.ended_at is not None:
            return
        now = self.clock()
        if not sched.due(now):
            return
        inputs = state.eta_inputs(now)
        sched.begin()

        def work() -> None:
            began = time.perf_counter()
            try:
                value = inputs.simulate()
            except Exception:  # an estimate must never disturb the run
                log.warning("the estimate of the time left failed", exc_info=True)
                value = None
            cost = time.perf_counter() - began
            with contextlib.suppress(RuntimeError):  # a closed loop: the run is over
                loop.call_soon_threadsafe(sched.store, inputs.now, value, cost)

        threading.Thread(target=work, name="fleetrun-eta", daemon=True).start()

    def start(self) -> None:
        """Begin the live display (draws it once)."""
        if not self._live.is_started:
            self._live.start()
            self.refresh()

    def stop(self) -> None:
        """End the live display, leaving its last picture on the screen."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        said = self._skipped.flush()
        if said is not None:
            self._queue(*said)
        if self._reused:
            self._queue(self._reused_at, [reused_text(self._reused)])
            self._reused = []
        if self._live.is_started:
            with self.console:
                self._flush()
                self._live.stop()
        self._flush()

    def __enter__(self) -> LiveConsole:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what the CLI prints afterwards ------------------------------------------

    @property
    def task_time(self) -> float:
        """Seconds spent in attempts so far (summed over every attempt)."""
        return self.state.task_time

    def summary(self, result: RunResult, graph: Graph) -> str:
        """``PlainConsole.summary`` less its counts line, which the live view's last
        picture already shows (the summary is printed once)."""
        text = summary_text(
            result.counts, result.ended_at - result.started_at, self.task_time, len(graph.nodes)
        )
        return text.split("\n", 1)[-1]


__all__ = ["LiveConsole", "event_text", "reused_text", "stamp", "use_live"]
