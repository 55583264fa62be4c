"""What ``apply``, ``apply --resume`` and ``retry`` share: load the plan, choose the
instances, take the lock, journal the run, drive the engine, map the outcome.

Order matters: the plan is loaded and the selection checked before the state
directory is touched (a bad plan exits 2 and leaves no trace); the lock is
taken before the record is read for a retry, so the run retried cannot change
underneath.
"""

from __future__ import annotations

import asyncio
import heapq
import signal
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import click

from fleetrun.cli._main import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from fleetrun.engine._options import DEFAULT_GRACE, RunOptions, new_run_id
from fleetrun.errors import FleetrunError, UsageError
from fleetrun.plan import Graph, expand, load_plan, select
from fleetrun.redact import Redactor
from fleetrun.state import (
    Journal,
    JournalWriter,
    NewInstance,
    RunLock,
    RunRecord,
    kill_groups,
)
from fleetrun.state._retry import RetryPlan, plan_retry

STATE_DIR_NAME = ".fleetrun"
"""The state directory's name beside the plan (or in the working directory)."""

Kind = Literal["apply", "retry", "resume"]


def find_state_dir(state_dir: str | None, plan: str | None) -> Path:
    """``--state-dir``, else ``.fleetrun`` beside ``--plan``, else ``./.fleetrun``."""
    if state_dir:
        return Path(state_dir).resolve()
    if plan:
        return Path(plan).resolve().parent / STATE_DIR_NAME
    return Path.cwd() / STATE_DIR_NAME


def split_names(values: Sequence[str]) -> list[str] | None:
    """Comma-separated, repeatable ``--targets``/``--tasks`` values; None when absent."""
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    return names or None


@dataclass(frozen=True, slots=True)
class RunRequest:
    """Everything ``apply``/``retry`` were asked on the command line."""

    kind: Kind
    plan: str | None
    state_dir: str | None = None
    run_ref: str | None = None
    mode: str = "dag"
    parallelism: int | None = None
    fail_fast: str | None = None
    targets: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    grace: float = DEFAULT_GRACE
    dry_run: bool = False
    kill_orphans: bool = False
    plain: bool = False
    output: str = "none"
    events: str | None = None


class _Placeholders(Mapping[str, Mapping[str, str]]):
    """Outputs for a dry run: recorded ones where known, ``<task.outputs.key>`` otherwise."""

    def __init__(self, known: Mapping[str, Mapping[str, str]]) -> None:
        self._known = known

    def __getitem__(self, task: str) -> Mapping[str, str]:
        return _TaskPlaceholders(task, self._known.get(task, {}))

    def __iter__(self) -> Iterator[str]:
        return iter(self._known)

    def __len__(self) -> int:
        return len(self._known)

    def __bool__(self) -> bool:
        return True


class _TaskPlaceholders(Mapping[str, str]):
    def __init__(self, task: str, known: Mapping[str, str]) -> None:
        self._task, self._known = task, known

    def __getitem__(self, key: str) -> str:
        return self._known.get(key, f"<{self._task}.outputs.{key}>")

    def __iter__(self) -> Iterator[str]:
        return iter(self._known)

    def __len__(self) -> int:
        return len(self._known)


