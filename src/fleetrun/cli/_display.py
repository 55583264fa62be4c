"""The console side of a run: the live view or plain lines, task output, the events file.

``apply``/``retry`` build one ``RunConsole`` (a ``Display`` and the failures
it reports) before the run starts (so a bad ``--events`` path is reported
before anything is journaled), hand its ``subscribers`` to the engine,
``stop()`` it when the engine returns, whatever happened, and print its
``report()`` (the session hands it back in the outcome).

The console is only a view: a console that goes away (``| head``, quitting
``less``, a closed terminal) never touches the run. ``ConsoleStream`` writes
every byte or, once the console is gone, nothing more: it says so once on
stderr and points the descriptor at /dev/null, so later prints (the summary)
and Python's own flush at exit find nothing to complain about; the run goes
on, the journal records it all, and the exit code is the run's.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

import click

from fleetrun.errors import FleetrunError
from fleetrun.plan import Graph
from fleetrun.redact import Redactor

if TYPE_CHECKING:
    from fleetrun.engine import Event, RunResult, Subscriber
    from fleetrun.session import Report, RunRequest, RunSetup


_GONE = (errno.EPIPE, errno.EIO, errno.ENXIO, errno.ECONNRESET, errno.ENOSPC, errno.EBADF)
"""What a console that went away (or cannot take more) answers a write with."""


class ConsoleStream:
    """The console as a text stream that writes everything or, once gone, nothing.

    Writes go straight to the descriptor, every byte of them: a short write
    (a signal, a slow reader) continues, a non-blocking descriptor is waited
    on, and nothing depends on how Python buffers ``sys.stdout`` (with
    ``PYTHONUNBUFFERED`` its text layer drops what a short write left over).
    """

    def __init__(self, inner: TextIO, fd: int) -> None:
        self.inner = inner
        self.fd = fd
        self.gone = False
        self.encoding = getattr(inner, "encoding", None) or "utf-8"
        self.errors = "backslashreplace"
        self._tty = False
        with contextlib.suppress(OSError, ValueError):
            self._tty = os.isatty(fd)

    @classmethod
    def wrap(cls, stream: TextIO) -> TextIO | ConsoleStream:
        """``stream`` as a ``ConsoleStream`` when it has a descriptor, else as it is."""
        try:
            fd = stream.fileno()
            stream.flush()  # what was printed before comes first
        except (OSError, ValueError, AttributeError):
            return stream
        return cls(stream, fd)

    def isatty(self) -> bool:
        return self._tty

    def fileno(self) -> int:
        return self.fd

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        """Nothing is held here: every write went to the descriptor."""

    def write(self, text: str) -> int:
        """Write all of ``text`` (or, once the console is gone, drop it)."""
        if self.gone or not text:
            return len(text)
        view = memoryview(text.encode(self.encoding, self.errors))
        while view:
            try:
                view = view[os.write(self.fd, view) :]
            except BlockingIOError:
                select.select([], [self.fd], [])
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno not in _GONE:
                    raise
                self._went_away(e)
                break
        return len(text)

    def _went_away(self, e: OSError) -> None:
        self.gone = True
        with contextlib.suppress(OSError):
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self.fd)
            os.close(null)
        # Said if stderr can take it: it may be gone too (or None, closed at start).
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sys.stderr.write(
                f"fleetrun: the console went away ({e.strerror or e}); the run goes on "
                "and is recorded in full (fleetrun show, fleetrun logs)\n"
            )
            sys.stderr.flush()


class _Console(Protocol):
    def __call__(self, ev: Event) -> None: ...
    def write_text(self, text: str) -> None: ...
    def summary(self, result: RunResult, graph: Graph) -> str: ...


def console_gone(e: OSError, stderr: bool = False) -> None:
    """stdout (or stderr) went away while fleetrun printed to it: point it at
    /dev/null so nothing printed later fails, and say so once on the other
    stream if it can. Errors other than a vanished console are raised."""
    if e.errno not in _GONE:
        raise e
    fd = 2 if stderr else 1
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)
    if not stderr:
        # Said if stderr can take it: it may be gone too (or None, closed at start).
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sys.stderr.write(
                f"fleetrun: the console went away ({e.strerror or e}); the run goes on "
                "and is recorded in full (fleetrun show, fleetrun logs)\n"
            )
            sys.stderr.flush()


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
        from fleetrun.report import EventsFile, OutputPrinter, PlainConsole, use_live

        stream = ConsoleStream.wrap(sys.stdout if stream is None else stream)  # type: ignore[assignment]
        assert stream is not None
        environ = os.environ if environ is None else environ
        # Opened first: a path that cannot be written is a usage error (exit 2)
        # before the run begins.
        self._events = None
        if req.events:
            self._events = EventsFile(Path(req.events), redactor)
        self._live: Any = None
        if not req.quiet and use_live(stream, plain=req.plain, environ=environ):
            # Imported only here: plain lines never load rich.
            from rich.console import Console

            from fleetrun.report import LiveConsole

            self._live = LiveConsole(
                graph,
                console=Console(file=stream),
                parallelism=req.parallelism,
                only=only,
            )
            self.console: _Console = self._live
        else:
            self.console = PlainConsole(stream, quiet=req.quiet)
        self._printer = None
        if req.output != "none":
            self._printer = OutputPrinter(
                req.output,
                graph,
                self.console.write_text,
                only=only,
                tabular=req.quiet,
                # On a terminal, task output keeps its colours but cannot move
                # the cursor; FLEETRUN_RAW_OUTPUT=1 passes it through as it is.
                safe=stream.isatty() and environ.get("FLEETRUN_RAW_OUTPUT", "") in ("", "0"),
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


class RunConsole:
    """The console of ``apply``/``retry``/``apply --resume`` (the session's ``Console``):
    the display, plus the failures and next steps its report ends with."""

    def __init__(self, setup: RunSetup) -> None:
        from fleetrun.report import FailureNotes

        self.setup = setup
        self.display = Display(setup.graph, setup.request, setup.only, setup.redactor)
        self.notes = FailureNotes()
        self.subscribers: tuple[Subscriber, ...] = (*self.display.subscribers, self.notes)

    def start(self) -> None:
        self.display.start()

    def stop(self) -> None:
        self.display.stop()

    def report(self, result: RunResult) -> Report:
        """The summary, then the failures and the commands to run next. A quiet run
        that succeeded says its counts in one line (``3 succeeded (of 3)``), or nothing
        with ``--output ordered``, whose rows are the whole answer (a status table)."""
        from fleetrun.report import next_steps
        from fleetrun.session import Report

        req = self.setup.request
        lines: list[str] = []
        summary = self.display.console.summary(result, self.setup.graph)
        if not (req.quiet and result.status == "succeeded"):
            lines.append(summary)
        elif req.output != "ordered":
            lines.append(summary.split("\n", 1)[0])
        retry_of = self.setup.parent_id if req.kind != "apply" else None
        lines += next_steps(
            self.notes.failures, result.counts, where=_where(req), retry_of=retry_of
        )
        return Report("".join(f"{line}\n" for line in lines))


def _where(req: RunRequest) -> list[str]:
    """The arguments that find this run's record again."""
    if req.state_dir:
        return ["--state-dir", req.state_dir]
    return ["--plan", req.plan] if req.plan else []
