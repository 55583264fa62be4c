"""``ClusterExecutor``: runs an attempt as a job on the compute cluster (Dask distributed).

Each attempt becomes one Dask task, ``_cluster_job.run_job``, submitted under
the key ``fleetrun-<run>-<task@target>-<n>`` with ``resources={"MACHINE": 1}``
plus the task's own ``resources`` option, so a worker runs one job at a time.
The command runs on the worker as its own process group (see
``_cluster_job``); its output comes back in chunks through the scheduler's
event stream (one topic per executor) and is redacted into
``attempt.log_path`` as it arrives; ``$FLEETRUN_OUTPUT`` is a worker-side
file whose bytes return with the result, where the outputs rule of every
executor (``_outputs``: whole and unchanged, or refused with
``OutputRefused``) is applied, and a redacted copy is kept at
``attempt.output_path``. The result itself comes on the same stream, just
before the scheduler says the job finished, so a job costs no fetch of its
result (one that came without it, e.g. with large outputs, is fetched), and
the executor lets go of the job's future as soon as it has the result. Log
files are created off the event loop (``_cluster_io``); jobs submitted in the
same turn of the event loop go to the scheduler as one graph (one
``Client.map`` per set of resources).

An attempt starts when its job starts on a worker (the job's "started" event):
``attempt.on_started`` is called then, not at submission, and the job's
``timeout`` counts from then (on the worker). Until then the attempt waits for
a worker (``queue_reason``); a job ended before it started never calls
``on_started``: nothing ran.

A job's command runs at most once: when it connects, the executor installs
``_cluster_claims`` on the scheduler, and each job, before its command
starts, has the scheduler take its claim (unique to the submission), publish
its "started" event and the result of the job before it on its worker (see
``_cluster_job``). How an attempt can end:

- the command exits (or is ended by its timeout, on the worker): its exit code;
- the worker dies after the job finished: the result the job delivered; the
  job is not run again;
- the worker dies while the job runs: ``exit_code=None``,
  ``reason="worker lost"``, ``error_kind="lost"``, counted as an attempt
  (its "started" event came before the news of the death); the job's
  processes on that worker end with it (the worker's watchdog), so
  fleetrun's ``retry`` decides whether it runs again (``retry.on.connect``
  matches). Schedulers that fleetrun starts set ``allowed-failures`` to 0;
  one started elsewhere with Dask's default (3) runs the task again itself,
  and that run finds its claim taken and returns at once, so the attempt
  ends the same way;
- the worker dies before the job started (it only waited in that worker's
  queue): the job is submitted again under ``KEY~N``, at most
  ``MAX_REQUEUE`` times; it ran nothing, so no attempt is counted. (A
  scheduler that refuses ``run_on_scheduler`` takes no claims: there, a job
  whose worker died within milliseconds of its start can be taken for one
  that never started, as Dask alone would);
- no worker that can run the job (none at all, or none with its resources)
  for ``worker_wait`` seconds (default ``WORKER_WAIT``, 60) while it waits:
  ``error_kind="lost"``, "no worker left on the compute cluster ...". A run
  whose workers all died ends within that bound instead of waiting forever;
- the scheduler is lost (the connection breaks, the scheduler dies):
  ``error_kind="lost"``, a connection loss, like a lost SSH connection; the
  next attempt connects afresh. Nothing of the job outlives the run: a worker
  whose scheduler is gone closes and ends its jobs at once (see
  ``_cluster_job``); when only the connection broke, the job is ended over a
  new one (``end_job``; ``aclose`` waits ``_RECONNECT_WAIT`` for that
  connection, no more);
- the scheduler cannot be reached: ``error_kind="connect"``. Jobs that need
  a connection while one is being made wait for that one (one
  ``connect_timeout`` for all of them, not one each);
- cancellation (Ctrl-C, ``--fail-fast=kill``, ``fleetrun cancel``): the future
  is cancelled, then ``end_job`` runs on the workers through ``Client.run``
  (Dask's cancel does not stop a running task): SIGTERM, ``attempt.grace``,
  SIGKILL, and the call returns once the group is gone; ``kill_now`` skips
  the rest of the grace. A job still waiting for a worker is marked on every
  worker so that it never starts, and ``CancelledError`` goes on with no
  ``on_started`` call;
- the job was ended from elsewhere before it started: ``exit_code=None`` with
  the reason, ``error_kind="internal"``, no ``on_started`` call.

Every ending without an exit code or a signal carries a ``reason`` in words.

Where the cluster is: ``address`` (from the plan's ``cluster:`` section,
``--cluster`` or ``FLEETRUN_CLUSTER``; ``resolve_address`` refuses a malformed
one with ``UsageError``, exit 2); None starts an embedded local cluster of
``workers`` processes on first use, stopped by ``aclose()``. The
``distributed`` library's log records never reach the console
(``quiet_dask_logs``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from fleetrun.errors import ExecutorError
from fleetrun.executors import _cluster_claims, _cluster_job
from fleetrun.executors._cluster_address import resolve_address as resolve_address
from fleetrun.executors._cluster_io import LOG_FLAGS, LOG_MODE, JobStream, LogOpener
from fleetrun.executors._cluster_orphans import MAX_REQUEUE
from fleetrun.executors._cluster_orphans import ClusterOrphanFinder as ClusterOrphanFinder
from fleetrun.executors._contract import Attempt, AttemptResult, Handle
from fleetrun.executors._dask_local import MACHINE, LocalCluster, quiet_dask_logs
from fleetrun.executors._outputs import MAX_OUTPUTS_BYTES, parse_output_bytes
from fleetrun.names import CLUSTER_ENV as CLUSTER_ENV
from fleetrun.runs_on import ClusterOptions, ExecutorOptions

log = logging.getLogger(__name__)

WORKER_WAIT = 60.0
"""How long a job waits while no worker of the cluster can run it (seconds)."""
_WATCH_EVERY = 1.0
"""How often the workers are counted while jobs wait (seconds)."""
_CLOSE_WAIT = 5.0
"""Longest wait for a client to close (seconds)."""
_RECONNECT_WAIT = 2.0
"""Longest wait, when the executor closes, for a new connection that is to end jobs
whose connection was lost (seconds)."""
_RUNNING = frozenset({"running", "paused", "init"})
"""Worker states that can still run a job (a draining worker cannot)."""

Resources = tuple[tuple[str, float], ...]


class ClusterExecutor:
    """Runs attempts as jobs on a Dask cluster; see the module docstring.

    ``address``: the scheduler (None: an embedded local cluster of ``workers``
    worker processes, started on first use in a temporary directory).
    ``resources``: what every job requests besides ``MACHINE=1``.
    ``connect_timeout``: how long connecting to the scheduler may take.
    ``worker_wait``: how long a job waits while no worker can run it.
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
        worker_wait: float = WORKER_WAIT,
    ) -> None:
        self.address = address
        self.workers = workers
        self.resources = dict(resources or {})
        self.connect_timeout = connect_timeout
        self.worker_wait = worker_wait
        self._client: Any = None
        self._connecting: asyncio.Future[Any] | None = None
        self._local: LocalCluster | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._topic = f"fleetrun-output-{uuid.uuid4().hex[:12]}"
        self._streams: dict[str, JobStream] = {}
        self._ending: set[str] = set()
        self._tasks: set[asyncio.Future[Any]] = set()  # kills, closes
        self._reconnecting: set[asyncio.Future[Any]] = set()  # ends of jobs cut off
        self._watcher: asyncio.Task[None] | None = None
        self._claims = False  # whether the scheduler takes claims (``_cluster_claims``)
        self._kill_now = False
        self._logs = LogOpener()
        self._to_submit: list[tuple[dict[str, Any], dict[str, float], asyncio.Future[Any]]] = []

    # -- connecting -----------------------------------------------------------------

    async def client(self) -> Any:
        """The connected ``distributed.Client`` (asynchronous), made on first use and
        again after the connection was lost. Callers while a connection is being
        made share it (and its failure)."""
        current = self._client
        if current is not None and current.status == "running":
            return current
        if current is not None:
            self._forget_client(current)
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> Any:
        try:
            from distributed import Client

            quiet_dask_logs()
            if self.address is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="fleetrun-cluster-")
                self._local = LocalCluster(Path(self._tmp.name))
                log.info("starting a local compute cluster of %d workers", self.workers)
                self.address = await asyncio.to_thread(self._local.start, self.workers)
            log.info("connecting to the compute cluster's scheduler %s", self.address)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.connect_timeout
            await _until_listening(self.address, self.connect_timeout)
            client = await Client(
                self.address,
                asynchronous=True,
                timeout=max(deadline - loop.time(), 1.0),
                set_as_default=False,
            )
            client.subscribe_topic(self._topic, self._on_event)
            self._claims = await _install_claims(client)
            self._client = client
            log.info(
                "connected to the scheduler %s (jobs claimed: %s)",
                self.address,
                "yes" if self._claims else "no",
            )
            if self._watcher is None:
                self._watcher = asyncio.ensure_future(self._watch_workers())
            return client
        except Exception as e:
            log.info("cannot connect to the scheduler %s: %s", self.address, _why(e))
            raise
        finally:
            self._connecting = None

    def _forget_client(self, client: Any) -> None:
        """The connection of ``client`` was lost: close it aside; the next caller of
        ``client()`` connects afresh."""
        if self._client is client:
            self._client = None
            log.info(
                "the connection to the scheduler %s is lost (%s); the next job connects afresh",
                self.address,
                client.status,
            )
            self._spawn(_close_client(client))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_event(self, event: Any) -> None:
        _, msg = event
        stream = self._streams.get(msg["job"])
        if stream is None:
            return
        seq = int(msg["seq"])
        if seq == _cluster_job.RESULT:
            stream.finished(msg["result"])
        else:
            stream.add(seq, bytes(msg["data"]))

    async def aclose(self) -> None:
        """Disconnect; stop the embedded cluster if this executor started one."""
        if self._watcher is not None:
            self._watcher.cancel()
            await _ended(self._watcher, "closing: the worker watch")
            self._watcher = None
        if self._connecting is not None:
            await _ended(self._connecting, f"closing: connecting to {self.address}")
        if self._reconnecting:
            # Ending jobs whose connection was lost needs a scheduler: one that is
            # there answers at once; one that is gone ends its workers' jobs itself.
            _, late = await asyncio.wait(self._reconnecting, timeout=_RECONNECT_WAIT)
            for t in late:
                t.cancel()
        for t in [*self._tasks, *self._reconnecting, *self._logs.busy()]:
            await _ended(t, "closing: a job's ending or log file")
        client, self._client = self._client, None
        if client is not None:
            with _best_effort(f"closing: unsubscribing from {self._topic}"):
                client.unsubscribe_topic(self._topic)
            await _close_client(client)
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
                reason=f"compute cluster {self.address} unreachable: {_words(e)}",
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
            "claim": uuid.uuid4().hex if self._claims else None,
        }
        handle = Handle(kind=self.kind, host=str(self.address), job=key)
        # The attempt starts when its job starts on a worker (the job's "started"
        # event), not when it is submitted: until then it waits for a worker.
        stream = JobStream(
            attempt,
            await self._logs.open(attempt.log_path),
            lambda: attempt.on_started(handle),
            tuple(sorted(resources.items())),
        )
        job = key
        self._streams[job] = stream
        try:
            for again in range(MAX_REQUEUE + 1):
                submitting = self._submit(client, spec, resources)
                try:
                    future = stream.future = await submitting
                    result: dict[str, Any] = await _outcome(future, stream)
                except asyncio.CancelledError:
                    if _submitted(submitting):  # (even if the cancel came just after)
                        await asyncio.shield(
                            self._end(client, submitting.result(), job, attempt.grace)
                        )
                    raise
                except Exception as e:  # Dask's news of the job, read by ``_failed``
                    log.debug("%s: the job's future failed: %s", job, _why(e))
                    if stream.result is None:
                        failure = await self._failed(client, spec, stream, e, attempt.grace)
                        if failure is not None:
                            return failure
                        if again < MAX_REQUEUE:
                            # It only waited in a dead worker's queue: nothing ran.
                            del self._streams[job]
                            job = spec["key"] = f"{key}~{again + 1}"
                            spec["claim"] = uuid.uuid4().hex if self._claims else None
                            self._streams[job] = stream
                            continue
                        return AttemptResult(
                            exit_code=None,
                            reason=f"the workers holding this job died {again + 1} times "
                            "before it started",
                            error_kind="lost",
                        )
                    result = stream.result  # it finished: whatever happened since
                finally:
                    _release(stream)
                if result.get("rerun") and stream.result is not None:
                    result = stream.result  # a recomputation refused; the job had finished
                if result.get("rerun"):
                    # Dask ran the task again after its worker died (allowed-failures
                    # above 0): the claim refused the second run; the first was lost.
                    stream.start()
                    return _worker_lost()
                if result.get("unclaimed"):
                    return AttemptResult(
                        exit_code=None,
                        reason=f"the job did not start: {result['unclaimed']}",
                        error_kind="lost",
                    )
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

    async def _failed(
        self,
        client: Any,
        spec: Mapping[str, Any],
        stream: JobStream,
        e: Exception,
        grace: float,
    ) -> AttemptResult | None:
        """How a job whose future failed ended (None: it never started, submit it again)."""
        from distributed import KilledWorker
        from distributed.client import FutureCancelledError

        if stream.gave_up is not None:
            return AttemptResult(exit_code=None, reason=stream.gave_up, error_kind="lost")
        if isinstance(e, KilledWorker):
            # Its "started" event came before the news of its worker's death, if it
            # started (the scheduler sent it before the command could start).
            return _worker_lost() if stream.started else None
        lost = isinstance(e, OSError | TimeoutError) or client.status != "running"
        if isinstance(e, FutureCancelledError):
            lost = lost or e.reason == "scheduler-connection-lost"
        if lost:
            log.info("%s: the job's future failed with the connection: %s", spec["key"], _why(e))
            self._forget_client(client)
            # The scheduler may still be there (only this connection broke): then
            # the job would run on unheard, beside the retry. End it over a new one.
            task = asyncio.ensure_future(self._end_cut_off(spec["key"], grace))
            self._reconnecting.add(task)
            task.add_done_callback(self._reconnecting.discard)
            when = "while the job ran" if stream.started else "before the job started"
            return AttemptResult(
                exit_code=None,
                reason=f"lost the connection to the compute cluster's scheduler "
                f"{self.address} {when}",
                error_kind="lost",
            )
        if isinstance(e, FutureCancelledError):
            return AttemptResult(
                exit_code=None,
                reason=f"the job was cancelled on the cluster ({e.reason})",
                error_kind="internal",
            )
        return AttemptResult(
            exit_code=None,
            reason=f"the job failed on the cluster: {_words(e)}",
            error_kind="internal",
        )

    async def _end_cut_off(self, key: str, grace: float) -> None:
        """End job ``key``, whose connection was lost, over a new connection (marked
        so that it never starts, if it had not); nothing when none can be made."""
        try:
            client = await self.client()
        except Exception as e:
            log.info("%s: cannot end the job over a new connection: %s", key, _why(e))
            return
        with _best_effort(f"{key}: ending the job over a new connection"):
            await client.run(_cluster_job.end_job, key, grace, on_error="ignore")

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
        groups: dict[Resources, list[tuple[dict[str, Any], Any]]] = {}
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
            except Exception as e:  # each job's attempt reports it
                log.info("submitting %d job(s) failed: %s", len(specs), _why(e))
                for _, submitted in group:
                    submitted.set_exception(e)
                continue
            for (_, submitted), future in zip(group, futures, strict=True):
                submitted.set_result(future)

    async def _watch_workers(self) -> None:
        """While jobs wait, count the workers that can run them: a job for which none
        has been seen for ``worker_wait`` seconds gives up (see the module)."""
        loop = asyncio.get_running_loop()
        since: dict[Resources, float] = {}  # since when no worker could run these
        while True:
            await asyncio.sleep(_WATCH_EVERY)
            waiting = [(k, s) for k, s in self._streams.items() if not s.started and s.future]
            client = self._client
            if not waiting or client is None or client.status != "running":
                since.clear()
                continue
            try:
                info = await client.scheduler.identity(n_workers=-1)
            except Exception as e:
                # A lost connection is the jobs' own news.
                log.debug("counting the workers of %s failed: %s", self.address, _why(e))
                continue
            offered = [
                w.get("resources") or {}
                for w in info.get("workers", {}).values()
                if w.get("status", "running") in _RUNNING
            ]
            now = loop.time()
            for wanted in {s.resources for _, s in waiting}:
                if any(all(o.get(k, 0) >= v for k, v in wanted) for o in offered):
                    since.pop(wanted, None)
                    continue
                first = since.setdefault(wanted, now)
                if now - first < self.worker_wait:
                    continue
                need = ", ".join(f"{k}={v:g}" for k, v in wanted)
                why = (
                    f"no worker left on the compute cluster {self.address} that can run "
                    f"this job ({need}) for {self.worker_wait:g}s"
                )
                log.info("%s", why)
                for job, s in waiting:
                    if s.resources == wanted and s.future is not None and not s.started:
                        s.gave_up = why
                        with _best_effort(f"{job}: cancelling the job no worker can run"):
                            await client.cancel([s.future], reason="no worker", msg=why)
                        # A worker that came just now never starts it (nor goes on with it).
                        with _best_effort(f"{job}: marking the job on the workers"):
                            await client.run(_cluster_job.end_job, job, 0.0, on_error="ignore")

    async def _end(self, client: Any, future: Any, key: str, grace: float) -> None:
        """Cancel the job and end its process group on whichever worker runs it."""
        self._ending.add(key)
        try:
            with _best_effort(f"{key}: cancelling the job's future"):
                await client.cancel(future, force=True)
            g = 0.0 if self._kill_now else grace
            with _best_effort(f"{key}: ending the job on the workers"):
                await client.run(_cluster_job.end_job, key, g, on_error="ignore")
        finally:
            self._ending.discard(key)

    def kill_now(self) -> None:
        """Skip the rest of every grace period: SIGKILL the jobs being ended now."""
        self._kill_now = True
        if self._client is None:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # not on the loop: the grace of jobs ended later is skipped
            return
        for key in list(self._ending):
            self._spawn(self._kill(key))

    async def _kill(self, key: str) -> None:
        with _best_effort(f"{key}: killing the job on the workers"):
            await self._client.run(_cluster_job.kill_job, key, on_error="ignore")


