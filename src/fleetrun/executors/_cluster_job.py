"""The worker side of a cluster job: one command as its own process group on a Dask worker.

``run_job`` is what ``ClusterExecutor`` submits; it runs in one of the
worker's executor threads. The command is ``/bin/sh -c COMMAND``, started
with ``posix_spawn`` (``_cspawn``: the GIL is released while the child
execs) in a process group of its own, every signal at its default, stdin
``/dev/null``, stdout and stderr into one pipe that the job reads and
publishes as it arrives. The environment is the worker's (encoded once per
worker) with the task's names over it. ``$FLEETRUN_OUTPUT`` names a
worker-side file (in a private directory of the worker, not created until the
command writes it) whose bytes come back with the result as they are (the
client applies the outputs rule) and which is then removed.

What a job tells the client, with ``Worker.log_event`` on the executor's
topic (its start through the scheduler, see below), in order:
``{"job", "seq": -1}`` once its command may start here:
the attempt starts then (``on_started``; before, it waited for a worker), and
its timeout counts from then, here; its output, redacted, in chunks
``{"job", "seq": N, "data"}`` (N from 0); and, when the result is small, the
result itself ``{"job", "seq": -2, "result"}``. The scheduler forwards a
worker's events and its "task finished" in the order the worker sent them,
so the client has the result as soon as it learns that the job finished,
without fetching it. The result is also the task's return value, which the
client fetches when no such event came. A job ended before its "started"
event (``end_job`` came first) returns ``{"cancelled": True}``: for the
client, nothing ran.

A job runs its command at most once, wherever Dask runs its task: before
its command starts, a job asks the scheduler (``_cluster_claims``, one call
that the job waits for), handing it the small result of the job that ran here
before it. The scheduler publishes that result if it has not heard that job
finish yet, takes the job's claim (unique to one submission: a claim already
taken means Dask is running the task again, and the job returns
``{"rerun": True}`` without running anything) and publishes the job's
"started" event, all before the command can start. So a job that kills its
worker at once can take neither its own start nor the result of the job
before it along: the client knows the one was started and has the other. A
large result (over ``_RESULT_EVENT_MAX``) does not travel that way: the next
job here starts once the client has fetched it (bounded by
``_DELIVERY_WAIT``). A scheduler that takes no claims answers None: the job
runs as Dask would, its "started" event sent by the worker.

Nothing outlives the job, whatever ends it:

- the command's leader exits: what it left in its group is killed;
- the timeout passes: SIGTERM to the group, the grace period, SIGKILL;
- the client cancels (``end_job``/``kill_job``, sent with ``Client.run``):
  the same, from the worker's event loop;
- the worker loses its scheduler (the worker closes, and with it every job of
  the run, whose client cannot hear from them any more): SIGTERM to the
  group, the grace period, SIGKILL, as soon as the job sees it (within
  ``_WATCH_EVERY``), not when the command would have ended;
- the worker process dies, even by SIGKILL: its watchdog process
  (``_cluster_watchdog``) SIGKILLs every process group still registered
  with it.

Invariants: a live watchdog exists before a job's start is announced, so its
group is registered (its ``+PGID`` is in the pipe) by one write right after
the spawn, before the job reads its first byte, and before the command can
run (its shell waits for a line on a pipe that the job writes once the group
is registered; a worker that dies before closes that pipe, and the shell
exits without running anything); it is unregistered only after the group has
been killed and its leader reaped.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import os
import select
import shlex
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

from fleetrun.executors import _cluster_claims, _cspawn
from fleetrun.executors._cluster_watchdog import Watchdog
from fleetrun.executors._outputs import MAX_OUTPUTS_BYTES
from fleetrun.names import OUTPUT_ENV
from fleetrun.redact import Redactor

_CHUNK = 65536
_PUBLISH_EVERY = 0.1
_RESULT_EVENT_MAX = 65536
"""Outputs up to this many bytes come back in the result event; a job with
more leaves its result to be fetched (the scheduler keeps recent events)."""
_MAX_CANCELLED = 10000
_WATCH_EVERY = 0.25
"""How often a running job looks whether its worker is closing (seconds)."""
_CALL_TIMEOUT = 60.0
"""Longest wait for the scheduler's answer to a job's start (seconds)."""
_DELIVERY_WAIT = 30.0
"""Longest wait of a job for the client to fetch the large result before it (seconds)."""
_CLOSING = frozenset({"closing", "closed", "failed"})
"""Worker states in which its jobs are ended: it lost its scheduler or is going
away without a drain (a drained worker is ``closing_gracefully`` while its job
finishes)."""

STARTED = _cluster_claims.STARTED
RESULT = -2
"""``seq`` of the "started" and "result" events (output chunks count from 0)."""


class _Job:
    """One running job: its process group and how it is being ended."""

    def __init__(self, pid: int, out: int) -> None:
        self.pid = self.pgid = pid
        self.out = out  # the read end of the pipe of its stdout and stderr
        self.returncode: int | None = None
        self.ended_early = False
        self.kill_at: float | None = None
        self.done = threading.Event()

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    def terminate(self, grace: float) -> None:
        """SIGTERM to the group now; the job's loop sends SIGKILL after ``grace``."""
        deadline = time.monotonic() + max(grace, 0.0)
        if self.kill_at is None or deadline < self.kill_at:
            self.kill_at = deadline
        self.signal_group(signal.SIGTERM)
        if grace <= 0:
            self.signal_group(signal.SIGKILL)

    def reap(self) -> None:
        """Wait for the leader (already gone, or killed with its group) and keep its status."""
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)


