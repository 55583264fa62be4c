"""``fleetrun watch``: the live terminal view of a run started elsewhere, from the journal.

The run needs no flag: its journal writer commits every engine event as it
happens (``events`` rows, in order), so another process can read them back as
the typed events they were (``JournalReader.events_after``) and feed them to
the very consoles the run's own terminal uses: ``LiveConsole`` on a terminal,
``PlainConsole`` elsewhere, ``FailureNotes`` and ``next_steps`` for the end.
Nothing here renders a run by itself.

Following is a poll of the journal every ``POLL`` seconds by sequence number
(one indexed range query: nothing is re-read), read-only, so a watcher never
changes the run or its record. Every ``ALIVE_EVERY`` seconds it checks that
the run's process still lives, the way ``show`` does (same host, pid and
process start time); a run on another host is judged by its journal writer's
heartbeat (``runs.alive_at``, written every second while it runs): no new
heartbeat nor event for ``SILENT_FOR`` seconds reads as dead.
"""

from __future__ import annotations

import io
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO, cast

import click

from fleetrun.cli._display import ConsoleStream
from fleetrun.cli._main import EXIT_INTERRUPTED, outcome_exit_code
from fleetrun.engine import Event, RunEnded, RunResult, RunStarted
from fleetrun.errors import FleetrunError, RunNotFoundError, StateDirError
from fleetrun.layout import RunLayout
from fleetrun.plan import ExecRequest, Graph, exec_plan, expand, load_plan, load_plan_text
from fleetrun.report import (
    FailureNotes,
    LiveConsole,
    PlainConsole,
    event_text,
    next_steps,
    printable,
    stamp,
    summary_text,
    use_live,
)
from fleetrun.session import RunOutcome, find_state_dir, select_runs
from fleetrun.state import InstanceRecord, JournalReader, RunRecord, process_alive

POLL = 0.2
"""Seconds between two looks at the journal for new events."""

ALIVE_EVERY = 1.0
"""Seconds between two checks that the run's process still lives."""

SILENT_FOR = 30.0
"""Seconds without a new heartbeat or event after which a run on another host
reads as dead (its writer beats every second)."""

BATCH = 2000
"""Most events read in one query (a long run is caught up in pieces)."""

EXIT_RUN_DIED = 4
"""``watch``'s exit code when the run's fleetrun process died without ending the
run (killed, crashed, its machine lost): the record reads ``interrupted``."""


@click.command()
@click.argument("run", required=False)
@click.option(
    "--plan",
    type=click.Path(dir_okay=False),
    default=None,
    help="The plan: finds its state directory and watches its runs only.",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where the journal lives (default: .fleetrun beside --plan, or ./.fleetrun).",
)
@click.option(
    "--plain",
    is_flag=True,
    help="One timestamped line per change instead of the live view "
    "(also when stdout is not a terminal, CI is set, NO_COLOR is set or TERM=dumb).",
)
def watch(run: str | None, plan: str | None, state_dir: str | None, plain: bool) -> None:
    """Follow RUN live until it ends, from another terminal than the one that started it.

    Shows what the run's own terminal shows (the live view, or one line per
    change), read from the journal as the run writes it: a run started by
    any fleetrun process on this machine (another terminal, a CI job, a
    service) can be watched, and it needs no flag for it. The lines of what
    happened so far come first, then the run as it goes, then its summary.

    RUN is a run id or a unique prefix (`fleetrun history` lists them); by
    default the live run (of --plan), else the newest run, whose summary is
    printed at once if it has ended. Ctrl-C stops watching and leaves the
    run alone. Task output is not shown: `fleetrun logs -f TASK@TARGET`
    follows an attempt's.

    \b
    Exit codes: the run's own, as its `apply` exits: 0 every instance
    succeeded, 1 some task failed, 130 interrupted (also when Ctrl-C stops
    watching, or its console goes away); 2 no journal, no run or no such
    run; 4 the run's fleetrun process died without ending the run (killed
    or crashed: it reads as interrupted; `fleetrun retry` goes on from
    there).
    """
    code = _watch(run, plan, state_dir, plain)
    click.get_current_context().exit(code)


