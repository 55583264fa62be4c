"""The worker side of a cluster job: one command as its own process group on a Dask worker.

``run_job`` is what ``ClusterExecutor`` submits; it runs in one of the
worker's executor threads. The command is ``/bin/sh -c COMMAND`` in a new
session (so its process group is its own), stdin ``/dev/null``, stdout and
stderr into one pipe that the job reads and publishes as it arrives
(``Worker.log_event`` on the executor's topic, in sequence-numbered chunks).
``$FLEETRUN_OUTPUT`` names a worker-side file (in a private directory of the
worker, not created until the command writes it) whose text comes back with
the result and is then removed.

Nothing outlives the job, whatever ends it:

- the command's leader exits: what it left in its group is killed;
- the timeout passes: SIGTERM to the group, the grace period, SIGKILL;
- the client cancels (``end_job``/``kill_job``, sent with ``Client.run``):
  the same, from the worker's event loop;
- the worker process dies, even by SIGKILL: one watchdog process per worker
  holds the read end of a pipe whose write end only the worker has; at end of
  file it SIGKILLs every process group still registered with it.

Invariant: a group is registered with the watchdog (``+pgid``) before the job
reads its first byte and unregistered (``-pgid``) only after the group has
been killed and its leader reaped.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

from fleetrun.redact import Redactor

_CHUNK = 65536
_PUBLISH_EVERY = 0.1
_MAX_OUTPUTS = 1 << 20
_MAX_CANCELLED = 10000

_WATCHDOG = r"""
import os, signal, sys
groups = set()
for line in sys.stdin.buffer:
    op, pgid = line[:1], int(line[1:])
    if op == b"+":
        groups.add(pgid)
    else:
        groups.discard(pgid)
for pgid in groups:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
"""


class _Job:
    """One running job: its process and how it is being ended."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.pgid = proc.pid
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


_lock = threading.Lock()
_running: dict[str, _Job] = {}
_cancelled: dict[str, None] = {}  # keys ended before they started (insertion-ordered)
_watchdog: subprocess.Popen[bytes] | None = None


_out_dir: str | None = None


def _outputs_dir() -> str:
    """This worker's private directory for ``$FLEETRUN_OUTPUT`` files (owner-only;
    in memory under /dev/shm where there is one: creating and deleting a file per
    job costs more than the job on some disks)."""
    global _out_dir
    with _lock:
        if _out_dir is None or not os.path.isdir(_out_dir):
            shm = "/dev/shm"
            base = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
            _out_dir = tempfile.mkdtemp(prefix="fleetrun-outputs-", dir=base)
            atexit.register(shutil.rmtree, _out_dir, True)
        return _out_dir


def _watch(op: str, pgid: int) -> None:
    """Tell this worker's watchdog about a group (starting the watchdog once)."""
    global _watchdog
    with _lock:
        if _watchdog is None or _watchdog.poll() is not None:
            _watchdog = subprocess.Popen(
                [sys.executable, "-c", _WATCHDOG],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        assert _watchdog.stdin is not None
        _watchdog.stdin.write(f"{op}{pgid}\n".encode())
        _watchdog.stdin.flush()


def _publisher(topic: str | None, job: str) -> Any:
    """A function sending one output chunk to the client, or None when not streaming."""
    if topic is None:
        return None
    from distributed import get_worker

    worker = get_worker()

    def publish(seq: int, data: bytes) -> None:
        worker.log_event(topic, {"job": job, "seq": seq, "data": data})

    return publish


def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one job as described by ``spec`` (built by ``ClusterExecutor``); see the module."""
    key: str = spec["key"]
    with _lock:
        if key in _cancelled:
            del _cancelled[key]
            return {"cancelled": True}
    # Named, not created: only a job that publishes outputs makes the file.
    out_path = os.path.join(_outputs_dir(), f"{uuid.uuid4().hex}.out")
    env = dict(os.environ)
    env.update(spec["env"])
    env["FLEETRUN_OUTPUT"] = out_path
    cwd = spec.get("cwd")
    scratch: str | None = None
    note = b""
    if cwd is not None and not os.path.isdir(cwd):
        # The plan's directory is on the coordinator's machine, not on this worker:
        # run in a scratch directory here (removed afterwards) and say so in the log.
        scratch = cwd = tempfile.mkdtemp(prefix="fleetrun-job-")
        note = f"[fleetrun: {spec['cwd']} is not on this worker; running in {cwd}]\n".encode()
    publish = _publisher(spec.get("topic"), key)
    redact = Redactor(spec.get("secrets", ())).stream()
    proc = subprocess.Popen(
        ["/bin/sh", "-c", spec["command"]],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=cwd,
        # Its own process group (setpgid keeps the fast vfork path; setsid does not).
        process_group=0,
    )
    job = _Job(proc)
    _watch("+", job.pgid)
    with _lock:
        _running[key] = job
        # An end_job that came before this job registered left its key here.
        ended_early = _cancelled.pop(key, 0) is None
    if ended_early:
        job.terminate(0.0)
    elif publish is not None:
        # Tells the client this job really started here (a job only queued on a
        # worker that dies is submitted again rather than counted as lost).
        publish(-1, b"")
    try:
        timed_out, chunks = _follow(job, spec.get("timeout"), spec["grace"], publish, redact, note)
        rc = proc.returncode
        try:
            with open(out_path, "rb") as f:
                outputs = f.read(_MAX_OUTPUTS).decode("utf-8", "replace")
        except FileNotFoundError:
            outputs = ""
    finally:
        job.signal_group(signal.SIGKILL)
        if proc.returncode is None:
            proc.kill()
            proc.wait()
        _watch("-", job.pgid)
        with _lock:
            _running.pop(key, None)
        job.done.set()
        with contextlib.suppress(OSError):
            os.unlink(out_path)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    from distributed import get_worker

    return {
        "exit_code": rc if rc >= 0 else None,
        "signal": -rc if rc < 0 else None,
        "timed_out": timed_out,
        "outputs": outputs,
        "chunks": chunks,
        "worker": get_worker().address,
    }


def _follow(
    job: _Job, timeout: float | None, grace: float, publish: Any, redact: Any, note: bytes
) -> tuple[bool, int]:
    """Read the job's output to its end, enforcing the timeout; return (timed_out, chunks)."""
    proc = job.proc
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    # The leader's exit wakes the poll too (a pidfd), so nothing sleeps.
    pidfd = os.pidfd_open(proc.pid)
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP)
    poller.register(pidfd, select.POLLIN)
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
                    proc.wait()
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
    proc.stdout.close()
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
