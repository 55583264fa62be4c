"""The console side of a run: the live view or plain lines, task output, the events file.

``apply``/``retry`` build one ``Display`` before the run starts (so a bad
``--events`` path is reported before anything is journaled), hand its
``subscribers`` to the engine, and ``stop()`` it when the engine returns,
whatever happened.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

import click

from fleetrun.errors import FleetrunError
from fleetrun.plan import Graph
from fleetrun.redact import Redactor

if TYPE_CHECKING:
    from fleetrun.engine import Event, RunResult
    from fleetrun.session import RunRequest


class _Console(Protocol):
    def __call__(self, ev: Event) -> None: ...
    def write_text(self, text: str) -> None: ...
    def summary(self, result: RunResult, graph: Graph) -> str: ...


class Display:
    """What a run shows and writes besides the journal.

    - the console: ``LiveConsole`` on a terminal, else ``PlainConsole``
      (``use_live`` has the rules: ``--plain``, ``CI``, ``NO_COLOR``, ``TERM=dumb``,
      not a terminal);
    - ``--output``: an ``OutputPrinter`` that writes task output through the
      console, so it never tears the live view or splits a line;
    - ``--events FILE``: an ``EventsFile``.
    """

    def __init__(
        self,
        graph: Graph,
        req: RunRequest,
        only: frozenset[int] | None,
        redactor: Redactor,
        *,
        stream: TextIO | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        from fleetrun.report import EventsFile, LiveConsole, OutputPrinter, PlainConsole, use_live

        stream = sys.stdout if stream is None else stream
        environ = os.environ if environ is None else environ
        # Opened first: a path that cannot be written is a usage error (exit 2)
        # before the run begins.
        self._events = None
        if req.events:
            self._events = EventsFile(Path(req.events), redactor)
        self._live: Any = None
        if use_live(stream, plain=req.plain, environ=environ):
            from rich.console import Console

            self._live = LiveConsole(
                graph,
                console=Console(file=stream),
                parallelism=req.parallelism,
                only=only,
            )
            self.console: _Console = self._live
        else:
            self.console = PlainConsole(stream)
        self._printer = None
        if req.output != "none":
            self._printer = OutputPrinter(
                req.output,  # type: ignore[arg-type]
                graph,
                self.console.write_text,
                only=only,
            )
        subs: list[Callable[[Event], None]] = []
        if self._printer is not None:
            # Before the console: an attempt's block comes before its status line.
            subs.append(self._printer)
        subs.append(self.console)
        if self._events is not None:
            subs.append(self._events)
        self.subscribers: tuple[Callable[[Event], None], ...] = tuple(subs)

    def start(self) -> None:
        """Begin the live view (when there is one)."""
        if self._live is not None:
            self._live.start()

    def stop(self) -> None:
        """Flush held task output, end the live view and close the events file."""
        try:
            if self._printer is not None:
                self._printer.close()
        finally:
            try:
                if self._live is not None:
                    self._live.stop()
            finally:
                if self._events is not None:
                    try:
                        self._events.close()
                    except FleetrunError as e:
                        # The run and its journal are complete; the exit code
                        # stays the run's own.
                        click.echo(f"warning: {e}", err=True)
