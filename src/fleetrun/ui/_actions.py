"""The page's actions, each exactly what its command does.

- **retry** runs ``fleetrun retry RUN --state-dir DIR`` as a child process:
  the same command line a person would type, so it takes the plan's lock,
  recovers, plans and journals the retry as any retry, and it is a process of
  its own that the application waits for and ends with it (SIGINT as Ctrl-C,
  then SIGKILL) — a retry started here outlives nothing.
- **cancel** and **promote** call ``session.live_run`` and ``cancel_run`` /
  ``promote_run``, the functions behind ``fleetrun cancel`` and ``fleetrun promote``.

Each answers in one line what happened, or why nothing did (``ActionRefused``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import IO

from fleetrun.errors import FleetrunError
from fleetrun.session import cancel_run, live_run, promote_run
from fleetrun.ui._store import Store

RETRY_WAIT = 20.0
"""Seconds a retry request waits for the retry's run to appear on record."""

STOP_GRACE = 10.0
"""Seconds a retry started here gets to end after SIGINT when the application stops."""


class ActionRefused(Exception):
    """An action that changed nothing, with the one line that says why."""


@dataclass
class _Child:
    proc: subprocess.Popen[bytes]
    stderr: IO[bytes]
    run_id: str


class Actions:
    """The actions on a set of state directories, and the retries they started."""

    def __init__(self) -> None:
        self._children: list[_Child] = []
        self._lock = threading.Lock()

    def cancel(self, store: Store, run_id: str) -> str:
        """Stop live run ``run_id`` as ``fleetrun cancel`` does."""
        try:
            run = live_run(store.state_dir, run_id)
            cancel_run(run)
        except FleetrunError as e:
            raise ActionRefused(str(e)) from None
        return f"cancelling run {run.id} (pid {run.pid}): running tasks get their grace period"

    def promote(self, store: Store, run_id: str) -> str:
        """Open the next wave of live run ``run_id`` as ``fleetrun promote`` does."""
        try:
            run = live_run(store.state_dir, run_id)
            return promote_run(run, store.state_dir)
        except FleetrunError as e:
            raise ActionRefused(str(e)) from None

    def retry(self, store: Store, run_id: str) -> tuple[str, str | None]:
        """Start ``fleetrun retry RUN`` and wait (at most ``RETRY_WAIT`` s) until its
        run is on record: ``(what happened, the new run's id or None)``. A retry
        that refuses (nothing to retry, the plan is running) is ``ActionRefused``
        with its own error line."""
        before = self._retries_of(store, run_id)
        err = tempfile.TemporaryFile()  # noqa: SIM115 - kept open while the child runs
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "fleetrun", "retry", run_id,
                 "--state-dir", str(store.state_dir), "--plain"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )  # fmt: skip
        except OSError as e:
            err.close()
            raise ActionRefused(f"cannot start fleetrun retry: {e.strerror or e}") from None
        child = _Child(proc, err, run_id)
        with self._lock:
            self._children.append(child)
        deadline = time.monotonic() + RETRY_WAIT
        while time.monotonic() < deadline:
            new = self._retries_of(store, run_id) - before
            if new:
                new_id = sorted(new)[-1]
                return f"retrying run {run_id} as run {new_id} (pid {proc.pid})", new_id
            code = proc.poll()
            if code is not None:
                line = _last_line(err)
                if code == 0:
                    return line or f"fleetrun retry {run_id} ended: nothing to retry", None
                raise ActionRefused(line or f"fleetrun retry {run_id} exited {code}")
            time.sleep(0.05)
        text = f"fleetrun retry {run_id} started (pid {proc.pid}); its run is not on record yet"
        return text, None

    def _retries_of(self, store: Store, run_id: str) -> set[str]:
        try:
            reader = store.reader()
        except FleetrunError:
            return set()
        return {
            r[0] for r in reader.conn.execute("SELECT id FROM runs WHERE parent_id=?", (run_id,))
        }

    @property
    def running(self) -> int:
        """Retries started here that still run."""
        with self._lock:
            self._reap()
            return len(self._children)

    def _reap(self) -> None:
        for c in [c for c in self._children if c.proc.poll() is not None]:
            c.stderr.close()
            self._children.remove(c)

    def close(self) -> None:
        """End every retry started here that still runs: SIGINT (a retry stops as on
        Ctrl-C and records it), ``STOP_GRACE`` seconds, then SIGKILL; reap them."""
        with self._lock:
            children, self._children = self._children, []
        for c in children:
            if c.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(c.proc.pid, signal.SIGINT)
        deadline = time.monotonic() + STOP_GRACE
        for c in children:
            try:
                c.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                c.proc.kill()
                c.proc.wait()
            c.stderr.close()


def _last_line(f: IO[bytes]) -> str:
    """The last non-blank line written to ``f``, without a leading ``error: ``."""
    f.seek(0)
    lines = [ln.strip() for ln in f.read()[-4096:].decode("utf-8", "replace").splitlines()]
    lines = [ln for ln in lines if ln]
    last = lines[-1] if lines else ""
    return last.removeprefix("error: ")