def _watch(run_ref: str | None, plan: str | None, state_dir: str | None, plain: bool) -> int:
    where = find_state_dir(state_dir, plan)
    try:
        reader = JournalReader(where)
    except RunNotFoundError as e:
        raise RunNotFoundError(
            f"{e}; `fleetrun apply` records runs there (--state-dir or --plan names another place)"
        ) from None
    try:
        run = _pick(reader, run_ref, plan)
        args = ["--state-dir", state_dir] if state_dir else ["--plan", plan] if plan else []
        instances = reader.instances(run.id)
        graph, note = _graph(reader, run, instances)
        if run.ended_at is not None:
            return _Watch(reader, run, args, graph, instances).ended()
        if reader.wal_unread:
            raise StateDirError(
                f"cannot follow run {run.id}: {reader.db_path}-wal, where the run's latest "
                "events are, cannot be read here; `fleetrun show` tells what is on record"
            )
        if note:
            click.echo(f"note: {printable(note)}; following it as plain lines", err=True)
        return _Watch(reader, run, args, graph, instances).follow(plain)
    finally:
        reader.close()


def _pick(reader: JournalReader, run_ref: str | None, plan: str | None) -> RunRecord:
    """RUN, else the live run (of ``plan``), else the newest one."""
    if run_ref is not None:
        return reader.run(run_ref)
    plan_path = str(Path(plan).resolve()) if plan else None
    runs = select_runs(reader, plan)
    if not runs:
        of = f" of {plan_path}" if plan_path else ""
        raise RunNotFoundError(
            f"no run{of} is on record in {reader.state_dir}; `fleetrun apply` starts one"
        )
    live = [r for r in runs if r.ended_at is None]
    if len(live) > 1:
        others = ", ".join(r.id for r in live[1:])
        click.echo(
            printable(
                f"note: {len(live)} runs are live; watching the newest, {live[0].id} "
                f"(also {others}: `fleetrun watch RUN` picks one)"
            ),
            err=True,
        )
    return live[0] if live else runs[0]


def _graph(
    reader: JournalReader, run: RunRecord, instances: Sequence[InstanceRecord]
) -> tuple[Graph | None, str]:
    """The run's graph, as its process expanded it, for the live view (whose
    per-phase bars, pools and ETA need it); else None and why not.

    The plan file as it is now with the run's command-line variables (an
    ``exec`` run: its recorded request), else the journal's snapshot of the plan;
    either is used only if it expands to exactly the run's instances.
    """
    exec_json = run.options.get("exec")
    path = Path(run.plan_path)

    def from_file() -> Graph:
        if isinstance(exec_json, dict):
            return expand(exec_plan(ExecRequest.from_json(exec_json)))
        return expand(load_plan(path, var_overrides=_recorded_vars(reader, run.id)))

    def from_snapshot() -> Graph:
        return expand(load_plan_text(run.plan_snapshot, str(path), path.parent))

    ways = [from_file] if isinstance(exec_json, dict) else [from_file, from_snapshot]
    for way in ways:
        try:
            graph = way()
        except (FleetrunError, OSError, ValueError, TypeError, KeyError):
            continue
        if _expands_to(graph, instances):
            return graph, ""
    return None, f"the plan of run {run.id} no longer expands to its instances"


def _recorded_vars(reader: JournalReader, run_id: str) -> dict[str, str]:
    """The run's ``--var`` values, exactly as given (empty when it had none or
    they cannot be read)."""
    try:
        data = json.loads(RunLayout.of(reader.state_dir, run_id).vars_file.read_bytes())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items()}


def _expands_to(graph: Graph, instances: Sequence[InstanceRecord]) -> bool:
    nodes = graph.nodes
    return all(i.node < len(nodes) and nodes[i.node].key == i.key for i in instances)


