"""Ending what a dead run left outside its process groups (``_orphans.kill_all``),
on the path this process runs (``FLEETRUN_PLATFORM=portable``: psutil): a
process is ended only while it is the one found, and whatever carries a dead
run's tag is ended with it. Real processes."""

from __future__ import annotations

import os
import subprocess
import uuid

from fleetrun.executors._orphans import kill_all
from fleetrun.executors._platform import procs_module
from fleetrun.names import ATTEMPT_ID, RUN_ID_ENV


def _sleep(**env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "60"], start_new_session=True, env={**os.environ, **env})


def test_a_process_is_ended_only_while_its_start_time_is_the_one_found() -> None:
    view = procs_module().VIEW
    p = _sleep()
    try:
        start = view.start_time(p.pid)
        assert start is not None
        # Another start time: the pid was reused by another process.
        kill_all(view, [], {p.pid: start + 1}, [], grace=0.1)
        assert p.poll() is None
        kill_all(view, [], {p.pid: start}, [], grace=5.0)
        assert p.wait(timeout=10) < 0  # ended by a signal
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_whatever_carries_a_dead_runs_tag_is_ended_with_it() -> None:
    view = procs_module().VIEW
    run = f"dead-{uuid.uuid4().hex}"
    tagged = _sleep(**{RUN_ID_ENV: run, ATTEMPT_ID: f"{run}.0.1"})
    other = _sleep(**{RUN_ID_ENV: f"other-{run}", ATTEMPT_ID: f"other-{run}.0.1"})
    try:
        kill_all(view, [], {}, [run], grace=5.0)
        assert tagged.wait(timeout=10) < 0
        assert other.poll() is None  # another run's process is left alone
    finally:
        for p in (tagged, other):
            if p.poll() is None:
                p.kill()
                p.wait()
