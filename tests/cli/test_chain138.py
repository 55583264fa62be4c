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
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from fleetrun.errors import StateError
from fleetrun.plan import expand, load_plan
from fleetrun.state import Journal, JournalReader, RunRecord

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


@pytest.mark.slow
def test_failure_story_retry_runs_exactly_the_failed_and_dependents(tmp_path: Path) -> None:
    state, marks = tmp_path / "st", tmp_path / "marks"
    marks.mkdir()
    env = {"CHAIN138_SCALE": SCALE, "CHAIN138_MARKER_DIR": str(marks)}
    res = fleetrun("apply", str(CHAIN138), "--state-dir", str(state),
                   extra_env={**env, "FAIL_REGIONS": "ukwest,japaneast"})  # fmt: skip
    assert res.returncode == 1, res.stdout + res.stderr
    first = show_json(state)
    states = {i["key"]: i["status"] for i in first["instances"]}
    failed = sorted(k for k, s in states.items() if s == "failed")
    skipped = sorted(k for k, s in states.items() if s == "skipped")
    assert failed == ["infra@japaneast", "infra@ukwest"]
    assert skipped == sorted(
        f"{t}@{r}" for t in ("k8s", "besu", "verify-region") for r in ("japaneast", "ukwest")
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


_REGIONS = sorted(
    {n.target for n in expand(load_plan(CHAIN138)).nodes if n.task == "k8s" and n.target}
)
# Every cluster name is a secret value (its variable name holds TOKEN): infra
# publishes it, k8s receives it as an argument and publishes it back as
# ``context``. A retry that handed k8s the redacted form would record ``***``.
_SECRET_CLUSTERS = {f"CHAIN138_TOKEN_{i}": f"aks-chain138-{r}" for i, r in enumerate(_REGIONS)}


def _runs(state: Path) -> list[RunRecord]:
    """The runs on record, oldest first; [] while the first run is not journaled yet."""
    try:
        with JournalReader(state) as journal:
            return journal.runs()[::-1]
    except (StateError, sqlite3.Error):
        return []


def _wait_for_a_new_run(state: Path, known: int, p: subprocess.Popen[str]) -> RunRecord | None:
    """The run that ``p`` journaled after the ``known`` ones, or None when ``p``
    ended without journaling one (nothing was left to do)."""
    while True:
        ended = p.poll() is not None
        runs = _runs(state)
        if len(runs) > known:
            assert len(runs) == known + 1, [r.id for r in runs]
            return runs[-1]
        if ended:
            return None
        time.sleep(0.02)


def _cut(state: Path, run: RunRecord, p: subprocess.Popen[str], rng: random.Random) -> bool:
    """SIGKILL ``p`` at a random point of its journaled ``run``: a short while
    after it began, or once a random share of what it has to run succeeded.
    False when the run ended on its own first."""
    if rng.random() < 0.5:
        deadline = time.monotonic() + rng.uniform(0.0, 0.4)
        while p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    else:
        want = rng.randint(1, max(1, run.counts.get("pending", 0) // 2))
        while p.poll() is None:
            runs = _runs(state)
            if runs and runs[-1].id == run.id and runs[-1].counts.get("succeeded", 0) >= want:
                break
            time.sleep(0.02)
    if p.poll() is not None:
        return False
    p.send_signal(signal.SIGKILL)
    p.wait()
    return True


def _verify_chain(state: Path, marks: Path, cycles: list[tuple[str, bool]]) -> int:
    """Check the journal of a finished chain against the markers and the
    ``(run id, killed)`` of every command that journaled a run; return how many
    runs a kill cut off mid-run (work done and work left)."""
    with Journal(state) as j:
        assert j.recover() == []
        assert j.check() == []
        runs = j.runs()[::-1]  # oldest first
        # Every command that journaled a run is on record, in order, each run
        # continuing the one before it; nothing else is.
        assert [(r.id, r.parent_id) for r in runs] == [
            (run_id, cycles[k - 1][0] if k else None) for k, (run_id, _) in enumerate(cycles)
        ]
        # A killed run reads as interrupted, or succeeded where the kill came
        # after its end was committed; the run that finished the chain succeeded.
        for r, (_, killed) in zip(runs, cycles, strict=True):
            assert r.status in ({"interrupted", "succeeded"} if killed else {"succeeded"}), r
        assert runs[-1].status == "succeeded"
        succeeded_in: dict[str, str] = {}
        for r in runs:
            for i in j.instances(r.id):
                if i.status == "succeeded":
                    assert i.key not in succeeded_in, f"{i.key} succeeded twice"
                    succeeded_in[i.key] = r.id
        latest = j.instances(runs[-1].id)
        exact = j.exact_outputs(runs[-1].id)
    # After every kill and retry, each dependent received the real secret value.
    for r in _REGIONS:
        assert exact[f"k8s@{r}"]["context"] == f"aks-chain138-{r}", r
        assert {i.key: i for i in latest}[f"k8s@{r}"].outputs["context"] == "***"
    assert {i.status for i in latest} <= {"succeeded", "reused"}
    assert len(latest) == len(succeeded_in) == len(expand(load_plan(CHAIN138)).nodes)
    started = {r.id: r.started_at for r in runs}
    executions = _markers(marks)
    for key, exec_runs in executions.items():
        # Every execution belongs to a run on record ...
        assert set(exec_runs) <= set(started), (key, exec_runs)
        # ... and none to a run that started after the run in which the instance
        # succeeded: once the journal says succeeded, it is never executed again.
        done = started[succeeded_in[key]]
        later = [r for r in exec_runs if started[r] > done]
        assert later == [], f"{key} executed again in {later} after succeeding"
    # Every success on record is an execution in that run.
    for key, run_id in succeeded_in.items():
        assert run_id in executions.get(key, []), f"{key} succeeded in {run_id} unexecuted"
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


# One chain cuts an apply, a resume and a retry, then each again (a resume once
# more), and a resume runs it to its end: every kind of command is killed at
# least once. Each command is a Python start and a journaled run; more chains
# repeat the same cuts at the cost of seconds each.
CHAINS = 1
KILLS_PER_CHAIN = 5


# A fixed amount of work with no deadline: on a loaded machine it takes longer.
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkill_torture_never_reruns_a_success(tmp_path: Path) -> None:
    """Chains of apply, then ``apply --resume`` and ``retry`` in turn, each SIGKILLed
    at a random point once its run is journaled, until one runs to its end.

    What must hold whatever the timing: no success is ever executed again, the
    journal stays consistent, and every command's run is on record and is
    continued by the next. How many kills cut a run mid-way depends on the
    machine's speed and is only reported."""
    tag = uuid.uuid4().hex
    rng = random.Random(138)
    kills, cut = 0, 0
    try:
        for chain in range(CHAINS):
            state, marks = tmp_path / f"st{chain}", tmp_path / f"marks{chain}"
            marks.mkdir()
            env = {"CHAIN138_SCALE": SCALE, "CHAIN138_MARKER_DIR": str(marks), "TEST_TAG": tag}
            env.update(_SECRET_CLUSTERS)
            base = ["--state-dir", str(state), "--kill-orphans", "--grace", "0.2"]
            cycles: list[tuple[str, bool]] = []  # (run id, killed) per journaled run
            for step in range(KILLS_PER_CHAIN + 1):
                if step == 0:
                    args = ["apply", str(CHAIN138), *base]
                elif step % 2:
                    args = ["apply", str(CHAIN138), "--resume", *base]
                else:
                    args = ["retry", *base]
                p = spawn(*args, extra_env=env)
                try:
                    run = _wait_for_a_new_run(state, len(cycles), p)
                    killed = run is not None and step < KILLS_PER_CHAIN and _cut(state, run, p, rng)
                    out = p.communicate(timeout=60)[0] or ""
                finally:
                    if p.poll() is None:
                        p.kill()
                        p.wait()
                if run is None:
                    # Only when the run before succeeded although it was killed.
                    assert p.returncode == 0, out
                    assert "nothing to" in out, out
                    assert cycles
                    assert cycles[-1][1]
                    break
                cycles.append((run.id, killed))
                if killed:
                    kills += 1
                    continue
                assert p.returncode == 0, out
                break
            cut += _verify_chain(state, marks, cycles)
    finally:
        kill_processes_with_env("TEST_TAG", tag)  # unjournaled children of killed runs
    print(f"{kills} kills over {CHAINS} chains, {cut} runs cut off mid-run")
    # A chain's first run lasts seconds (its pool starts 10 instances a second),
    # far longer than a poll: it is always killed.
    assert kills >= CHAINS
