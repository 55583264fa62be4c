"""A run's first step: from a request to a ``PreparedRun`` under its plan's lock,
or to an outcome that needs no run.

Order matters: the plan is loaded and the selection checked before the state
directory is touched (a bad plan raises and leaves no trace); the lock is
taken before the record is read for a retry, so the run retried cannot change
underneath. Nothing here runs an event loop: looking for orphans, ending them
and the run itself are ``Session.execute``'s, in one loop.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetrun.diagnostics import note_secrets
from fleetrun.engine import DEFAULT_GRACE, RunOptions, check_pools_dir, new_run_id
from fleetrun.errors import RunLockedError, StateError, UsageError
from fleetrun.executors import RecordedAttempt
from fleetrun.layout import RUN_DIRS, RUNS_DIR, RunLayout, shared_pools_dir
from fleetrun.plan import (
    ALL_TARGETS,
    Graph,
    Plan,
    UnreadableFile,
    empty_tasks_error,
    expand,
    read_bounded,
    selection_closure,
    split_names,
)
from fleetrun.redact import Redactor
from fleetrun.session._request import (
    Notice,
    RunOutcome,
    RunRequest,
    RunSetup,
    find_state_dir,
)
from fleetrun.session._reuse import selection_reuse
from fleetrun.session._select import select_run
from fleetrun.session._views import dry_run_lines, reason_lines
from fleetrun.state import (
    DB_NAME,
    EXEC_SUFFIX,
    Journal,
    NewInstance,
    RetryPlan,
    RunLock,
    RunRecord,
    check_free_space,
    check_state_dir,
    plan_retry,
    prepare_state_dir,
    private_dirs,
)

if TYPE_CHECKING:
    from fleetrun.plan import ExecRequest

Notify = Callable[[Notice], None]


@dataclass(frozen=True, slots=True)
class OrphanSearch:
    """What recovering the journal found that may have left processes running.

    ``attempts``: attempts that were running when their run died (with their
    handles); ``dead_runs``: this host's interrupted runs; ``kill``: end what
    is found (``--kill-orphans``), each within ``grace`` seconds.
    """

    attempts: tuple[RecordedAttempt, ...] = ()
    dead_runs: tuple[str, ...] = ()
    kill: bool = False
    grace: float = DEFAULT_GRACE

    @property
    def needed(self) -> bool:
        """True when there is anything to look for."""
        return bool(self.attempts or self.dead_runs)

    @property
    def kinds(self) -> frozenset[str]:
        """The executor kinds to ask (``local`` always: it also finds untracked
        processes of dead runs)."""
        return frozenset({a.handle.kind for a in self.attempts} | {"local"})


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """The run as the journal records it when it begins, beyond what its
    ``RunSetup`` and ``RunOptions`` say."""

    plan_path: str
    plan_snapshot: str
    options: Mapping[str, Any]
    instances: tuple[NewInstance, ...]


@dataclass(frozen=True, slots=True)
class PlannedRun:
    """A run decided: ``setup`` for the console, ``options`` for the engine, the
    executor ``kinds`` its instances use, and its journal ``entry``. Its run
    directory exists (with ``vars.json`` where variables were given).

    ``pulled_in``: the keys of the instances an ``apply --targets/--tasks``
    starts although the selection does not name them (what it needs that has
    no usable record); the caller may ask before executing.
    """

    setup: RunSetup
    options: RunOptions
    kinds: frozenset[str]
    entry: JournalEntry
    pulled_in: tuple[str, ...] = ()

    @property
    def count(self) -> int:
        """How many instances the run starts."""
        only = self.setup.only
        return len(only) if only is not None else len(self.setup.graph.nodes)


@dataclass(frozen=True, slots=True)
class PreparedRun:
    """A request made ready under its plan's lock.

    ``work``: the run to execute, or how the request ends without one (a
    retry's dry run, nothing left to retry) once ``orphans`` were looked for.
    ``lock`` stays held and ``journal`` open until ``close()``
    (``Session.execute`` closes it, whatever happens).
    """

    request: RunRequest
    plan: Plan
    journal: Journal
    lock: RunLock
    orphans: OrphanSearch
    work: PlannedRun | RunOutcome

    def close(self) -> None:
        """Close the journal and release the lock (safe to call twice)."""
        try:
            self.journal.close()
        finally:
            self.lock.release()


def prepare(req: RunRequest, notify: Notify) -> PreparedRun | RunOutcome:
    """Load, lock, recover and plan what ``req`` asks; an outcome when no run and
    no lock is needed (an ``apply`` dry run, nothing to resume).

    Raises ``FleetrunError`` subclasses for bad plans, usage and state problems.
    """
    state_dir = find_state_dir(req.state_dir, req.plan)
    if req.kind == "apply":
        return _prepare(req, state_dir, None, notify)
    journal = Journal.open_existing(state_dir)
    try:
        journal.recover()
        previous = select_run(journal, req.run_ref, req.plan)
    finally:
        journal.close()
    # Resume continues the latest run only: resuming an older one would re-run
    # what a newer run has done since. A live one is refused by its lock, as
    # `apply` and `retry` are (exit 3).
    if req.kind == "resume" and previous.status not in ("interrupted", "running"):
        if previous.status == "succeeded":
            notify(Notice("nothing", f"nothing to resume: the latest run {previous.id} succeeded"))
            return RunOutcome("nothing")
        raise UsageError(
            f"the latest run {previous.id} is {previous.status}, not interrupted; "
            "`fleetrun retry` re-runs what did not succeed"
        )
    return _prepare(req, state_dir, previous, notify)


def _prepare(
    req: RunRequest, state_dir: Path, previous: RunRecord | None, notify: Notify
) -> PreparedRun | RunOutcome:
    # The plan reader (pydantic, YAML) loads here, not when the session is imported:
    # the commands that only read the record never need it.
    from fleetrun.plan import ExecRequest, exec_plan, load_plan

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
    note_secrets(plan.secret_values)
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
    extras: dict[int, str] = {}
    if targets or tasks:
        narrow, extras = selection_closure(graph, targets, tasks)
    # An apply whose selection needs more than it names reuses what has a usable
    # record in the plan's earlier runs (decided under the lock, in `_plan_run`).
    reuse = bool(
        extras and previous is None and exec_req is None and (state_dir / DB_NAME).is_file()
    )
    if extras and not reuse:
        _pulled_in(graph, extras, req, notify)

    if req.dry_run and previous is None:
        if narrow is None or not reuse:
            return RunOutcome("dry_run", lines=tuple(dry_run_lines(graph, narrow, {})))
        # Read, neither locked nor recovered: a dry run may look while the plan runs.
        with Journal.open_existing(state_dir) as journal:
            chosen = _selection_run(graph, journal, plan_file, (narrow, extras), req, notify)
        return RunOutcome("dry_run", lines=tuple(dry_run_lines(graph, chosen.only, chosen.reused)))

    if any(p.shared for p in plan.pools.values()):
        check_pools_dir(shared_pools_dir())  # refused before anything is recorded
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
    with contextlib.ExitStack() as undo:
        undo.callback(lock.release)
        journal = undo.enter_context(Journal(state_dir))
        orphans = _recover(journal, lock, req, notify)
        work = _plan_run(
            req,
            overrides,
            exec_req,
            plan_file,
            graph,
            journal,
            run_id,
            previous,
            (narrow, extras, reuse),
            (targets, tasks),
            notify,
        )
        prepared = PreparedRun(req, plan, journal, lock, orphans, work)
        undo.pop_all()  # the prepared run holds them now
    return prepared


def _pulled_in(
    graph: Graph, extras: Mapping[int, str], req: RunRequest, notify: Notify, shown: int = 8
) -> None:
    """Say which instances beyond the named ones a selection runs, and why
    (``extras``: id -> reason; ``--only``: refuse instead)."""
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
            Notice("note", f"  and {len(keys) - shown} more (`fleetrun plan --targets` lists them)")
        )


def _selection_run(
    graph: Graph,
    journal: Journal,
    plan_file: str,
    selection: tuple[frozenset[int], Mapping[int, str]],
    req: RunRequest,
    notify: Notify,
) -> RetryPlan:
    """What an apply whose selection (all selected ids, and id -> why for those
    it needs but does not name) needs more than it names runs and reuses
    (``selection_reuse``); says how many it reuses and from which runs, and
    lists what it still pulls in (``--only``: refuses it)."""
    narrow, needs = selection
    redactor = Redactor(graph.plan.secret_values)
    path = str(Path(plan_file).resolve())
    chosen = selection_reuse(graph, journal, path, redactor, narrow, needs)
    if chosen.reused:
        by_run: dict[str, int] = {}
        for i in chosen.reused:
            by_run[chosen.reused_from[i]] = by_run.get(chosen.reused_from[i], 0) + 1
        runs = ", ".join(f"{n} from run {r}" for r, n in sorted(by_run.items()))
        notify(
            Notice(
                "note",
                f"reuses {len(chosen.reused)} instance(s) the selection needs that succeeded "
                f"with the same command ({runs})",
            )
        )
    _pulled_in(graph, {i: chosen.reasons[i] for i in chosen.only if i in needs}, req, notify)
    return chosen


def _recover(journal: Journal, lock: RunLock, req: RunRequest, notify: Notify) -> OrphanSearch:
    """Settle what dead runs left on record; say so; return where their orphans may be."""
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
    return OrphanSearch(
        tuple(journal.interrupted_attempts()),
        tuple(journal.dead_runs()),
        kill=req.kill_orphans,
        grace=req.grace,
    )


def _plan_run(
    req: RunRequest,
    overrides: Mapping[str, str],
    exec_req: ExecRequest | None,
    plan_file: str,
    graph: Graph,
    journal: Journal,
    run_id: str,
    previous: RunRecord | None,
    selection: tuple[frozenset[int] | None, Mapping[int, str], bool],
    names: tuple[list[str] | None, list[str] | None],
    notify: Notify,
) -> PlannedRun | RunOutcome:
    """What the run does (a retry: what did not succeed in ``previous``; a
    selection: what it names and what it needs that has no usable record), or
    how the request ends without one.

    ``selection``: the selected instances (None: all), those of them the
    selection needs but does not name (id -> why), and whether those may be
    reused from the plan's earlier runs (an apply with a journal)."""
    plan = graph.plan
    redactor = Redactor(plan.secret_values)
    narrow, needs, reuse = selection
    retry: RetryPlan | None = None
    pulled_in: tuple[str, ...] = ()
    if previous is not None:
        # Re-read under the lock: the record is final now.
        previous = journal.run(previous.id)
        if previous.status == "running":
            # Live elsewhere (another host): its lock here did not stop us.
            raise RunLockedError(
                f"run {previous.id} is still running (pid {previous.pid} on {previous.host}); "
                f"wait for it to finish or stop it first (`fleetrun cancel {previous.id}`)"
            )
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
    elif narrow is not None and reuse:
        retry = _selection_run(graph, journal, plan_file, (narrow, needs), req, notify)
        pulled_in = tuple(graph.nodes[i].key for i in sorted(retry.only) if i in needs)
    else:
        pulled_in = tuple(graph.nodes[i].key for i in sorted(needs))

    only = retry.only if retry is not None else narrow
    reused = retry.reused if retry is not None else {}
    # Owner-only, created without following links; the engine adds
    # logs/<task> and outputs/<task> below.
    run_dir = private_dirs(journal.state_dir, RUNS_DIR, run_id, new=True)
    for sub in RUN_DIRS:
        private_dirs(run_dir, sub)
    if overrides:
        # Exactly, owner-only: a retry of this run reuses them.
        _write_private(RunLayout(run_dir).vars_file, json.dumps(dict(overrides)).encode())
    options = RunOptions(
        run_id=run_id,
        run_dir=run_dir,
        mode=req.mode,
        parallelism=req.parallelism,
        fail_fast=req.fail_fast,
        grace=req.grace,
        only=only,
        reused=reused,
        reused_from=retry.reused_from if retry is not None else {},
        redactor=redactor,
        output="stream" if req.output == "stream" else "none",
        # A retry or resume continues the rollout where its run stopped.
        waves_opened=0 if previous is None or req.rollout else journal.waves_opened(previous, plan),
        pools_dir=shared_pools_dir(),  # shared pools coordinate through it
    )
    path = Path(plan_file).resolve()
    members = sorted(set(range(len(graph.nodes))) if only is None else only | set(reused))
    entry = JournalEntry(
        # Exec runs are recorded apart, so `--plan PLAN` keeps meaning the
        # plan's own runs (retry, show, outputs, report, prune).
        plan_path=str(path) + (EXEC_SUFFIX if exec_req is not None else ""),
        # Both forms: a secret with quotes or backslashes is escaped in YAML text.
        plan_snapshot=redactor.for_json().redact(redactor.redact(_plan_text(path))),
        options={
            "mode": req.mode,
            "parallelism": req.parallelism,
            "fail_fast": req.fail_fast,
            "grace": req.grace,
            "waves_opened": options.waves_opened,
            "targets": names[0],
            "tasks": names[1],
            "vars": {k: redactor.redact(v) for k, v in overrides.items()},
            **({"exec": exec_req.to_json()} if exec_req is not None else {}),
        },
        instances=tuple(
            NewInstance(
                key=graph.nodes[i].key,
                node=i,
                task=graph.nodes[i].task,
                target=graph.nodes[i].target,
                reused_outputs=reused.get(i),
                command_hash=retry.reused_hashes.get(i) if retry else None,
                reused_from=retry.reused_from.get(i) if retry else None,
            )
            for i in members
        ),
    )
    parent_id = previous.id if previous is not None else None
    setup = RunSetup(req, graph, run_id, run_dir, only, redactor, parent_id)
    kinds = frozenset(plan.tasks[graph.nodes[i].task].runs_on for i in members)
    return PlannedRun(setup, options, kinds, entry, pulled_in)


def _var_overrides(req: RunRequest, state_dir: Path, previous: RunRecord | None) -> dict[str, str]:
    """The variables a run gets from the command line: those of the run it continues,
    then ``--var-file`` files in order, then ``--var`` values (later ones win)."""
    out: dict[str, str] = {}
    if previous is not None:
        try:
            data = RunLayout.of(state_dir, previous.id).vars_file.read_bytes()
            loaded = json.loads(data)
        except FileNotFoundError:
            loaded = {}
        except (OSError, ValueError) as e:
            raise StateError(
                f"cannot read the variables of run {previous.id}: {e}; give them again with --var"
            ) from None
        out.update({str(k): str(v) for k, v in loaded.items()})
    from fleetrun.plan import parse_var_args, read_var_file

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


def _plan_text(path: Path) -> str:
    """The plan file's text for the run's record, read as the loader read it (a
    regular file of bounded size): one that changed into something else since
    it was loaded is a usage error, not a snapshot of a stream."""
    try:
        return read_bounded(path).decode("utf-8", errors="replace")
    except UnreadableFile as e:
        raise UsageError(f"{path}: {e.reason} (it changed since it was read)") from None
