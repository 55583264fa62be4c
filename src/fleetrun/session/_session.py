"""One run from request to result: ``apply``, ``apply --resume`` and ``retry``, in
two steps.

``prepare`` (``_prepare``) loads the plan, takes its lock, recovers what dead
runs left on record and decides what the run does: a frozen ``PreparedRun``.
``execute`` then runs one event loop for the whole command: it looks for
orphans of dead runs (and ends them with ``--kill-orphans``), runs the engine
with the console's subscribers and the journal writer, closes the run on
record and lets go of the lock. The session never prints: what the user
should be told goes to the ``notify`` callback as ``Notice`` values, and the
outcome comes back as a ``RunOutcome``, carrying the console's ``Report``.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import signal
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from fleetrun.engine import RunControl, RunOptions, RunResult, Subscriber, run_graph
from fleetrun.errors import FleetrunError, RunLockedError
from fleetrun.executors import Orphan, OrphanFinder, RecordedAttempt
from fleetrun.layout import RunLayout
from fleetrun.plan import Graph
from fleetrun.session._executors import ExecutorContext, ExecutorRegistry, default_registry
from fleetrun.session._prepare import OrphanSearch, PlannedRun, PreparedRun, prepare
from fleetrun.session._request import (
    Console,
    ConsoleFactory,
    Notice,
    RunOutcome,
    RunRequest,
)
from fleetrun.session._select import describe_run
from fleetrun.state import Journal, JournalWriter, tighten_tree

log = logging.getLogger(__name__)

Notify = Callable[[Notice], None]


class Session:
    """Runs requests against state directories with the executors of ``registry``.

    ``registry`` maps each executor kind to a factory (``default_registry()``:
    ``local``, ``ssh``, ``cluster``). ``handle_signals``: SIGINT/SIGTERM
    interrupt the run (first: graceful; again: kill now) and SIGUSR1 opens the
    next rollout wave, while the engine runs.
    """

    def __init__(
        self, registry: ExecutorRegistry | None = None, *, handle_signals: bool = True
    ) -> None:
        self.registry = registry if registry is not None else default_registry()
        self.handle_signals = handle_signals

    def run(
        self,
        req: RunRequest,
        *,
        notify: Notify,
        console: ConsoleFactory | None = None,
        control: RunControl | None = None,
    ) -> RunOutcome:
        """Do what ``req`` asks: ``prepare`` it, then ``execute`` it.

        Raises ``FleetrunError`` subclasses for bad plans, usage and state
        problems; ``KeyboardInterrupt`` only when Ctrl-C comes before the
        engine's own handler is in place.
        """
        prepared = self.prepare(req, notify=notify)
        if isinstance(prepared, RunOutcome):
            return prepared
        return self.execute(prepared, notify=notify, console=console, control=control)

    @staticmethod
    def prepare(req: RunRequest, *, notify: Notify) -> PreparedRun | RunOutcome:
        """Load, lock, recover and plan; an outcome where no run and no lock is
        needed (an ``apply`` dry run, nothing to resume). A ``PreparedRun`` holds
        the lock until ``execute`` (or its ``close()``)."""
        return prepare(req, notify)

    def execute(
        self,
        prepared: PreparedRun,
        *,
        notify: Notify,
        console: ConsoleFactory | None = None,
        control: RunControl | None = None,
    ) -> RunOutcome:
        """Look for orphans, run what ``prepared`` holds, in one event loop; close
        it (journal, lock) whatever happens.

        ``console`` is called once, just before the run is journaled (a console
        that cannot open leaves no run behind); ``control`` lets the caller
        interrupt the run (default: one of the session's own).
        """
        try:
            if not prepared.orphans.needed and isinstance(prepared.work, RunOutcome):
                return prepared.work  # nothing asynchronous to do
            return asyncio.run(self._execute(prepared, notify, console, control))
        finally:
            prepared.close()

    async def _execute(
        self,
        prepared: PreparedRun,
        notify: Notify,
        console: ConsoleFactory | None,
        control: RunControl | None,
    ) -> RunOutcome:
        await self._orphans(prepared, notify)
        if isinstance(prepared.work, RunOutcome):
            return prepared.work
        return await self._run(prepared, prepared.work, notify, console, control)

    # -- steps ------------------------------------------------------------------

    async def _orphans(self, prepared: PreparedRun, notify: Notify) -> None:
        """Say what dead runs left running; end it with ``--kill-orphans``.

        Without ``--kill-orphans``, a run that would start an instance whose
        attempt in a dead run is still running is refused (``RunLockedError``,
        exit 3), naming those attempts and the command that ends them first:
        two copies of one step never run side by side. What else is found
        (processes of instances this run does not start) is only reported.
        """
        search: OrphanSearch = prepared.orphans
        if not search.needed:
            return
        finders = self.registry.orphan_finders(search.kinds, prepared.plan)
        orphans = await _find_orphans(finders, search.attempts, search.dead_runs)
        if not orphans:
            return
        for o in orphans:
            notify(
                Notice(
                    "orphan",
                    f"orphan: {o.key} (run {o.run_id}, attempt {o.attempt}): {o.describe()}",
                )
            )
        if search.kill:
            await _end_orphans(finders, orphans, search.grace)
            outside = sum(len(o.outside) for o in orphans)
            left = f" and {outside} process(es) that left them" if outside else ""
            notify(Notice("orphan", f"ended {len(orphans)} orphaned process group(s){left}"))
            return
        still = _still_running(prepared, orphans)
        if still:
            raise RunLockedError(_still_running_text(prepared.request, still))
        else:
            notify(
                Notice(
                    "note", "note: these still run; --kill-orphans ends them before the run starts"
                )
            )

    async def _run(
        self,
        prepared: PreparedRun,
        work: PlannedRun,
        notify: Notify,
        console_factory: ConsoleFactory | None,
        control: RunControl | None,
    ) -> RunOutcome:
        setup, options, entry = work.setup, work.options, work.entry
        req, graph, redactor = setup.request, setup.graph, setup.redactor
        run_id, run_dir, journal = setup.run_id, setup.run_dir, prepared.journal
        # Built before the run is journaled: a console that cannot open (a bad
        # --events path) is a usage error that leaves no run behind.
        console: Console | None = console_factory(setup) if console_factory is not None else None
        journal.begin_run(
            run_id=run_id,
            parent_id=setup.parent_id,
            plan_path=entry.plan_path,
            plan_name=graph.plan.name,
            plan_hash=graph.plan.source_hash,
            plan_snapshot=entry.plan_snapshot,
            mode=req.mode,
            kind=req.kind,
            options=entry.options,
            instances=entry.instances,
            redact=redactor.for_json().redact,
        )
        parent = ""
        if setup.parent_id:
            # Which run it continues, and with which variables (a plan driven by
            # `--var action=...` has runs that differ only there).
            of = describe_run(journal.run(setup.parent_id))
            parent = f" ({req.kind} of {setup.parent_id}, {of})"
        notify(
            Notice(
                "start",
                f"run {run_id}{parent}: {work.count} instance(s) to run, logs in {run_dir}",
            )
        )
        control = control if control is not None else RunControl()
        # A journal that cannot record (full disk) stops the run as Ctrl-C would.
        writer = JournalWriter(journal.db_path, run_id, redactor, on_failure=control.interrupt)
        status = "failed"
        writer.start()
        if console is not None:
            # The console says only what the journal holds: it is told each
            # event once committed, and what could not be (a full disk).
            writer.follow(console.subscribers, lambda text: notify(Notice("note", text)))
            console.start()
        try:
            subscribers: tuple[Subscriber, ...] = (writer,)
            result = await self._drive(
                graph, options, work.kinds, subscribers, control, writer, notify, req.cluster
            )
            status = result.status
        except (KeyboardInterrupt, asyncio.CancelledError):
            # Ctrl-C before the engine's own handler was in place.
            status = "interrupted"
            raise
        except BaseExceptionGroup as group:
            # The engine's task group wraps what a subscriber raised (a journal
            # write that failed): report the fleetrun error, not a traceback.
            first = _first_fleetrun_error(group)
            if first is None:
                raise
            raise first from group
        finally:
            try:
                try:
                    writer.flush_followers()
                finally:
                    if console is not None:
                        console.stop()
            finally:
                _finish(writer, journal, run_id, status, run_dir)
        report = console.report(result) if console is not None else None
        return RunOutcome(
            result.status, result=result, graph=graph, parent_id=setup.parent_id, report=report
        )

    async def _drive(
        self,
        graph: Graph,
        options: RunOptions,
        kinds: Iterable[str],
        subscribers: Sequence[Subscriber],
        control: RunControl,
        writer: JournalWriter,
        notify: Notify,
        req_cluster: str | None = None,
    ) -> RunResult:
        loop = asyncio.get_running_loop()
        presses = 0

        def on_signal(signum: int) -> None:
            nonlocal presses
            presses += 1
            name = signal.Signals(signum).name
            if presses == 1:
                text = (
                    f"{name}: stopping; running tasks get {options.grace:g}s to end "
                    "(again to kill them now)"
                )
            else:
                text = f"{name}: killing running tasks now"
            # First: whatever telling the user costs (a console gone away), the
            # run stops as asked.
            control.interrupt()
            try:
                notify(Notice("signal", text, error=True))
            except Exception as e:  # a console gone away: the run stops all the same
                log.info("%s: the notice could not be shown: %s: %s", name, type(e).__name__, e)

        signals = (signal.SIGINT, signal.SIGTERM) if self.handle_signals else ()
        for sig in signals:
            loop.add_signal_handler(sig, on_signal, sig)
        if self.handle_signals:
            # `fleetrun promote` from another terminal opens the next rollout wave,
            # the one it wrote in the run's promote file.
            promote_file = RunLayout(options.run_dir).promote_file
            loop.add_signal_handler(
                signal.SIGUSR1, lambda: control.promote_wave(_promoted_wave(promote_file))
            )
        executors = self.registry.create(
            kinds, ExecutorContext(options.grace, graph.plan, req_cluster)
        )
        try:
            return await run_graph(
                graph, options, executors, subscribers, control=control, durable=writer.durable
            )
        finally:
            await self.registry.close(executors)
            for sig in signals:
                loop.remove_signal_handler(sig)
            if self.handle_signals:
                loop.remove_signal_handler(signal.SIGUSR1)


def _promoted_wave(path: Path) -> int | None:
    """The wave a ``fleetrun promote`` approved (its promote file), or None: the next."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _finish(
    writer: JournalWriter, journal: Journal, run_id: str, status: str, run_dir: Path
) -> None:
    """Stop the writer and close the run on record, whatever failed; raise the
    first failure (the writer's cause, e.g. a full disk) once, after trying all."""
    error: BaseException | None = None
    try:
        writer.close()
    except FleetrunError as e:
        error = e
    try:
        # Also reconciles attempts the writer could not record, from their logs.
        journal.end_run(run_id, "interrupted" if error is not None else status)
    except FleetrunError as e:
        error = error or e
    # A task's shell creates its outputs file under its own umask.
    tighten_tree(RunLayout(run_dir).outputs)
    if error is not None:
        raise error