_GATE = "read -r _ <&3 || exit 125; exec 3<&-; "
"""What the job's shell runs first: wait for the go line on descriptor 3 (sent
once the group is registered with the watchdog), then close it."""

_lock = threading.Lock()
_running: dict[str, _Job] = {}
_cancelled: dict[str, None] = {}  # keys ended before they started (insertion-ordered)


class _Worker:
    """What the jobs of this worker process share, made at its first job."""

    def __init__(self) -> None:
        self.watchdog: Watchdog | None = None
        self.env = dict(os.environ)
        self.env_block = _cspawn.EnvBlock(self.env) if _cspawn.available() else None
        self.null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self.out_dir: str | None = None
        self.counter = itertools.count()
        self.before: list[Any] | None = None  # the last small result, for the next start
        self.fetched: str | None = None  # the last large result's key, until forgotten

    def settle(self, worker: Any, key: str) -> None:
        """Before job ``key`` starts here: wait until the client has fetched a large
        result of the job before it (see the module)."""
        with _lock:
            fetched, self.fetched = self.fetched, None
        if fetched is not None and fetched != key:  # (a key used again: a new job)
            deadline = time.monotonic() + _DELIVERY_WAIT
            while fetched in worker.state.tasks and time.monotonic() < deadline:
                time.sleep(0.005)

    def start(self, worker: Any, spec: Mapping[str, Any]) -> bool | str | None:
        """Ask the scheduler whether job ``spec`` may start (``_cluster_claims``),
        handing it the result of the job before it: True (it may; its "started"
        event is out), False (it ran before: never again), None (the scheduler
        takes no claims: it may, unclaimed), or why the scheduler could not be
        asked."""
        with _lock:
            before, self.before = self.before, None
        if not spec.get("claim"):
            return None
        try:
            return cast(
                "bool | None",
                _call(
                    worker,
                    worker.scheduler.fleetrun_start,
                    topic=spec["topic"],
                    job=spec["key"],
                    claim=spec["claim"],
                    before=before,
                ),
            )
        except (OSError, TimeoutError) as e:
            return f"the worker could not reach the scheduler: {e}"

    def keep(self, topic: str, key: str, result: dict[str, Any]) -> None:
        """Keep the result of the job that just ran here for the next job's start (a
        large one: the next job waits until the client has it)."""
        with _lock:
            if len(result.get("outputs") or b"") > _RESULT_EVENT_MAX:
                self.fetched = key
            else:
                msg = {"job": key, "seq": RESULT, "data": b"", "result": result}
                self.before = [topic, key, msg]

    def ready(self) -> None:
        """Have a live watchdog before a job's start is announced: registering the
        job's group right after its spawn is then one write, never a wait for a
        watchdog to start while the worker may die."""
        with _lock:
            self._live_watchdog()

    def watch(self, op: bytes, pgid: int) -> None:
        """Tell the watchdog about a group (starting one when there is none, or when
        it has died: the new one is told every group running here)."""
        line = b"%s%d\n" % (op, pgid)
        with _lock:
            watchdog = self._live_watchdog()
            try:
                watchdog.send(line)
            except BrokenPipeError:  # it died just now: a new one is told everything
                watchdog.close()
                self.watchdog = None
                self._live_watchdog().send(line)

    def _live_watchdog(self) -> Watchdog:
        """The watchdog, started (and told every group running here) when there is
        none or it has died. Called with ``_lock`` held."""
        if self.watchdog is not None and self.watchdog.alive():
            return self.watchdog
        if self.watchdog is not None:
            self.watchdog.close()
        self.watchdog = Watchdog()
        self.watchdog.send(b"".join(b"+%d\n" % job.pgid for job in _running.values()))
        return self.watchdog

    def outputs_path(self) -> str:
        """A new path for a job's ``$FLEETRUN_OUTPUT``, in this worker's private
        directory (owner-only; in memory under /dev/shm where there is one:
        creating and deleting a file per job costs more than the job on some disks)."""
        with _lock:
            if self.out_dir is None or not os.path.isdir(self.out_dir):
                shm = "/dev/shm"
                base = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
                self.out_dir = tempfile.mkdtemp(prefix="fleetrun-outputs-", dir=base)
                atexit.register(shutil.rmtree, self.out_dir, True)
            return os.path.join(self.out_dir, f"{next(self.counter)}.out")

    def spawn(
        self, command: str, env: Mapping[str, str], cwd: str | None, out: int, gate: int
    ) -> int:
        """Start ``/bin/sh -c command`` in a new process group, stdout and stderr to
        ``out``; return its pid. The shell runs the command only once a line
        comes on ``gate`` (its descriptor 3): when the pipe's writing end is
        closed first, by anything, even the worker's death, it exits at once."""
        chdir = cwd is not None and _cspawn.can_chdir()
        if cwd is not None and not chdir:
            # This spawn cannot change directory: the shell does (126: cannot enter it).
            command = f"cd -- {shlex.quote(cwd)} || exit 126\n{command}"
        # On the command's first line, so that the shell's line numbers stay its own.
        command = f"{_GATE}{command}"
        argv = ["/bin/sh", "-c", command]
        actions: list[tuple[Any, ...]] = [
            (os.POSIX_SPAWN_DUP2, self.null, 0),
            (os.POSIX_SPAWN_DUP2, out, 1),
            (os.POSIX_SPAWN_DUP2, out, 2),
            (os.POSIX_SPAWN_DUP2, gate, 3),
        ]
        if chdir:
            actions.append((_cspawn.CHDIR, cwd))
        if self.env_block is None:
            return os.posix_spawn(
                argv[0],
                argv,
                {**self.env, **env},
                file_actions=actions,
                setpgroup=0,
                **_cspawn.CLEAN_SIGNALS,
            )
        if self.env.keys().isdisjoint(env):
            extra = [os.fsencode(k) + b"=" + os.fsencode(v) for k, v in env.items()]
            return _cspawn.spawn(argv[0], argv, self.env_block, actions, extra)
        # A name of the worker's own environment is set again: no duplicates.
        return _cspawn.spawn(argv[0], argv, {**self.env, **env}, actions)


