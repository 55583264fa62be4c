"""The chain138 example through the CLI: the failure story, and SIGKILL torture.

The stand-in scripts append one line per execution to
``$CHAIN138_MARKER_DIR/<task>@<region>`` (``<run id> attempt=N``): the tests
count executions from those files and compare them with the journal.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import time
import uuid
from collections import Counter
from pathlib import Path

from fleetrun.plan import expand, load_plan
from fleetrun.state import Journal

from ._helpers import (
    CHAIN138,
    fleetrun,
    kill_processes_with_env,
    show_json,
    spawn,
)

SCALE = "0.05"


def _markers(marker_dir: Path) -> dict[str, list[str]]:
    """Run ids of every execution, per instance key."""
    return {
        p.name: [line.split()[0] for line in p.read_text().splitlines()]
        for p in marker_dir.iterdir()
    }


def test_failure_story_retry_runs_exactly_the_failed_and_dependents(tmp_path: Path) -> None:
    state, marks = tmp_path / "st", tmp_path / "marks"
    marks.mkdir()
    env = {"CHAIN138_SCALE": SCALE, "CHAIN138_MARKER_DIR": str(marks)}
    res = fleetrun("apply", str(CHAIN138), "--state-dir", str(state),
                   extra_env={**env, "FAIL_REGIONS": "uksouth,japaneast"})  # fmt: skip
    assert res.returncode == 1, res.stdout + res.stderr
    first = show_json(state)
    states = {i["key"]: i["status"] for i in first["instances"]}
    failed = sorted(k for k, s in states.items() if s == "failed")
    skipped = sorted(k for k, s in states.items() if s == "skipped")
    assert failed == ["infra@japaneast", "infra@uksouth"]
    assert skipped == sorted(
        f"{t}@{r}" for t in ("k8s", "besu", "verify-region") for r in ("japaneast", "uksouth")
    )
    assert {s for k, s in states.items() if k not in failed + skipped} == {"succeeded"}

    res = fleetrun("retry", "--state-dir", str(state), extra_env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    second = show_json(state)
    run2 = second["run"]["id"]
    assert second["run"]["parent_id"] == first["run"]["id"]
    ran = sorted(i["key"] for i in second["instances"] if i["status"] == "succeeded")
    assert ran == sorted(failed + skipped)
    assert {i["status"] for i in second["instances"] if i["key"] not in ran} == {"reused"}
    # Markers agree: the retry executed exactly those 8 instances, once each.
    executed = Counter(k for k, runs in _markers(marks).items() for r in runs if r == run2)
    assert sorted(executed) == ran
    assert set(executed.values()) == {1}

    hist = json.loads(fleetrun("history", "--state-dir", str(state), "--format", "json").stdout)
    assert [(r["id"], r["parent_id"], r["status"]) for r in hist] == [
        (run2, first["run"]["id"], "succeeded"),
        (first["run"]["id"], None, "failed"),
    ]
    line = fleetrun("history", "--state-dir", str(state)).stdout.splitlines()[1].split()
    assert line[:4] == [run2, first["run"]["id"], "retry", "succeeded"]


def _finish_and_verify(state: Path, marks: Path, base: list[str], env: dict[str, str]) -> int:
    """Retry until done, then check the journal against the markers; return the
    number of runs that a kill cut off mid-run (work done and work left)."""
    for _ in range(5):
        res = fleetrun("retry", *base, extra_env=env)
        if res.returncode == 0:
            break
    assert res.returncode == 0, res.stdout + res.stderr
    with Journal(state) as j:
        assert j.recover() == []
        assert j.check() == []
        runs = j.runs()
        succeeded_in: dict[str, str] = {}
        for r in reversed(runs):  # oldest first
            for i in j.instances(r.id):
                if i.status == "succeeded":
                    assert i.key not in succeeded_in, f"{i.key} succeeded twice"
                    succeeded_in[i.key] = r.id
        latest = j.instances(runs[0].id)
    assert {i.status for i in latest} <= {"succeeded", "reused"}
    assert len(latest) == len(succeeded_in) == len(expand(load_plan(CHAIN138)).nodes)
    started = {r.id: r.started_at for r in runs}
    # No execution of an instance in a run that started after the run in which it
    # succeeded: once the journal says succeeded, it is never executed again.
    for key, exec_runs in _markers(marks).items():
        done = started[succeeded_in[key]]
        later = [r for r in exec_runs if r in started and started[r] > done]
        assert later == [], f"{key} executed again in {later} after succeeding"
    raw = sqlite3.connect(state / "state.db")
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    raw.close()
    return sum(
        1
        for r in runs
        if r.status == "interrupted"
        and r.counts.get("succeeded")
        and (r.counts.get("interrupted") or r.counts.get("not_started"))
    )


def test_sigkill_torture_never_reruns_a_success(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    rng = random.Random(138)
    kills, chains, cut = 0, 0, 0
    deadline = time.monotonic() + 30
    try:
        while kills < 21 and time.monotonic() < deadline:
            # One chain: apply, then resume/retry after each kill until the work is done.
            state, marks = tmp_path / f"st{chains}", tmp_path / f"marks{chains}"
            marks.mkdir()
            env = {"CHAIN138_SCALE": SCALE, "CHAIN138_MARKER_DIR": str(marks), "TEST_TAG": tag}
            base = ["--state-dir", str(state), "--kill-orphans", "--grace", "0.2"]
            step = 0
            while kills < 21 and time.monotonic() < deadline:
                if step == 0:
                    args = ["apply", str(CHAIN138), *base]
                elif step % 2:
                    args = ["apply", str(CHAIN138), "--resume", *base]
                else:
                    args = ["retry", *base]
                step += 1
                p = spawn(*args, extra_env=env)
                time.sleep(rng.uniform(0.3, 0.9))
                finished = p.poll() is not None
                if not finished:
                    p.send_signal(signal.SIGKILL)
                    kills += 1
                out = p.communicate()[0] or ""
                if finished:
                    nothing_yet = "is on record" in out or "no run has been recorded" in out
                    if p.returncode == 2 and nothing_yet:
                        # The kill before came so early that no run was journaled:
                        # there is nothing to resume or retry yet, so start over.
                        step = 0
                        continue
                    assert p.returncode == 0, out
                    break  # the work is done: verify below, then a fresh chain
            cut += _finish_and_verify(state, marks, base, env)
            chains += 1
    finally:
        kill_processes_with_env("TEST_TAG", tag)  # unjournaled children of killed runs
    print(f"{kills} kills over {chains} chain(s), {cut} runs cut off mid-run")
    assert kills >= 20
    assert cut >= 8