async def _find_orphans(
    finders: Mapping[str, OrphanFinder],
    attempts: Sequence[RecordedAttempt],
    dead: Sequence[str],
) -> list[Orphan]:
    found: list[Orphan] = []
    for kind, finder in finders.items():
        mine = [a for a in attempts if a.handle.kind == kind]
        # Only the local finder can look for untracked processes of dead runs.
        found += await finder.find(mine, dead if kind == "local" else [])
    return _one_per_attempt(found, attempts)


def _one_per_attempt(found: Sequence[Orphan], attempts: Sequence[RecordedAttempt]) -> list[Orphan]:
    """Each attempt's orphan once. An SSH target that is this machine is seen by
    two finders (the local one finds the processes by their run id too): the
    one of the attempt's own kind is kept, in the order first found."""
    kind_of = {(a.run_id, a.key, a.attempt): a.handle.kind for a in attempts}
    chosen: dict[tuple[str, str, int], Orphan] = {}
    for o in found:
        at = (o.run_id, o.key, o.attempt)
        have = chosen.get(at)
        own = kind_of.get(at)
        if have is None or (have.handle.kind != own and o.handle.kind == own):
            chosen[at] = o
    return list(chosen.values())


async def _end_orphans(
    finders: Mapping[str, OrphanFinder], orphans: Sequence[Orphan], grace: float
) -> None:
    for kind, finder in finders.items():
        mine = [o for o in orphans if o.handle.kind == kind]
        if mine:
            await finder.end(mine, grace)