_worker: _Worker | None = None


def _call(worker: Any, method: Any, **kwargs: Any) -> Any:
    """Call the scheduler from a job's thread, through the worker's loop; its answer."""
    call = asyncio.run_coroutine_threadsafe(method(**kwargs), worker.loop.asyncio_loop)
    return call.result(_CALL_TIMEOUT)


def _closing(worker: Any) -> Callable[[], bool]:
    """A test of whether ``worker`` is going away (its jobs are to end)."""

    def closing() -> bool:
        status = getattr(worker, "status", None)
        return getattr(status, "name", None) in _CLOSING

    return closing


def _this_worker() -> _Worker:
    global _worker
    with _lock:
        if _worker is None:
            _worker = _Worker()
        return _worker


def _publisher(worker: Any, topic: str | None, job: str) -> Any:
    """A function sending one event of this job to the client, or None when not streaming."""
    if topic is None:
        return None

    def publish(seq: int, data: bytes, result: dict[str, Any] | None = None) -> None:
        msg: dict[str, Any] = {"job": job, "seq": seq, "data": data}
        if result is not None:
            msg["result"] = result
        worker.log_event(topic, msg)

    return publish


def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one job as described by ``spec`` (built by ``ClusterExecutor``); see the module."""
    from distributed import get_worker

    key: str = spec["key"]
    with _lock:
        if key in _cancelled:
            del _cancelled[key]
            return {"cancelled": True}
    here = _this_worker()
    worker = get_worker()
    here.settle(worker, key)
    here.ready()
    claimed = here.start(worker, spec)
    if claimed is False:
        return {"rerun": True}  # it ran before: never twice
    if isinstance(claimed, str):
        return {"unclaimed": claimed}
    # Named, not created: only a job that publishes outputs makes the file.
    out_path = here.outputs_path()
    env = {**spec["env"], OUTPUT_ENV: out_path}
    cwd = spec.get("cwd")
    scratch: str | None = None
    note = b""
    if cwd is not None and not os.path.isdir(cwd):
        # The plan's directory is on the coordinator's machine, not on this worker:
        # run in a scratch directory here (removed afterwards) and say so in the log.
        scratch = cwd = tempfile.mkdtemp(prefix="fleetrun-job-")
        note = f"[fleetrun: {spec['cwd']} is not on this worker; running in {cwd}]\n".encode()
    topic = spec.get("topic")
    publish = _publisher(worker, topic, key)
    try:
        job = _start(here, key, spec["command"], env, cwd)
        try:
            if job.ended_early:
                job.terminate(0.0)
            elif publish is not None and claimed is None:
                publish(STARTED, b"")  # (the scheduler published it otherwise)
            redact = Redactor(spec.get("secrets", ())).stream()
            timed_out, chunks = _follow(
                job, spec.get("timeout"), spec["grace"], publish, redact, note, _closing(worker)
            )
            outputs = _read_outputs(out_path)
        finally:
            _finish(here, key, job)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(out_path)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    rc = job.returncode
    assert rc is not None
    if job.ended_early:
        # Ended before its start was reported: for the client, nothing ran.
        result: dict[str, Any] = {"cancelled": True, "chunks": chunks}
        if publish is not None:
            publish(RESULT, b"", result)
        return result
    result = {
        "exit_code": rc if rc >= 0 else None,
        "signal": -rc if rc < 0 else None,
        "timed_out": timed_out,
        "outputs": outputs,
        "chunks": chunks,
        "worker": worker.address,
    }
    if topic is not None:
        if len(outputs) <= _RESULT_EVENT_MAX:
            publish(RESULT, b"", result)
        here.keep(topic, key, result)
    return result


def _read_outputs(path: str) -> bytes:
    """The bytes the job wrote to ``$FLEETRUN_OUTPUT`` as they are (the client
    applies the outputs rule): at most ``MAX_OUTPUTS_BYTES`` + 1, enough to refuse
    a file over the limit."""
    try:
        with open(path, "rb") as f:
            return f.read(MAX_OUTPUTS_BYTES + 1)
    except FileNotFoundError:
        return b""


def _start(here: _Worker, key: str, command: str, env: Mapping[str, str], cwd: str | None) -> _Job:
    """Spawn the job, register its group with the watchdog and as running here.

    The command cannot run before its group is registered: its shell waits for
    a line on a pipe that only this job writes to, after registering. A worker
    killed in between (even by SIGKILL) closes the pipe, and the shell exits
    without running the command, which the watchdog would not have known of."""
    r, w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = here.spawn(command, env, cwd, w, go_r)
    except BaseException:
        os.close(r)
        os.close(go_w)
        raise
    finally:
        os.close(w)
        os.close(go_r)
    job = _Job(pid, r)
    try:
        here.watch(b"+", job.pgid)
        os.write(go_w, b"\n")
    except BaseException:
        job.signal_group(signal.SIGKILL)
        job.reap()
        os.close(r)
        raise
    finally:
        os.close(go_w)
    with _lock:
        _running[key] = job
        # An end_job that came before this job registered left its key here.
        job.ended_early = _cancelled.pop(key, 0) is None
    return job


def _finish(here: _Worker, key: str, job: _Job) -> None:
    """Kill what is left of the job's group, reap its leader, unregister it."""
    job.signal_group(signal.SIGKILL)
    job.reap()
    os.close(job.out)
    here.watch(b"-", job.pgid)
    with _lock:
        _running.pop(key, None)
    job.done.set()