def start_order(graph: Graph, nodes: frozenset[int] | None) -> list[int]:
    """A topological order of ``nodes`` that starts the critical path first
    (highest rank, then plan order): the order a run would start them in."""
    chosen = set(range(len(graph.nodes))) if nodes is None else set(nodes)
    waiting = {
        i: sum(1 for r in graph.nodes[i].requires for d in r.nodes if d in chosen) for i in chosen
    }
    ready = [(-graph.rank[i], i) for i, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        _, i = heapq.heappop(ready)
        order.append(i)
        for j in graph.dependents[i]:
            if j in waiting:
                waiting[j] -= sum(1 for r in graph.nodes[j].requires for d in r.nodes if d == i)
                if waiting[j] == 0:
                    heapq.heappush(ready, (-graph.rank[j], j))
    return order


def dry_run_lines(
    graph: Graph, nodes: frozenset[int] | None, reused: Mapping[int, Mapping[str, str]]
) -> list[str]:
    """``key: command`` per instance in start order, outputs not yet known as placeholders."""
    redactor = Redactor(graph.plan.secret_values)
    lines = []
    for i in start_order(graph, nodes):
        node = graph.nodes[i]
        known = {
            r.task: reused[r.nodes[0]] for r in node.requires if r.single and r.nodes[0] in reused
        }
        task = graph.task_of(node)
        cmd = task.run.render(graph.target_of(node), graph.plan.vars, _Placeholders(known))
        lines.append(f"{node.key}: {redactor.redact(cmd)}")
    return lines


def execute(req: RunRequest) -> int:
    """Run ``apply``/``retry``/``apply --resume`` as asked; return the exit code."""
    state_dir = find_state_dir(req.state_dir, req.plan)
    if req.kind == "apply":
        return _start(req, state_dir, previous=None)
    journal = Journal.open_existing(state_dir)
    try:
        journal.recover()
        plan_path = str(Path(req.plan).resolve()) if req.plan else None
        previous = journal.run(req.run_ref, plan_path=plan_path)
    finally:
        journal.close()
    # Resume continues the latest run only: resuming an older one would re-run
    # what a newer run has done since.
    if req.kind == "resume" and previous.status != "interrupted":
        if previous.status == "succeeded":
            click.echo(f"nothing to resume: the latest run {previous.id} succeeded")
            return EXIT_OK
        raise UsageError(
            f"the latest run {previous.id} is {previous.status}, not interrupted; "
            "`fleetrun retry` re-runs what did not succeed"
        )
    return _start(req, state_dir, previous=previous)


def _start(req: RunRequest, state_dir: Path, previous: RunRecord | None) -> int:
    plan_file = req.plan or (previous.plan_path if previous else None)
    if plan_file is None:
        raise UsageError("no plan given")
    plan = load_plan(Path(plan_file))
    graph = expand(plan)
    targets, tasks = split_names(req.targets), split_names(req.tasks)
    narrow = select(graph, targets, tasks) if (targets or tasks) else None
    redactor = Redactor(plan.secret_values)

    if req.dry_run and previous is None:
        for line in dry_run_lines(graph, narrow, {}):
            click.echo(line)
        return EXIT_OK

    run_id = new_run_id()
    lock = RunLock(state_dir)
    lock.acquire(run_id)
    try:
        with Journal(state_dir) as journal:
            _recover_and_report(journal, lock, req)
            retry: RetryPlan | None = None
            if previous is not None:
                # Re-read under the lock: the record is final now.
                previous = journal.run(previous.id)
                retry = plan_retry(
                    graph, previous, journal.instances(previous.id), redactor, narrow
                )
                if plan.source_hash != previous.plan_hash:
                    click.echo(f"note: the plan changed since run {previous.id}")
                if req.dry_run:
                    for line in dry_run_lines(graph, retry.only, retry.reused):
                        click.echo(line)
                    return EXIT_OK
                if not retry.only:
                    within = " among the selected instances" if narrow is not None else ""
                    click.echo(
                        f"nothing to {req.kind}: everything{within} in run {previous.id} "
                        "succeeded or was reused"
                    )
                    return EXIT_OK
                for line in _reason_lines(graph, retry.reasons):
                    click.echo(line)
            return _run(
                req, plan_file, graph, journal, run_id, previous, narrow, retry, (targets, tasks)
            )
    finally:
        lock.release()


def _reason_lines(graph: Graph, reasons: Mapping[int, str], shown: int = 8) -> list[str]:
    """``re-run KEYS: REASON`` lines, one per reason, long lists shortened."""
    by_reason: dict[str, list[str]] = {}
    for node_id in sorted(reasons):
        by_reason.setdefault(reasons[node_id], []).append(graph.nodes[node_id].key)
    lines = []
    for reason, keys in by_reason.items():
        more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
        lines.append(f"re-run {', '.join(keys[:shown])}{more}: {reason}")
    return lines


def _recover_and_report(journal: Journal, lock: RunLock, req: RunRequest) -> None:
    if lock.stale:
        prev = lock.previous
        click.echo(
            f"note: took over the lock of run {prev.get('run_id')} (pid {prev.get('pid')} on "
            f"{prev.get('host')}), which is no longer running"
        )
    for run_id in journal.recover():
        click.echo(f"note: run {run_id} was interrupted (its process is gone)")
    orphans = journal.orphans()
    if not orphans:
        return
    for o in orphans:
        pids = " ".join(map(str, o.pids))
        click.echo(
            f"orphan: {o.key} (run {o.run_id}, attempt {o.attempt}): "
            f"process group {o.pgid}, pids {pids}"
        )
    if req.kill_orphans:
        kill_groups([o.pgid for o in orphans], req.grace)
        click.echo(f"ended {len(orphans)} orphaned process group(s)")
    else:
        click.echo("note: these still run; --kill-orphans ends them before the run starts")


def _run(
    req: RunRequest,
    plan_file: str,
    graph: Graph,
    journal: Journal,
    run_id: str,
    previous: RunRecord | None,
    narrow: frozenset[int] | None,
    retry: RetryPlan | None,
    names: tuple[list[str] | None, list[str] | None],
) -> int:
    from fleetrun.cli._display import Display
    from fleetrun.engine import RunControl
    from fleetrun.executors import LocalExecutor

    plan = graph.plan
    redactor = Redactor(plan.secret_values)
    only = retry.only if retry is not None else narrow
    reused = retry.reused if retry is not None else {}
    run_dir = journal.state_dir / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
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
    display = Display(graph, req, only, redactor)
    journal.begin_run(
        run_id=run_id,
        parent_id=previous.id if previous else None,
        plan_path=str(path),
        plan_name=plan.name,
        plan_hash=plan.source_hash,
        plan_snapshot=redactor.redact(path.read_text(encoding="utf-8", errors="replace")),
        mode=req.mode,
        kind=req.kind,
        options={
            "mode": req.mode,
            "parallelism": req.parallelism,
            "fail_fast": req.fail_fast,
            "grace": req.grace,
            "targets": names[0],
            "tasks": names[1],
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
    )
    parent = f" ({req.kind} of {previous.id})" if previous else ""
    click.echo(
        f"run {run_id}{parent}: {len(only) if only is not None else len(graph.nodes)} "
        f"instance(s) to run, logs in {run_dir}"
    )
    writer = JournalWriter(journal.db_path, run_id, redactor)
    control = RunControl()
    status = "failed"
    writer.start()
    display.start()
    try:
        result = asyncio.run(
            _drive(
                graph,
                options,
                LocalExecutor(grace=req.grace),
                (writer, *display.subscribers),
                control,
                writer,
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
        display.stop()
        writer.close()
        journal.end_run(run_id, status)
    click.echo(display.console.summary(result, graph))
    if result.status == "succeeded":
        return EXIT_OK
    if result.status == "interrupted":
        return EXIT_INTERRUPTED
    return EXIT_FAILED


def _first_fleetrun_error(group: BaseExceptionGroup[BaseException]) -> FleetrunError | None:
    for exc in group.exceptions:
        if isinstance(exc, FleetrunError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first_fleetrun_error(exc)
            if found is not None:
                return found
    return None


async def _drive(
    graph: Graph,
    options: RunOptions,
    executor: Any,
    subscribers: tuple[Any, ...],
    control: Any,
    writer: JournalWriter,
) -> Any:
    from fleetrun.engine import run_graph

    loop = asyncio.get_running_loop()
    presses = 0

    def on_signal(signum: int) -> None:
        nonlocal presses
        presses += 1
        name = signal.Signals(signum).name
        if presses == 1:
            click.echo(
                f"{name}: stopping; running tasks get {options.grace:g}s to end "
                "(again to kill them now)",
                err=True,
            )
        else:
            click.echo(f"{name}: killing running tasks now", err=True)
        control.interrupt()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await run_graph(
            graph, options, executor, subscribers, control=control, durable=writer.durable
        )
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