def _still_running(prepared: PreparedRun, orphans: Sequence[Orphan]) -> list[Orphan]:
    """The orphans that are attempts of instances this run would start again: the
    attempts that were running when their run died and still are."""
    work = prepared.work
    if isinstance(work, RunOutcome):
        return []
    graph, only = work.setup.graph, work.setup.only
    starting = {n.key for i, n in enumerate(graph.nodes) if only is None or i in only}
    running = {(a.run_id, a.key, a.attempt) for a in prepared.orphans.attempts}
    return [o for o in orphans if o.key in starting and (o.run_id, o.key, o.attempt) in running]


def _still_running_text(req: RunRequest, still: Sequence[Orphan]) -> str:
    """Why the run is refused, and the command that ends the attempts first."""
    shown = "; ".join(f"{o.key} (run {o.run_id}, attempt {o.attempt})" for o in still[:5])
    more = f" and {len(still) - 5} more" if len(still) > 5 else ""
    where = shlex.quote(req.plan) if req.plan else ""
    if req.kind == "resume":
        command = f"fleetrun apply --resume --kill-orphans {where}"
    elif req.kind == "retry":
        command = "fleetrun retry --kill-orphans" + (f" --plan {where}" if where else "")
    else:
        command = f"fleetrun apply --kill-orphans {where}"
    return (
        f"{len(still)} attempt(s) of a run that died still run, and this run would start "
        f"them again beside them: {shown}{more}; wait until they end and run this again, "
        f"or end them first: {command.strip()}"
    )


def _first_fleetrun_error(group: BaseExceptionGroup[BaseException]) -> FleetrunError | None:
    for exc in group.exceptions:
        if isinstance(exc, FleetrunError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first_fleetrun_error(exc)
            if found is not None:
                return found
    return None


__all__ = ["Session"]