def _follow(
    job: _Job,
    timeout: float | None,
    grace: float,
    publish: Any,
    redact: Any,
    note: bytes,
    closing: Callable[[], bool],
) -> tuple[bool, int]:
    """Read the job's output to its end, enforcing the timeout and ending the job
    when its worker goes away (``closing``); return (timed_out, chunks)."""
    fd = job.out
    # The leader's exit wakes the poll too (a pidfd), so nothing sleeps.
    pidfd = os.pidfd_open(job.pid)
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP)
    poller.register(pidfd, select.POLLIN)
    # The timeout counts from the command's start on this worker, never from the
    # job's submission: the time it waited for a worker is not the command's.
    start = time.monotonic()
    deadline = start + timeout if timeout is not None else None
    timed_out = False
    eof = False
    exited = False
    leader_gone_at: float | None = None
    pending = note
    last_publish = start
    seq = 0
    next_look = start + _WATCH_EVERY
    going = False  # the worker is closing: the job is being ended

    def flush(force: bool) -> None:
        nonlocal pending, last_publish, seq
        if publish is None:
            pending = b""
            return
        now = time.monotonic()
        if pending and (force or len(pending) >= _CHUNK or now - last_publish >= _PUBLISH_EVERY):
            publish(seq, pending)
            seq += 1
            pending = b""
            last_publish = now

    try:
        while True:
            now = time.monotonic()
            if deadline is not None and not timed_out and now >= deadline:
                timed_out = True
                job.terminate(grace)
            if not going and now >= next_look:
                next_look = now + _WATCH_EVERY
                if closing():
                    # Its scheduler is gone (or the worker is stopped without a drain):
                    # nobody can hear from this job any more, so it ends now.
                    going = True
                    job.terminate(grace)
            if job.kill_at is not None and now >= job.kill_at:
                job.signal_group(signal.SIGKILL)
            if exited and eof:
                break
            wait_ms = 100 if (deadline is not None or job.kill_at is not None or pending) else 250
            for ready, _ in poller.poll(wait_ms):
                if ready == fd:
                    data = os.read(fd, _CHUNK)
                    if data:
                        pending += redact.feed(data)
                    else:
                        eof = True
                        poller.unregister(fd)
                elif ready == pidfd:
                    job.reap()
                    exited = True
                    poller.unregister(pidfd)
            flush(False)
            if exited and not eof:
                # The leader is gone but something still holds the pipe: end the group.
                if leader_gone_at is None:
                    leader_gone_at = now
                    job.signal_group(signal.SIGKILL)
                elif now - leader_gone_at > 2.0:
                    break  # a process outside the group holds the pipe; stop waiting for it
    finally:
        os.close(pidfd)
    pending += redact.flush()
    flush(True)
    return timed_out, seq


async def end_job(key: str, grace: float) -> bool:
    """End job ``key`` on this worker (SIGTERM, ``grace``, SIGKILL); wait until it has.

    Runs on the worker's event loop through ``Client.run``. A job not yet
    started is marked so that it never starts. True when the job ran here.
    """
    with _lock:
        job = _running.get(key)
        if job is None:
            _cancelled[key] = None
            while len(_cancelled) > _MAX_CANCELLED:
                del _cancelled[next(iter(_cancelled))]
            return False
    job.terminate(grace)
    limit = time.monotonic() + max(grace, 0.0) + 10.0
    # job.done is a threading.Event set by the job's thread: poll it from the loop.
    while not job.done.is_set() and time.monotonic() < limit:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    return True


def kill_job(key: str) -> bool:
    """SIGKILL job ``key``'s group now (what is left of its grace is skipped)."""
    with _lock:
        job = _running.get(key)
    if job is None:
        return False
    job.terminate(0.0)
    return True


def running_jobs() -> list[str]:
    """Keys of the jobs running on this worker now."""
    with _lock:
        return list(_running)
