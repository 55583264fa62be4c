"""Steering a live run from another process: find it, stop it, open its next wave.

``fleetrun cancel`` and ``fleetrun promote`` and the web application's actions
call these, so a run is cancelled or promoted one way whoever asks. A live run
listens for signals (``Session``): SIGINT stops it as Ctrl-C in its own
terminal would (a second signal ends its running tasks at once), SIGUSR1 opens
its next rollout wave.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

from fleetrun.errors import StateError, UsageError
from fleetrun.layout import RunLayout
from fleetrun.state import Journal, JournalReader, RunRecord, process_alive

SECOND_PRESS_DELAY = 1.0
"""Seconds between the two signals of ``cancel_run(now=True)``."""


def live_run(state_dir: Path, run_ref: str | None, plan_path: str | None = None) -> RunRecord:
    """The live run ``run_ref`` (or the only live one, of ``plan_path``), checked
    to be this host's and still alive; ``UsageError`` otherwise (nothing to act
    on: exit 2, as for a run that is not on record).

    Recovers the record first (a run whose process died is no longer live)."""
    with Journal.open_existing(state_dir) as j:
        j.recover()
        if run_ref is None:
            live = [r for r in j.runs(plan_path) if r.ended_at is None]
            if not live:
                raise UsageError(f"no run is live in {j.state_dir}; `fleetrun history` lists them")
            if len(live) > 1:
                ids = ", ".join(r.id for r in live)
                raise UsageError(f"several runs are live ({ids}); name the one to cancel")
            r = live[0]
        else:
            r = j.run(run_ref)
    if r.ended_at is not None:
        raise UsageError(f"run {r.id} is not live: it ended {r.status}")
    if r.host != socket.gethostname():
        raise UsageError(f"run {r.id} runs on host {r.host} (pid {r.pid}); cancel it there")
    if not process_alive(r.pid, r.pid_start):
        raise UsageError(f"run {r.id} is not live: its process {r.pid} is gone")
    return r


def cancel_run(run: RunRecord, *, now: bool = False) -> None:
    """Stop ``run`` (from ``live_run``) as Ctrl-C would: no new task starts and
    running tasks get the grace period; ``now`` ends them at once (a second
    "press", a moment later). Blocks ``SECOND_PRESS_DELAY`` seconds with ``now``."""
    try:
        os.kill(run.pid, signal.SIGINT)
        if now:
            # The second "press", as a human gives it: a moment later (the run
            # must have begun ending its tasks for "now" to cut the grace
            # short), and of another kind (two pending SIGINTs merge into one).
            # Once only: a signal after the run removed its handlers would
            # kill fleetrun before it closes the record.
            time.sleep(SECOND_PRESS_DELAY)
            if process_alive(run.pid, run.pid_start):
                os.kill(run.pid, signal.SIGTERM)
    except ProcessLookupError:
        raise UsageError(f"run {run.id} ended meanwhile") from None
    except PermissionError:
        raise StateError(
            f"run {run.id} (pid {run.pid}) belongs to another user; cancel it as them"
        ) from None


def _approved_wave(path: Path, since: float) -> int | None:
    """The wave the run's promote file names, when the last promote wrote it at
    ``since`` or later (the open wave's opening: in ``--mode phased`` an older
    file names a wave of an earlier phase), else None."""
    try:
        if path.stat().st_mtime < since:
            return None
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def promote_run(run: RunRecord, state_dir: Path, *, early: bool = False) -> str:
    """Open the rollout wave of ``run`` (from ``live_run``) that waits for a
    promote, and say which (``rollout.pause: true``). One promote opens one
    wave: with no wave waiting (the one the last promote opened still runs) it
    is refused with a ``UsageError`` — unless ``early``, which approves the next
    wave now, to open once the running ones are done. The wave is named in the
    run's promote file, so a promote that arrives after its wave opened
    changes nothing; while that file names a wave after the open one (an
    earlier ``early``), a promote says so and sends nothing."""
    with JournalReader(state_dir) as r:
        steps = r.event_data(run.id, "WaveChanged")
    if not steps:
        raise UsageError(f"run {run.id} has no rollout waves: nothing to promote")
    last = steps[-1]
    wave, waves, state = int(last["wave"]), int(last["waves"]), str(last["state"])
    target = RunLayout.of(state_dir, run.id).promote_file
    if state == "halted":
        raise UsageError(f"run {run.id}'s rollout halted: {last.get('reason', '')}")
    approved = _approved_wave(target, float(last.get("at", 0.0)))
    if state == "open" and approved is not None and approved > wave:
        # An earlier `--early` approved the wave after the open one: it stands.
        return (
            f"run {run.id}: wave {approved} is already approved; "
            f"it opens once wave {approved - 1} is done"
        )
    if state == "waiting":
        what = f"wave {wave}/{waves} opens"
    elif wave >= waves:
        raise UsageError(f"run {run.id} has opened its last wave ({wave}/{waves})")
    elif early:
        wave += 1
        what = f"wave {wave}/{waves} opens once wave {wave - 1} is done"
    else:
        raise UsageError(
            f"no wave of run {run.id} waits for a promote: wave {wave}/{waves} is open; "
            f"wave {wave + 1} will wait when it is due (`fleetrun promote --early` "
            "approves it now)"
        )
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    try:
        tmp.write_text(f"{wave}\n")
        tmp.replace(target)
    except OSError as e:
        raise StateError(f"cannot write {target}: {e.strerror or e}") from None
    try:
        os.kill(run.pid, signal.SIGUSR1)
    except ProcessLookupError:
        raise UsageError(f"run {run.id} ended meanwhile") from None
    except PermissionError:
        raise StateError(f"run {run.id} (pid {run.pid}) belongs to another user") from None
    return f"promoted run {run.id} (pid {run.pid}): {what}"
