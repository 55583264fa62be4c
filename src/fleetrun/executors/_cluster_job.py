"""The worker side of a cluster job: one command as its own process group on a Dask worker.

``run_job`` is what ``ClusterExecutor`` submits; it runs in one of the
worker's executor threads. The command is ``/bin/sh -c COMMAND``, started
with ``posix_spawn`` (``_cspawn``: the GIL is released while the child
execs) in a process group of its own, every signal at its default, stdin
``/dev/null``, stdout and stderr into one pipe that the job reads and
publishes as it arrives. The environment is the worker's (encoded once per
worker) with the task's names over it. ``$FLEETRUN_OUTPUT`` names a
worker-side file (in a private directory of the worker, not created until the
command writes it) whose text comes back with the result and is then removed.

What a job tells the client, with ``Worker.log_event`` on the executor's
topic, in order: ``{"job", "seq": -1}`` once its command has started here:
the attempt starts then (``on_started``; before, it waited for a worker), and
its timeout counts from then, here; a job that only waited in the queue of a
worker that died is submitted again rather than counted as lost; its output,
redacted, in chunks ``{"job", "seq": N, "data"}`` (N from 0); and, when the
result is small, the result itself ``{"job", "seq": -2, "result"}``. The
scheduler forwards a worker's events and its "task finished" in the order the
worker sent them, so the client has the result as soon as it learns that the
job finished, without fetching it. The result is also the task's return value,
which the client fetches when no such event came. A job ended before its
"started" event (``end_job`` came first) returns ``{"cancelled": True}``: for
the client, nothing ran.

Nothing outlives the job, whatever ends it:

- the command's leader exits: what it left in its group is killed;
- the timeout passes: SIGTERM to the group, the grace period, SIGKILL;
- the client cancels (``end_job``/``kill_job``, sent with ``Client.run``):
  the same, from the worker's event loop;
- the worker process dies, even by SIGKILL: one watchdog process per worker
  polls the read end of a pipe whose write end only the worker has; at end of
  file it SIGKILLs every process group still registered with it. Groups are
  registered (``+PGID``) and unregistered (``-PGID``) on a second pipe that the
  watchdog reads only every ``_WATCHDOG_EVERY`` seconds and at the worker's
  end, so a job costs the watchdog no wake-up.

Invariant: a group is registered with the watchdog (its ``+PGID`` is in the
pipe) before the job reads its first byte and unregistered only after the
group has been killed and its leader reaped.
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
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from typing import Any

from fleetrun.executors import _cspawn
from fleetrun.names import OUTPUT_ENV
from fleetrun.redact import Redactor

_CHUNK = 65536
_PUBLISH_EVERY = 0.1
_MAX_OUTPUTS = 1 << 20
_RESULT_EVENT_MAX = 65536
"""Outputs up to this many characters come back in the result event; a job
with more leaves its result to be fetched (the scheduler keeps recent events)."""
_MAX_CANCELLED = 10000
_WATCHDOG_EVERY = 0.5

STARTED = -1
RESULT = -2
"""``seq`` of the "started" and "result" events (output chunks count from 0)."""

_WATCHDOG = r"""
import os, select, signal, sys
registry, life = int(sys.argv[1]), int(sys.argv[2])
os.set_blocking(registry, False)
groups, rest = set(), b""
def drain():
    global rest
    while True:
        try:
            data = os.read(registry, 65536)
        except BlockingIOError:
            return
        if not data:
            return
        *lines, rest = (rest + data).split(b"\n")
        for line in lines:
            if line[:1] == b"+":
                groups.add(int(line[1:]))
            else:
                groups.discard(int(line[1:]))
poller = select.poll()
poller.register(life, select.POLLIN)
while not poller.poll(float(sys.argv[3]) * 1000):
    drain()
drain()
for pgid in groups:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
"""


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


_lock = threading.Lock()
_running: dict[str, _Job] = {}
_cancelled: dict[str, None] = {}  # keys ended before they started (insertion-ordered)


class _Watchdog:
    """This worker's watchdog process and the two pipes to it."""

    def __init__(self) -> None:
        registry_r, self.registry = os.pipe2(os.O_CLOEXEC)
        life_r, self.life = os.pipe2(os.O_CLOEXEC)
        try:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _WATCHDOG,
                    str(registry_r),
                    str(life_r),
                    str(_WATCHDOG_EVERY),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(registry_r, life_r),
                start_new_session=True,
            )
        except BaseException:
            self.close()
            raise
        finally:
            os.close(registry_r)
            os.close(life_r)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, lines: bytes) -> None:
        view = memoryview(lines)
        while view:
            view = view[os.write(self.registry, view) :]

    def close(self) -> None:
        for fd in (self.registry, self.life):
            with contextlib.suppress(OSError):
                os.close(fd)