def _worker_lost() -> AttemptResult:
    return AttemptResult(exit_code=None, reason="worker lost", error_kind="lost")


@contextlib.contextmanager
def _best_effort(what: str) -> Iterator[None]:
    """Around a step whose failure harms nothing (a cancel, a kill, an unsubscribe
    the cluster also does on its own): a failure is logged with ``what``, not raised.
    Dask's client raises many kinds here (a closed comm, a timeout, a worker's
    own error sent back), none of which changes what the attempt reports."""
    try:
        yield
    except Exception as e:
        log.debug("%s failed: %s", what, _why(e))


async def _ended(task: asyncio.Future[Any], what: str) -> None:
    """Wait for ``task`` to end (cancelled or not); its failure, delivered where it
    mattered, is only logged. A cancellation of the caller goes on."""
    ended: tuple[Any, ...] = await asyncio.gather(task, return_exceptions=True)
    if isinstance(ended[0], Exception):
        log.debug("%s ended with %s", what, _why(ended[0]))


def _why(e: BaseException) -> str:
    """An exception as the library worded it: its type and its message."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _words(e: BaseException) -> str:
    """An exception as words: its message, or its type when it has none."""
    text = str(e).strip()
    return text if text else type(e).__name__


def _submitted(submitting: asyncio.Future[Any]) -> bool:
    """True when the job was handed to the scheduler."""
    return submitting.done() and not submitting.cancelled() and submitting.exception() is None


def _release(stream: JobStream) -> None:
    """Let go of the job's future: once it has finished, nothing may ask Dask to
    compute it again (a finished job whose worker died would be)."""
    future, stream.future = stream.future, None
    if future is not None:
        with _best_effort(f"releasing the future of {getattr(future, 'key', '?')}"):
            future.release()


async def _outcome(future: Any, stream: JobStream) -> Any:
    """The job's result: the one its "result" event brought, once the scheduler says
    the job finished (that event comes first), else fetched from the worker."""
    state = getattr(future, "_state", None)
    if state is None:  # pragma: no cover - a distributed without FutureState
        return await future
    await state.wait()
    if future.status == "finished" and stream.result is not None:
        return stream.result
    return await future  # fetches the result, or raises the job's error (or CancelledError)


async def _until_listening(address: str, within: float) -> None:
    """Wait until a ``tcp://`` address accepts connections, trying every half second
    at most (Dask's own retries back off up to the whole timeout, so a scheduler
    back after a few seconds would be found many seconds later); ``OSError`` when
    ``within`` seconds pass first. Other schemes are left to Dask."""
    if not address.startswith("tcp://"):
        return
    host, _, port = address.removeprefix("tcp://").rpartition(":")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    pause = 0.02
    while True:
        left = deadline - loop.time()
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host.strip("[]"), int(port)), max(left, 0.01)
            )
        except (OSError, TimeoutError) as e:
            if loop.time() + pause >= deadline:
                raise OSError(
                    f"nothing answered there for {within:g}s (last try: {_refusal(e)})"
                ) from None
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


def _refusal(e: BaseException) -> str:
    """Why a connection attempt failed, in words."""
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, socket.gaierror):
        return "no such host"
    if isinstance(e, TimeoutError):
        return "no answer"
    return (e.strerror if isinstance(e, OSError) else None) or _words(e)


async def _install_claims(client: Any) -> bool:
    """Install ``_cluster_claims`` on the scheduler (sent by value); False when the
    scheduler refuses it (jobs then run unclaimed, as Dask would)."""
    import cloudpickle  # type: ignore[import-untyped]

    cloudpickle.register_pickle_by_value(_cluster_claims)
    try:
        return bool(await client.run_on_scheduler(_cluster_claims.install))
    except Exception as e:  # the scheduler's own refusal, sent back as it was raised
        log.info("the scheduler does not take job claims (%s); jobs run unclaimed", _why(e))
        return False


async def _close_client(client: Any) -> None:
    """Close a client, bounded (one whose scheduler is gone may hang)."""
    try:
        await asyncio.wait_for(client.close(), _CLOSE_WAIT)
    except Exception as e:  # a scheduler gone or hanging: the client is dropped anyway
        log.debug("closing a client of the compute cluster: %s", _why(e))
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # this task's own cancellation
        # One of distributed's own tasks was cancelled as it closed: closed all the same.
        log.debug("closing a client of the compute cluster: cancelled inside distributed")


def _task_resources(options: ExecutorOptions | None) -> dict[str, float]:
    return {str(k): float(v) for k, v in ClusterOptions.of(options).resources.items()}


def _result(result: Mapping[str, Any], attempt: Attempt) -> AttemptResult:
    if result.get("cancelled"):
        return AttemptResult(
            exit_code=None,
            reason="the job was ended on the cluster before it started",
            error_kind="internal",
        )
    code = result.get("exit_code")
    timed_out = bool(result.get("timed_out"))
    data = result.get("outputs") or b""
    if isinstance(data, str):  # a worker of an earlier fleetrun
        data = data.encode()
    outputs: dict[str, str] | None = None
    if code == 0 and not timed_out:
        if data and len(data) <= MAX_OUTPUTS_BYTES:
            # Keep a copy, redacted, where the local executor keeps it (one over the
            # limit is refused below and kept nowhere: none of it stays in clear).
            with contextlib.suppress(OSError):
                fd = os.open(attempt.output_path, LOG_FLAGS, LOG_MODE)
                with os.fdopen(fd, "wb") as f:
                    f.write(attempt.redactor.redact_bytes(data))
        # The outputs rule of every executor: passed on whole, or refused.
        outputs = parse_output_bytes(data, attempt.key)
    return AttemptResult(
        exit_code=code,
        signal=result.get("signal"),
        timed_out=timed_out,
        outputs=outputs,
    )
