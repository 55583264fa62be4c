"""``ClusterExecutor``: runs an attempt as a job on the compute cluster (Dask distributed).

Each attempt becomes one Dask task, ``_cluster_job.run_job``, submitted under
the key ``fleetrun-<run>-<task@target>-<n>`` with ``resources={"MACHINE": 1}``
plus the task's own ``resources`` option, so a worker runs one job at a time.
The command runs on the worker as its own process group (see
``_cluster_job``); its output comes back in chunks through the scheduler's
event stream (one topic per executor) and is redacted into
``attempt.log_path`` as it arrives; ``$FLEETRUN_OUTPUT`` is a worker-side
file whose text returns with the result. The result itself comes on the same
stream, just before the scheduler says the job finished, so a job costs no
fetch of its result (one that came without it, e.g. with large outputs, is
fetched). Log files are created off the event loop, those asked for while
one batch is being created together in the next; jobs submitted in the same
turn of the event loop go to the scheduler as one graph (one ``Client.map``
per set of resources), which costs the scheduler far less than one graph each.

An attempt starts when its job starts on a worker (the job's "started" event):
``attempt.on_started`` is called then, not at submission, and the job's
``timeout`` counts from then (on the worker). Until then the attempt waits for
a worker (``queue_reason``); a job ended before it started never calls
``on_started``: nothing ran.

How an attempt can end:

- the command exits (or is ended by its timeout, on the worker): its exit code;
- the worker dies while the job runs: ``exit_code=None``, ``reason="worker lost"``,
  ``error_kind="lost"``; the job's processes on that worker end with it (the
  worker's watchdog), so fleetrun's ``retry`` decides whether it runs again
  and a job's outputs come from exactly one successful run. Schedulers that
  fleetrun starts set ``allowed-failures`` to 0 for this; a scheduler started
  elsewhere with Dask's default (3) re-runs the job itself instead, and only
  the run that finishes returns outputs;
- the scheduler cannot be reached: ``error_kind="connect"``;
- cancellation (Ctrl-C, ``--fail-fast=kill``, ``fleetrun cancel``): the future
  is cancelled, then ``end_job`` runs on the workers through ``Client.run``
  (Dask's cancel does not stop a running task): SIGTERM, ``attempt.grace``,
  SIGKILL, and the call returns once the group is gone; ``kill_now`` skips
  the rest of the grace. A job still waiting for a worker is marked on every
  worker so that it never starts, and ``CancelledError`` goes on with no
  ``on_started`` call;
- before it started, without a cancel (its queue's worker died more than
  ``_MAX_REQUEUE`` times, the connection was lost, the job was ended from
  elsewhere): ``exit_code=None`` with the reason and ``error_kind``, and no
  ``on_started`` call.

Where the cluster is: ``address`` (from the plan's ``cluster:`` section,
``--cluster`` or ``FLEETRUN_CLUSTER``); None starts an embedded local cluster
of ``workers`` processes on first use, stopped by ``aclose()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fleetrun.errors import ExecutorError
from fleetrun.executors import _cluster_job
from fleetrun.executors._contract import (
    Attempt,
    AttemptResult,
    Handle,
    Orphan,
    RecordedAttempt,
)
from fleetrun.executors._dask_local import MACHINE, LocalCluster
from fleetrun.executors._local import parse_outputs
from fleetrun.names import CLUSTER_ENV as CLUSTER_ENV
from fleetrun.runs_on import ClusterOptions, ExecutorOptions

_LOG_MODE = 0o600
_LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK_WAIT = 5.0
_LOG_BATCH = 128
"""Log files created per thread hand-off at most: a large batch of attempts
starts reaching the cluster after the first ones, not after all of them."""
_MAX_REQUEUE = 10


class _Stream:
    """Where one job's events go: its start to ``on_start``, its output chunks to the
    log file, redacted, and ``on_output`` lines."""

    def __init__(self, attempt: Attempt, fd: int, on_start: Callable[[], None]) -> None:
        self.fd = fd
        self.on_start = on_start
        self.redact = attempt.redactor.stream()
        self.on_output = attempt.on_output
        self.partial = b""
        self.next_seq = 0
        self.early: dict[int, bytes] = {}
        self.arrived = asyncio.Event()
        self.started = False
        self.result: dict[str, Any] | None = None

    def add(self, seq: int, data: bytes) -> None:
        if seq == _cluster_job.STARTED:
            self.start()
            return
        # Chunks are written in sequence order, whatever order they arrive in.
        self.early[seq] = data
        while self.next_seq in self.early:
            self._write(self.early.pop(self.next_seq))
            self.next_seq += 1
        self.arrived.set()

    def start(self) -> None:
        """The job started on a worker: call ``on_start`` (once)."""
        if not self.started:
            self.started = True
            self.on_start()

    def _write(self, data: bytes) -> None:
        clean = self.redact.feed(data)
        if clean:
            os.write(self.fd, clean)
            self._lines(clean)

    def _lines(self, clean: bytes) -> None:
        if self.on_output is None:
            return
        buf = self.partial + clean
        *lines, self.partial = buf.split(b"\n")
        for line in lines:
            self.on_output(line.decode("utf-8", "replace"))

    async def wait_for(self, count: int) -> None:
        """Wait (bounded) until ``count`` chunks have been written."""
        deadline = asyncio.get_running_loop().time() + _CHUNK_WAIT
        while self.next_seq < count:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                os.write(self.fd, b"\n[fleetrun: some output of this job did not arrive]\n")
                return
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), left)

    def close(self) -> None:
        tail = self.redact.flush()
        if tail:
            os.write(self.fd, tail)
            self._lines(tail)
        if self.partial and self.on_output is not None:
            self.on_output(self.partial.decode("utf-8", "replace"))
        os.close(self.fd)


class ClusterExecutor:
    """Runs attempts as jobs on a Dask cluster; see the module docstring.

    ``address``: the scheduler (None: an embedded local cluster of ``workers``
    worker processes, started on first use in a temporary directory).
    ``resources``: what every job requests besides ``MACHINE=1``.
    """

    kind = "cluster"
    queue_reason: str | None = "waiting for a worker"

    def __init__(
        self,
        address: str | None = None,
        *,
        workers: int = 2,
        resources: Mapping[str, float] | None = None,
        connect_timeout: float = 30.0,
    ) -> None:
        self.address = address
        self.workers = workers
        self.resources = dict(resources or {})
        self.connect_timeout = connect_timeout
        self._client: Any = None
        self._local: LocalCluster | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._start_lock = asyncio.Lock()
        self._topic = f"fleetrun-output-{uuid.uuid4().hex[:12]}"
        self._streams: dict[str, _Stream] = {}
        self._ending: set[str] = set()
        self._kills: set[asyncio.Task[Any]] = set()
        self._kill_now = False
        self._logs = _LogOpener()
        self._to_submit: list[tuple[dict[str, Any], dict[str, float], asyncio.Future[Any]]] = []

    # -- connecting -----------------------------------------------------------------

    async def client(self) -> Any:
        """The connected ``distributed.Client`` (asynchronous), started on first use."""
        async with self._start_lock:
            if self._client is None:
                await self._connect()
        return self._client

    async def _connect(self) -> None:
        from distributed import Client

        if self.address is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="fleetrun-cluster-")
            self._local = LocalCluster(Path(self._tmp.name))
            self.address = await asyncio.to_thread(self._local.start, self.workers)
        self._client = await Client(
            self.address,
            asynchronous=True,
            timeout=self.connect_timeout,
            set_as_default=False,
        )
        self._client.subscribe_topic(self._topic, self._on_event)

    def _on_event(self, event: Any) -> None:
        _, msg = event
        stream = self._streams.get(msg["job"])
        if stream is None:
            return
        seq = int(msg["seq"])
        if seq == _cluster_job.RESULT:
            stream.result = msg["result"]
        else:
            stream.add(seq, bytes(msg["data"]))

    async def aclose(self) -> None:
        """Disconnect; stop the embedded cluster if this executor started one."""
        for t in [*self._kills, *self._logs.busy()]:
            with contextlib.suppress(Exception):
                await t
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.unsubscribe_topic(self._topic)
            with contextlib.suppress(Exception):
                await self._client.close()
            self._client = None
        if self._local is not None:
            await asyncio.to_thread(self._local.stop)
            self._local = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- running --------------------------------------------------------------------

    async def run(self, attempt: Attempt) -> AttemptResult:
        """Run ``attempt`` as one job on the cluster and return how it ended."""
        try:
            client = await self.client()
        except (OSError, TimeoutError) as e:
            return AttemptResult(
                exit_code=None,
                reason=f"compute cluster {self.address} unreachable: {e}",
                error_kind="connect",
            )
        except ExecutorError as e:
            return AttemptResult(
                exit_code=None,
                reason=f"the local compute cluster did not start: {e}",
                error_kind="internal",
            )
        key = f"fleetrun-{attempt.run_id}-{attempt.key}-{attempt.n}"
        resources = {MACHINE: 1.0, **self.resources, **_task_resources(attempt.options)}
        spec = {
            "key": key,
            "command": attempt.command,
            "env": {**attempt.env, **attempt.env_extra},
            "cwd": attempt.cwd,
            "timeout": attempt.timeout,
            "grace": attempt.grace,
            "topic": self._topic,
            "secrets": list(attempt.redactor.values),
        }
        handle = Handle(kind=self.kind, host=str(self.address), job=key)
        # The attempt starts when its job starts on a worker (the job's "started"
        # event), not when it is submitted: until then it waits for a worker.
        stream = _Stream(
            attempt, await self._logs.open(attempt.log_path), lambda: attempt.on_started(handle)
        )
        job = key
        self._streams[job] = stream
        try:
            for again in range(_MAX_REQUEUE + 1):
                submitting = self._submit(client, spec, resources)
                try:
                    future = await submitting
                    result: dict[str, Any] = await _outcome(future, stream)
                except asyncio.CancelledError:
                    if _submitted(submitting):  # (even if the cancel came just after)
                        await asyncio.shield(
                            self._end(client, submitting.result(), job, attempt.grace)
                        )
                    raise
                except Exception as e:
                    if _lost(e) and not stream.started and again < _MAX_REQUEUE:
                        # It only waited in that worker's queue: nothing ran, submit again.
                        del self._streams[job]
                        job = spec["key"] = f"{key}~{again + 1}"
                        self._streams[job] = stream
                        continue
                    return _failure(e)
                if not result.get("cancelled"):
                    # It ran: a result never comes before its "started" event, but an
                    # attempt that ran is never reported as one that did not.
                    stream.start()
                await stream.wait_for(int(result.get("chunks", 0)))
                break
        finally:
            del self._streams[job]
            stream.close()
        return _result(result, attempt)

    def _submit(
        self, client: Any, spec: dict[str, Any], resources: dict[str, float]
    ) -> asyncio.Future[Any]:
        """The Dask future of job ``spec``, submitted with the others of this turn."""
        submitted: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self._to_submit:
            asyncio.get_running_loop().call_soon(self._submit_all, client)
        self._to_submit.append((spec, resources, submitted))
        return submitted

    def _submit_all(self, client: Any) -> None:
        jobs, self._to_submit = self._to_submit, []
        groups: dict[tuple[tuple[str, float], ...], list[tuple[dict[str, Any], Any]]] = {}
        for spec, resources, submitted in jobs:
            if not submitted.done():  # its run was cancelled meanwhile: nothing to submit
                groups.setdefault(tuple(sorted(resources.items())), []).append((spec, submitted))
        for wanted, group in groups.items():
            specs = [spec for spec, _ in group]
            try:
                futures = client.map(
                    _cluster_job.run_job,
                    specs,
                    key=[spec["key"] for spec in specs],
                    pure=False,
                    resources=dict(wanted),
                )
            except Exception as e:
                for _, submitted in group:
                    submitted.set_exception(e)
                continue
            for (_, submitted), future in zip(group, futures, strict=True):
                submitted.set_result(future)

    async def _end(self, client: Any, future: Any, key: str, grace: float) -> None:
        """Cancel the job and end its process group on whichever worker runs it."""
        self._ending.add(key)
        try:
            with contextlib.suppress(Exception):
                await client.cancel(future, force=True)
            g = 0.0 if self._kill_now else grace
            with contextlib.suppress(Exception):
                await client.run(_cluster_job.end_job, key, g, on_error="ignore")
        finally:
            self._ending.discard(key)

    def kill_now(self) -> None:
        """Skip the rest of every grace period: SIGKILL the jobs being ended now."""
        self._kill_now = True
        if self._client is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on the loop: the grace of jobs ended later is skipped
            return
        for key in list(self._ending):
            task = loop.create_task(self._kill(key))
            self._kills.add(task)
            task.add_done_callback(self._kills.discard)

    async def _kill(self, key: str) -> None:
        with contextlib.suppress(Exception):
            await self._client.run(_cluster_job.kill_job, key, on_error="ignore")


def resolve_address(
    flag: str | None, plan_address: str | None, env: Mapping[str, str] | None = None
) -> str | None:
    """The scheduler for a run: ``--cluster``, else ``FLEETRUN_CLUSTER``, else the
    plan's ``cluster.address``; None means an embedded local cluster.
    ``HOST:PORT`` gets ``tcp://`` in front."""
    env = os.environ if env is None else env
    address = flag or env.get(CLUSTER_ENV) or plan_address
    if not address:
        return None
    return address if "://" in address else f"tcp://{address}"