class _Worker:
    """What the jobs of this worker process share, made at its first job."""

    def __init__(self) -> None:
        self.watchdog: _Watchdog | None = None
        self.env = dict(os.environ)
        self.env_block = _cspawn.EnvBlock(self.env) if _cspawn.available() else None
        self.null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self.out_dir: str | None = None
        self.counter = itertools.count()

    def watch(self, op: bytes, pgid: int) -> None:
        """Tell the watchdog about a group (starting one when there is none, or when
        it has died: the new one is told every group running here)."""
        line = b"%s%d\n" % (op, pgid)
        with _lock:
            if self.watchdog is not None and self.watchdog.alive():
                with contextlib.suppress(BrokenPipeError):  # it died just now
                    self.watchdog.send(line)
                    return
            if self.watchdog is not None:
                self.watchdog.close()
            self.watchdog = _Watchdog()
            self.watchdog.send(b"".join(b"+%d\n" % job.pgid for job in _running.values()) + line)

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

    def spawn(self, command: str, env: Mapping[str, str], cwd: str | None, out: int) -> int:
        """Start ``/bin/sh -c command`` in a new process group, stdout and stderr to
        ``out``; return its pid."""
        chdir = cwd is not None and _cspawn.can_chdir()
        if cwd is not None and not chdir:
            # This spawn cannot change directory: the shell does (126: cannot enter it).
            command = f"cd -- {shlex.quote(cwd)} || exit 126\n{command}"
        argv = ["/bin/sh", "-c", command]
        actions: list[tuple[Any, ...]] = [
            (os.POSIX_SPAWN_DUP2, self.null, 0),
            (os.POSIX_SPAWN_DUP2, out, 1),
            (os.POSIX_SPAWN_DUP2, out, 2),
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


def _this_worker() -> _Worker:
    global _worker
    with _lock:
        if _worker is None:
            _worker = _Worker()
        return _worker


def _publisher(topic: str | None, job: str) -> Any:
    """A function sending one event of this job to the client, or None when not streaming."""
    if topic is None:
        return None
    from distributed import get_worker

    worker = get_worker()

    def publish(seq: int, data: bytes, result: dict[str, Any] | None = None) -> None:
        msg: dict[str, Any] = {"job": job, "seq": seq, "data": data}
        if result is not None:
            msg["result"] = result
        worker.log_event(topic, msg)

    return publish


def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one job as described by ``spec`` (built by ``ClusterExecutor``); see the module."""
    key: str = spec["key"]
    with _lock:
        if key in _cancelled:
            del _cancelled[key]
            return {"cancelled": True}
    here = _this_worker()
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
    publish = _publisher(spec.get("topic"), key)
    try:
        job = _start(here, key, spec["command"], env, cwd)
        try:
            if job.ended_early:
                job.terminate(0.0)
            elif publish is not None:
                publish(STARTED, b"")
            redact = Redactor(spec.get("secrets", ())).stream()
            timed_out, chunks = _follow(
                job, spec.get("timeout"), spec["grace"], publish, redact, note
            )
            try:
                with open(out_path, "rb") as f:
                    outputs = f.read(_MAX_OUTPUTS).decode("utf-8", "replace")
            except FileNotFoundError:
                outputs = ""
        finally:
            _finish(here, key, job)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(out_path)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    from distributed import get_worker

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
        "worker": get_worker().address,
    }
    if publish is not None and len(outputs) <= _RESULT_EVENT_MAX:
        publish(RESULT, b"", result)
    return result


def _start(here: _Worker, key: str, command: str, env: Mapping[str, str], cwd: str | None) -> _Job:
    """Spawn the job, register its group with the watchdog and as running here."""
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = here.spawn(command, env, cwd, w)
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
    job = _Job(pid, r)
    try:
        here.watch(b"+", job.pgid)
    except BaseException:
        job.signal_group(signal.SIGKILL)
        job.reap()
        os.close(r)
        raise
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
    job: _Job, timeout: float | None, grace: float, publish: Any, redact: Any, note: bytes
) -> tuple[bool, int]:
    """Read the job's output to its end, enforcing the timeout; return (timed_out, chunks)."""
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
            if job.kill_at is not None and now >= job.kill_at:
                job.signal_group(signal.SIGKILL)
            if exited and eof:
                break
            wait_ms = 100 if (deadline is not None or job.kill_at is not None or pending) else 500
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
