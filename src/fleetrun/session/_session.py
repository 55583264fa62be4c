"""One run from request to result: ``apply``, ``apply --resume`` and ``retry``.

Order matters: the plan is loaded and the selection checked before the state
directory is touched (a bad plan raises and leaves no trace); the lock is
taken before the record is read for a retry, so the run retried cannot change
underneath. The session never prints: what the user should be told goes to
the ``notify`` callback as ``Notice`` values, and the outcome comes back as a
``RunOutcome``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from fleetrun.engine import RunControl, RunOptions, RunResult, new_run_id, run_graph
from fleetrun.errors import FleetrunError, RunNotFoundError, StateError, UsageError
from fleetrun.executors import OrphanFinder
from fleetrun.plan import (
    ALL_TARGETS,
    ExecRequest,
    Graph,
    Plan,
    empty_tasks_error,
    exec_plan,
    expand,
    load_plan,
    parse_var_args,
    read_var_file,
    selection_closure,
    split_names,
)
from fleetrun.redact import Redactor
from fleetrun.session._executors import ExecutorContext, ExecutorRegistry, default_registry
from fleetrun.session._request import (
    ConsoleFactory,
    Notice,
    RunOutcome,
    RunRequest,
    RunSetup,
    find_state_dir,
)
from fleetrun.session._views import dry_run_lines, reason_lines
from fleetrun.state import (
    Journal,
    JournalWriter,
    NewInstance,
    RetryPlan,
    RunLock,
    RunRecord,
    check_free_space,
    check_state_dir,
    plan_retry,
    prepare_state_dir,
    private_dirs,
    tighten_tree,
)

Notify = Callable[[Notice], None]


class Session:
    """Runs requests against state directories with the executors of ``registry``.

    ``registry`` maps each executor kind to a factory (``default_registry()``:
    ``local``). ``handle_signals``: SIGINT/SIGTERM interrupt the run (first:
    graceful; again: kill now) while the engine runs.
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
        """Do what ``req`` asks; see the module docstring.

        Raises ``FleetrunError`` subclasses for bad plans, usage and state
        problems; ``KeyboardInterrupt`` only when Ctrl-C comes before the
        engine's own handler is in place.
        """
        state_dir = find_state_dir(req.state_dir, req.plan)
        if req.kind == "apply":
            return self._start(req, state_dir, None, notify, console, control)
        journal = Journal.open_existing(state_dir)
        try:
            journal.recover()
            plan_path = str(Path(req.plan).resolve()) if req.plan else None
            try:
                previous = journal.run(req.run_ref, plan_path=plan_path)
            except RunNotFoundError:
                if plan_path is None or req.run_ref is not None:
                    raise
                # A fleet file (or plan) that only `fleetrun exec` ran.
                previous = journal.run(None, plan_path=plan_path + EXEC_SUFFIX)
        finally:
            journal.close()
        # Resume continues the latest run only: resuming an older one would re-run
        # what a newer run has done since.
        if req.kind == "resume" and previous.status != "interrupted":
            if previous.status == "succeeded":
                notify(
                    Notice("nothing", f"nothing to resume: the latest run {previous.id} succeeded")
                )
                return RunOutcome("nothing")
            raise UsageError(
                f"the latest run {previous.id} is {previous.status}, not interrupted; "
                "`fleetrun retry` re-runs what did not succeed"
            )
        return self._start(req, state_dir, previous, notify, console, control)

    # -- steps ------------------------------------------------------------------

    def _start(
        self,
        req: RunRequest,
        state_dir: Path,
        previous: RunRecord | None,
        notify: Notify,
        console: ConsoleFactory | None,
        control: RunControl | None,
    ) -> RunOutcome:
        exec_req = req.exec_request
        if exec_req is None and previous is not None and previous.options.get("exec"):
            exec_req = ExecRequest.from_json(previous.options["exec"])
        plan_file = req.plan or (previous.plan_path if previous else None)
        if exec_req is not None:
            plan_file = exec_req.file
        if plan_file is None:
            raise UsageError("no plan given")
        overrides = _var_overrides(req, state_dir, previous)
        if exec_req is not None:
            plan = exec_plan(exec_req)
        else:
            plan = load_plan(Path(plan_file), var_overrides=overrides)
        graph = expand(plan)
        empty = empty_tasks_error(graph)
        if empty is not None:
            raise empty
        targets = split_names(req.targets, {*plan.targets, *plan.groups, ALL_TARGETS})
        tasks = split_names(req.tasks, plan.tasks)
        for flag, given, names in (
            ("--targets", req.targets, targets),
            ("--tasks", req.tasks, tasks),
        ):
            if given and names is None:
                # An unset shell variable (`--targets "$REGIONS"`) must not mean "all".
                raise UsageError(f"{flag} names nothing; give names, or leave {flag} out")
        narrow = None
        if targets or tasks:
            narrow, extras = selection_closure(graph, targets, tasks)
            self._pulled_in(graph, extras, req, notify)
        redactor = Redactor(plan.secret_values)

        if req.dry_run and previous is None:
            return RunOutcome("dry_run", lines=tuple(dry_run_lines(graph, narrow, {})))

        run_id = new_run_id()
        if previous is None:
            prepare_state_dir(state_dir)
        else:
            check_state_dir(state_dir)
        check_free_space(state_dir)
        # One lock per plan; an exec of a plan is a plan of its own (``<plan>.exec``),
        # so it may run while that plan deploys.
        lock_key = str(Path(plan_file).resolve()) + (EXEC_SUFFIX if exec_req is not None else "")
        lock = RunLock(state_dir, lock_key)
        lock.acquire(run_id)
        try:
            with Journal(state_dir) as journal:
                self._recover(journal, lock, req, notify, plan)
                retry: RetryPlan | None = None
                if previous is not None:
                    # Re-read under the lock: the record is final now.
                    previous = journal.run(previous.id)
                    retry = plan_retry(
                        graph,
                        previous,
                        journal.instances(previous.id),
                        redactor,
                        narrow,
                        exact=journal.exact_outputs(previous.id),
                    )
                    if plan.source_hash != previous.plan_hash:
                        notify(Notice("note", f"note: the plan changed since run {previous.id}"))
                    if req.dry_run:
                        lines = dry_run_lines(graph, retry.only, retry.reused)
                        return RunOutcome("dry_run", lines=tuple(lines))
                    if not retry.only:
                        within = " among the selected instances" if narrow is not None else ""
                        notify(
                            Notice(
                                "nothing",
                                f"nothing to {req.kind}: everything{within} in run "
                                f"{previous.id} succeeded or was reused",
                            )
                        )
                        return RunOutcome("nothing")
                    for line in reason_lines(graph, retry.reasons):
                        notify(Notice("rerun", line))
                return self._run(
                    req,
                    overrides,
                    exec_req,
                    plan_file,
                    graph,
                    journal,
                    run_id,
                    previous,
                    narrow,
                    retry,
                    (targets, tasks),
                    notify,
                    console,
                    control,
                )
        finally:
            lock.release()

    @staticmethod
    def _pulled_in(
        graph: Graph, extras: Mapping[int, str], req: RunRequest, notify: Notify, shown: int = 8
    ) -> None:
        """Say which instances beyond the named ones a selection runs, and why
        (``--only``: refuse instead)."""
        if not extras:
            return
        keys = [graph.nodes[i].key for i in sorted(extras)]
        if req.only:
            listed = ", ".join(keys[:shown]) + (
                f" and {len(keys) - shown} more" if len(keys) > shown else ""
            )
            raise UsageError(
                f"--only: the selection needs {len(keys)} instance(s) it does not name "
                f"({listed}); name them too, or drop --only to run them"
            )
        notify(Notice("note", f"also runs {len(keys)} instance(s) the selection needs:"))
        for i in sorted(extras)[:shown]:
            notify(Notice("note", f"  {graph.nodes[i].key}: {extras[i]}"))
        if len(keys) > shown:
            notify(
                Notice(
                    "note", f"  and {len(keys) - shown} more (`fleetrun plan --targets` lists them)"
                )
            )

    def _recover(
        self, journal: Journal, lock: RunLock, req: RunRequest, notify: Notify, plan: Plan
    ) -> None:
        if lock.stale:
            prev = lock.previous
            notify(
                Notice(
                    "note",
                    f"note: took over the lock of run {prev.get('run_id')} (pid "
                    f"{prev.get('pid')} on {prev.get('host')}), which is no longer running",
                )
            )
        for run_id in journal.recover():
            notify(Notice("note", f"note: run {run_id} was interrupted (its process is gone)"))
        attempts = journal.interrupted_attempts()
        dead = journal.dead_runs()
        if not attempts and not dead:
            return
        kinds = {a.handle.kind for a in attempts} | {"local"}
        finders = self.registry.orphan_finders(kinds, plan)
        orphans = asyncio.run(_find_orphans(finders, attempts, dead))
        if not orphans:
            return
        for o in orphans:
            notify(
                Notice(
                    "orphan",
                    f"orphan: {o.key} (run {o.run_id}, attempt {o.attempt}): {o.describe()}",
                )
            )
        if req.kill_orphans:
            asyncio.run(_end_orphans(finders, orphans, req.grace))
            notify(Notice("orphan", f"ended {len(orphans)} orphaned process group(s)"))
        else:
            notify(
                Notice(
                    "note", "note: these still run; --kill-orphans ends them before the run starts"
                )
            )

    def _run(
        self,
        req: RunRequest,
        overrides: Mapping[str, str],
        exec_req: ExecRequest | None,
        plan_file: str,
        graph: Graph,
        journal: Journal,
        run_id: str,
        previous: RunRecord | None,
        narrow: frozenset[int] | None,
        retry: RetryPlan | None,
        names: tuple[list[str] | None, list[str] | None],
        notify: Notify,
        console_factory: ConsoleFactory | None,
        control: RunControl | None,
    ) -> RunOutcome:
        plan = graph.plan
        redactor = Redactor(plan.secret_values)
        only = retry.only if retry is not None else narrow
        reused = retry.reused if retry is not None else {}
        # Owner-only, created without following links; the engine adds
        # logs/<task> and outputs/<task> below.
        run_dir = private_dirs(journal.state_dir, "runs", run_id, new=True)
        private_dirs(run_dir, "logs")
        private_dirs(run_dir, "outputs")
        if overrides:
            # Exactly, owner-only: a retry of this run reuses them.
            _write_private(run_dir / VARS_FILE, json.dumps(dict(overrides)).encode())
        options = RunOptions(
            run_id=run_id,
            run_dir=run_dir,
            mode=req.mode,  # type: ignore[arg-type]
            parallelism=req.parallelism,
            fail_fast=req.fail_fast,  # type: ignore[arg-type]
            grace=req.grace,
            only=only,
            reused=reused,
            redactor=redactor,
            output="stream" if req.output == "stream" else "none",
        )
        path = Path(plan_file).resolve()
        members = sorted(set(range(len(graph.nodes))) if only is None else only | set(reused))
        # Built before the run is journaled: a console that cannot open (a bad
        # --events path) is a usage error that leaves no run behind.
        console = (
            console_factory(RunSetup(req, graph, run_id, run_dir, only, redactor))
            if console_factory is not None
            else None
        )
        journal.begin_run(
            run_id=run_id,
            parent_id=previous.id if previous else None,
            # Exec runs are recorded apart, so `--plan PLAN` keeps meaning the
            # plan's own runs (retry, show, outputs, report, prune).
            plan_path=str(path) + (EXEC_SUFFIX if exec_req is not None else ""),
            plan_name=plan.name,
            plan_hash=plan.source_hash,
            # Both forms: a secret with quotes or backslashes is escaped in YAML text.
            plan_snapshot=redactor.for_json().redact(
                redactor.redact(path.read_text(encoding="utf-8", errors="replace"))
            ),
            mode=req.mode,
            kind=req.kind,
            options={
                "mode": req.mode,
                "parallelism": req.parallelism,
                "fail_fast": req.fail_fast,
                "grace": req.grace,
                "targets": names[0],
                "tasks": names[1],
                "vars": {k: redactor.redact(v) for k, v in overrides.items()},
                **({"exec": exec_req.to_json()} if exec_req is not None else {}),
            },
            instances=[
                NewInstance(
                    key=graph.nodes[i].key,
                    node=i,
                    task=graph.nodes[i].task,
                    target=graph.nodes[i].target,
                    reused_outputs=reused.get(i),
                    command_hash=retry.reused_hashes.get(i) if retry else None,
                )
                for i in members
            ],
            redact=redactor.for_json().redact,
        )
        parent = f" ({req.kind} of {previous.id})" if previous else ""
        count = len(only) if only is not None else len(graph.nodes)
        notify(
            Notice("start", f"run {run_id}{parent}: {count} instance(s) to run, logs in {run_dir}")
        )
        control = control if control is not None else RunControl()
        # A journal that cannot record (full disk) stops the run as Ctrl-C would.
        writer = JournalWriter(journal.db_path, run_id, redactor, on_failure=control.interrupt)
        kinds = {plan.tasks[graph.nodes[i].task].runs_on for i in members}
        status = "failed"
        writer.start()
        if console is not None:
            console.start()
        try:
            subscribers = (writer, *(console.subscribers if console is not None else ()))
            result = asyncio.run(
                self._drive(
                    graph, options, kinds, subscribers, control, writer, notify, req.cluster
                )
            )
            status = result.status
        except KeyboardInterrupt:
            status = "interrupted"  # Ctrl-C before the engine's own handler was in place
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
                if console is not None:
                    console.stop()
            finally:
                _finish(writer, journal, run_id, status, run_dir)
        parent_id = previous.id if previous else None
        return RunOutcome(result.status, result=result, graph=graph, parent_id=parent_id)

    async def _drive(
        self,
        graph: Graph,
        options: RunOptions,
        kinds: Iterable[str],
        subscribers: tuple[Any, ...],
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
            with contextlib.suppress(Exception):
                notify(Notice("signal", text, error=True))

        signals = (signal.SIGINT, signal.SIGTERM) if self.handle_signals else ()
        for sig in signals:
            loop.add_signal_handler(sig, on_signal, sig)
        if self.handle_signals:
            # `fleetrun promote` from another terminal opens the next rollout wave.
            loop.add_signal_handler(signal.SIGUSR1, control.promote)
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
    tighten_tree(run_dir / "outputs")
    if error is not None:
        raise error


async def _find_orphans(
    finders: Mapping[str, OrphanFinder], attempts: list[Any], dead: list[str]
) -> list[Any]:
    found = []
    for kind, finder in finders.items():
        mine = [a for a in attempts if a.handle.kind == kind]
        # Only the local finder can look for untracked processes of dead runs.
        found += await finder.find(mine, dead if kind == "local" else [])
    return found


async def _end_orphans(
    finders: Mapping[str, OrphanFinder], orphans: list[Any], grace: float
) -> None:
    for kind, finder in finders.items():
        mine = [o for o in orphans if o.handle.kind == kind]
        if mine:
            await finder.end(mine, grace)


EXEC_SUFFIX = "#exec"
"""Appended to the plan path under which ``fleetrun exec`` runs are recorded."""

VARS_FILE = "vars.json"
"""A run's ``--var``/``--var-file`` values, exactly, in its run directory (mode 0600)."""


def _var_overrides(req: RunRequest, state_dir: Path, previous: RunRecord | None) -> dict[str, str]:
    """The variables a run gets from the command line: those of the run it continues,
    then ``--var-file`` files in order, then ``--var`` values (later ones win)."""
    out: dict[str, str] = {}
    if previous is not None:
        try:
            data = (state_dir / "runs" / previous.id / VARS_FILE).read_bytes()
            loaded = json.loads(data)
        except FileNotFoundError:
            loaded = {}
        except (OSError, ValueError) as e:
            raise StateError(
                f"cannot read the variables of run {previous.id}: {e}; give them again with --var"
            ) from None
        out.update({str(k): str(v) for k, v in loaded.items()})
    for f in req.var_files:
        out.update(read_var_file(f))
    out.update(parse_var_args(req.vars))
    return out


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` (it must not exist, nor be a link) readable by the owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


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