class _Discard(io.TextIOBase):
    """A text stream that keeps nothing (the console of a replay nobody reads)."""

    def write(self, text: str) -> int:
        return len(text)


@dataclass
class _Seen:
    """What the events read so far say about the run's start and end."""

    started: RunStarted | None = None
    ended: RunEnded | None = None


Verdict = Literal["ended", "died", "silent", "gone"]


class _Watch:
    """One watched run: its journal, the consoles fed from it, and its end."""

    def __init__(
        self,
        reader: JournalReader,
        run: RunRecord,
        where: list[str],
        graph: Graph | None,
        instances: Sequence[InstanceRecord],
    ) -> None:
        self.reader = reader
        self.run = run
        # As read when the watch began: final for a run that had ended then.
        self.instances = instances
        self.over = run.ended_at is not None
        self.where = where
        self.graph = graph
        self.seq = 0
        self.seen = _Seen()
        self.notes = FailureNotes()
        self.console: PlainConsole | LiveConsole = PlainConsole(cast(TextIO, _Discard()))
        self.subscribers: tuple[Callable[[Event], None], ...] = ()
        self.stream: TextIO | ConsoleStream = sys.stdout

    # -- a run that has ended -----------------------------------------------------

    def ended(self) -> int:
        """A run that ended before the watch began: its summary, at once."""
        self._subscribe(self.console)
        while self._read():
            pass
        self.stream = ConsoleStream.wrap(sys.stdout)
        if self.run.computed:
            return self._finish("died")
        ev = self.seen.ended
        if ev is not None:
            self._echo(f"{stamp(ev.at)} {event_text(ev)[0]}")
        return self._finish("ended")

    # -- a live run ---------------------------------------------------------------

    def follow(self, plain: bool) -> int:
        """Feed the run's events to a console as they are journaled, until it ends."""
        run = self.run
        stream = cast(TextIO, ConsoleStream.wrap(sys.stdout))
        self.stream = stream
        live = self.graph is not None and use_live(stream, plain=plain, environ=os.environ)
        if live:
            from rich.console import Console

            assert self.graph is not None
            parallelism = run.options.get("parallelism")
            self.console = LiveConsole(
                self.graph,
                console=Console(file=stream),
                parallelism=parallelism if isinstance(parallelism, int) else None,
                only=frozenset(i.node for i in self.instances),
            )
        else:
            self.console = PlainConsole(stream)
        self._subscribe(self.console)
        click.echo(
            printable(
                f"watching run {run.id} of {run.plan_name} (pid {run.pid} on {run.host}); "
                "Ctrl-C stops watching, the run goes on"
            ),
            err=True,
        )
        try:
            if isinstance(self.console, LiveConsole):
                self.console.start()
            verdict = self._follow()
        except KeyboardInterrupt:
            self._stop()
            click.echo(
                f"stopped watching run {run.id}, which goes on (`fleetrun watch {run.id}` "
                "follows it again)",
                err=True,
            )
            return EXIT_INTERRUPTED
        self._stop()
        if verdict == "gone":
            return EXIT_INTERRUPTED
        return self._finish(verdict)

    def _follow(self) -> Verdict:
        run = self.run
        here = run.host == socket.gethostname()
        check_at = time.monotonic() + ALIVE_EVERY
        beat = self.reader.heartbeat(run.id)
        heard_at = time.monotonic()
        while True:
            before = self.seq
            more = self._read()
            if self.seen.ended is not None:
                return "ended"
            if getattr(self.stream, "gone", False):
                return "gone"
            if more:
                continue  # a full batch: catch up before drawing
            if isinstance(self.console, LiveConsole):
                self.console.refresh()
            now = time.monotonic()
            if self.seq != before:
                heard_at = now
            if now >= check_at:
                check_at = now + ALIVE_EVERY
                if here:
                    alive = process_alive(run.pid, run.pid_start)
                else:
                    latest = self.reader.heartbeat(run.id)
                    if latest != beat:
                        beat, heard_at = latest, now
                    alive = now - heard_at < SILENT_FOR
                if not alive:
                    return self._gone(silent=not here)
            time.sleep(POLL)

    def _gone(self, *, silent: bool) -> Verdict:
        """The run's process is gone (or silent): read what it wrote last, then
        how the record ends it."""
        while self._read():
            pass
        if self.seen.ended is not None:
            return "ended"
        self.run = self.reader.run(self.run.id)
        if self.run.ended_at is None:
            return "silent" if silent else "died"
        # Ended by its process without an end event (stopped before the engine
        # began, or its journal writer failed), or read as interrupted.
        return "died" if self.run.computed else "ended"

    # -- reading ------------------------------------------------------------------

    def _subscribe(self, console: PlainConsole | LiveConsole) -> None:
        self.subscribers = (console, self.notes)

    def _read(self) -> bool:
        """Feed the next batch of journaled events; True if the batch was full."""
        before = self.seq
        self.seq, events = self.reader.events_after(self.run.id, self.seq, BATCH)
        for ev in events:
            for s in self.subscribers:
                s(ev)
            if isinstance(ev, RunStarted):
                self.seen.started = ev
            elif isinstance(ev, RunEnded):
                self.seen.ended = ev
                return False
        return self.seq - before >= BATCH

    def _stop(self) -> None:
        if isinstance(self.console, LiveConsole):
            self.console.stop()

    # -- the end ------------------------------------------------------------------

    def _finish(self, verdict: Verdict) -> int:
        """Print the summary, the failures and what to run next; return the exit code."""
        run = self.run
        if verdict == "ended" and run.ended_at is None:
            run = self.run = self.reader.run(run.id)  # the end event has been read
        instances = self.instances if self.over else self.reader.instances(run.id)
        started = self.seen.started.at if self.seen.started else run.started_at
        ended = self.seen.ended.at if self.seen.ended else (run.ended_at or time.time())
        status = self.seen.ended.status if self.seen.ended else run.status
        result = RunResult(
            run_id=run.id,
            status=cast(Any, status if status != "running" else "interrupted"),
            states={i.node: i.status for i in instances},
            outputs={},
            started_at=started,
            ended_at=ended,
        )
        if verdict == "ended" and self.graph is not None:
            summary = self.console.summary(result, self.graph)
        else:
            # Every count: the live view's last picture does not show how a run
            # that died ended.
            nodes = len(instances) if self.graph is None else len(self.graph.nodes)
            wall = max(0.0, ended - started)
            summary = summary_text(result.counts, wall, self.console.task_time, nodes)
        retry_of = run.parent_id if run.kind != "apply" else None
        steps = next_steps(self.notes.failures, result.counts, where=self.where, retry_of=retry_of)
        lines = [summary, *steps]
        self._echo("\n".join(lines))
        if verdict == "died":
            end = stamp(run.ended_at) if run.ended_at is not None else "its last trace"
            click.echo(
                printable(
                    f"run {run.id} died: its fleetrun process (pid {run.pid}) is gone and "
                    f"never ended the run; it reads as interrupted from {end}, its last "
                    "trace (`fleetrun retry` goes on from there)"
                ),
                err=True,
            )
            return EXIT_RUN_DIED
        if verdict == "silent":
            click.echo(
                printable(
                    f"run {run.id} on host {run.host} has shown no sign of life for "
                    f"{SILENT_FOR:g}s (no heartbeat, no event): it may have died "
                    f"(`fleetrun show {run.id}` on {run.host} tells)"
                ),
                err=True,
            )
            return EXIT_RUN_DIED
        return outcome_exit_code(RunOutcome(cast(Any, result.status)))

    def _echo(self, text: str) -> None:
        """Print to the console the run's lines went to (nothing once it is gone)."""
        if not getattr(self.stream, "gone", False):
            self.stream.write(text + "\n")
            self.stream.flush()