def _submitted(submitting: asyncio.Future[Any]) -> bool:
    """True when the job was handed to the scheduler."""
    return submitting.done() and not submitting.cancelled() and submitting.exception() is None


async def _outcome(future: Any, stream: _Stream) -> Any:
    """The job's result: the one its "result" event brought, once the scheduler says
    the job finished (that event comes first), else fetched from the worker."""
    state = getattr(future, "_state", None)
    if state is None:  # pragma: no cover - a distributed without FutureState
        return await future
    await state.wait()
    if future.status == "finished" and stream.result is not None:
        return stream.result
    return await future  # fetches the result, or raises the job's error (or CancelledError)


class _LogOpener:
    """Creates attempts' log files off the event loop (creating a file can take a
    millisecond on some disks): the files asked for while one batch is being
    created are created together in the next, one thread hand-off per batch."""

    def __init__(self) -> None:
        self._waiting: list[tuple[str, asyncio.Future[int]]] = []
        self._task: asyncio.Task[None] | None = None

    def busy(self) -> list[asyncio.Task[None]]:
        """The batch being created, if any (to be awaited before closing)."""
        return [self._task] if self._task is not None and not self._task.done() else []

    def open(self, path: str) -> asyncio.Future[int]:
        """The descriptor of ``path``, created (or truncated) owner-only, not through a
        link. A caller cancelled meanwhile leaves it to be closed once created."""
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[int] = loop.create_future()
        self._waiting.append((path, opened))
        if not self.busy():
            self._task = loop.create_task(self._create())
        return opened

    async def _create(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[:_LOG_BATCH], self._waiting[_LOG_BATCH:]
            try:
                fds = await asyncio.to_thread(_open_logs, [path for path, _ in batch])
            except BaseException as e:
                # No thread to create them (the loop is closing): nobody waits forever.
                batch, self._waiting = batch + self._waiting, []
                for _, opened in batch:
                    if opened.done():
                        continue
                    if isinstance(e, Exception):
                        opened.set_exception(e)
                    else:
                        opened.cancel()
                raise
            for (_, opened), fd in zip(batch, fds, strict=True):
                if isinstance(fd, OSError):
                    if not opened.done():
                        opened.set_exception(fd)
                elif opened.done():  # its caller was cancelled
                    os.close(fd)
                else:
                    opened.set_result(fd)


def _open_logs(paths: list[str]) -> list[int | OSError]:
    out: list[int | OSError] = []
    for path in paths:
        try:
            out.append(os.open(path, _LOG_FLAGS, _LOG_MODE))
        except OSError as e:
            out.append(e)
    return out


def _task_resources(options: ExecutorOptions | None) -> dict[str, float]:
    return {str(k): float(v) for k, v in ClusterOptions.of(options).resources.items()}


def _lost(e: BaseException) -> bool:
    from distributed import KilledWorker

    return isinstance(e, KilledWorker)


def _failure(e: BaseException) -> AttemptResult:
    if _lost(e):
        return AttemptResult(exit_code=None, reason="worker lost", error_kind="lost")
    if isinstance(e, OSError | TimeoutError):
        return AttemptResult(
            exit_code=None, reason=f"compute cluster connection lost: {e}", error_kind="lost"
        )
    return AttemptResult(
        exit_code=None, reason=f"job failed on the cluster: {e!r}", error_kind="internal"
    )


def _result(result: Mapping[str, Any], attempt: Attempt) -> AttemptResult:
    if result.get("cancelled"):
        return AttemptResult(exit_code=None, reason="job cancelled", error_kind="internal")
    reason = result.get("reason")
    code = result.get("exit_code")
    timed_out = bool(result.get("timed_out"))
    outputs: dict[str, str] | None = None
    text = str(result.get("outputs") or "")
    if code == 0 and not timed_out:
        outputs = parse_outputs(text)
    if outputs:
        # Keep a local copy, redacted, where the local executor keeps it.
        with contextlib.suppress(OSError):
            fd = os.open(attempt.output_path, _LOG_FLAGS, _LOG_MODE)
            with os.fdopen(fd, "w") as f:
                f.write(attempt.redactor.redact(text))
    return AttemptResult(
        exit_code=code,
        signal=result.get("signal"),
        timed_out=timed_out,
        outputs=outputs,
        reason=str(reason) if reason else None,
    )


class ClusterOrphanFinder:
    """Finds and ends the cluster jobs a dead run left behind.

    A recorded handle names the scheduler and the job key; when the scheduler
    is reachable, a job that a worker still runs is an orphan (the scheduler
    itself drops the queued jobs of a client that went away). ``end`` ends its
    process group on that worker.
    """

    kind = "cluster"

    def __init__(self, connect_timeout: float = 5.0) -> None:
        self.connect_timeout = connect_timeout

    async def find(
        self, attempts: Sequence[RecordedAttempt], dead_runs: Sequence[str]
    ) -> list[Orphan]:
        """Orphans among ``attempts`` whose scheduler still knows their job."""
        by_host: dict[str, list[RecordedAttempt]] = {}
        for a in attempts:
            if a.handle.kind == self.kind and a.handle.job:
                by_host.setdefault(a.handle.host, []).append(a)
        found: list[Orphan] = []
        for host, recs in by_host.items():
            known = await self._known(host)
            found += [
                Orphan(r.run_id, r.key, r.attempt, r.handle)
                for r in recs
                if any(k == r.handle.job or k.startswith(f"{r.handle.job}~") for k in known)
            ]
        return found

    async def _known(self, address: str) -> set[str]:
        from distributed import Client

        try:
            client = await Client(
                address, asynchronous=True, timeout=self.connect_timeout, set_as_default=False
            )
        except (OSError, TimeoutError):
            return set()
        try:
            # The scheduler forgets a dead client's jobs, but a worker's thread goes on
            # running one: ask the workers what they run.
            running = await client.run(_cluster_job.running_jobs, on_error="ignore")
            return {k for keys in running.values() if isinstance(keys, list) for k in keys}
        finally:
            await client.close()

    async def end(self, orphans: Sequence[Orphan], grace: float) -> None:
        """End each orphan's process group on its worker (SIGTERM, grace, SIGKILL)."""
        from distributed import Client

        by_host: dict[str, list[str]] = {}
        for o in orphans:
            if o.handle.job:
                # A job submitted again after its queue's worker died runs as KEY~N.
                jobs = [o.handle.job, *(f"{o.handle.job}~{i}" for i in range(1, _MAX_REQUEUE + 1))]
                by_host.setdefault(o.handle.host, []).extend(jobs)
        for host, keys in by_host.items():
            try:
                client = await Client(
                    host, asynchronous=True, timeout=self.connect_timeout, set_as_default=False
                )
            except (OSError, TimeoutError):
                continue
            try:
                await asyncio.gather(
                    *(client.run(_cluster_job.end_job, k, grace, on_error="ignore") for k in keys)
                )
            finally:
                await client.close()
