"""Shared pools (``pools.X.shared``): one limit for every run of a state directory.

The first tests drive two runs' ``SharedLimits`` in this process against one
real coordination file (SQLite), on explicit clock values; the last ones run
two real ``fleetrun apply`` processes side by side, read the counts and
orders from their journals, and SIGKILL one of them.
"""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fleetrun.engine import read_shared_pools
from fleetrun.engine._adaptive import AdaptiveLimit
from fleetrun.engine._limits import DEFAULT_THROTTLE, ThrottleMatch
from fleetrun.engine._shared import (
    FRESH,
    GIVE_UP_AFTER,
    RECHECK,
    RECLAIM_EVERY,
    SharedLimits,
    limits_for,
)
from fleetrun.engine._shared_file import _SCHEMA, _statements, config_of, open_pools_db
from fleetrun.engine._shared_state import load_adaptive, store_adaptive
from fleetrun.engine._shared_store import SNAPSHOT_EVERY, SharedStore
from fleetrun.engine.testing import graph, max_overlap, task
from fleetrun.errors import PlanError, StateDirError
from fleetrun.plan import AdaptiveSettings, Graph, Pool, load_plan_text
from fleetrun.state import JournalReader

ROOT = Path(__file__).resolve().parents[2]

Changes = list[tuple[str, float | None, int | None, float, str]]


def _graph(**pool: object) -> Graph:
    spec: dict[str, object] = {"concurrency": 2, "shared": "sub-1", **pool}
    return graph([task("t", "true", pools=["api"])], pools=[Pool("api", **spec)])  # type: ignore[arg-type]


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[Callable[..., tuple[SharedLimits, Changes]]]:
    """Start a run's limits on ``tmp_path``'s coordination file: ``runs(name, **pool)``."""
    made: list[SharedLimits] = []

    def start(run_id: str, **pool: object) -> tuple[SharedLimits, Changes]:
        changes: Changes = []
        limits = limits_for(_graph(**pool), 100.0, lambda *c: changes.append(c), tmp_path, run_id)
        assert isinstance(limits, SharedLimits)
        made.append(limits)
        return limits, changes

    yield start
    for limits in made:
        limits.close()


API = (0,)  # the one pool's signature


def _nothing_recorded(plan: Path) -> None:
    """No run of ``plan`` is on record (its state directory has no run)."""
    state = plan.parent / ".fleetrun"
    if (state / "state.db").exists():
        with JournalReader(state) as r:
            assert list(r.runs()) == []


def test_a_full_pool_holds_other_runs_back_until_a_slot_comes_back(runs) -> None:
    a, _ = runs("run-a")
    b, _ = runs("run-b")
    assert a.wait_time(API, 100.0) == 0
    assert a.take(API, 100.0)
    assert a.wait_time(API, 100.0) == 0
    assert a.take(API, 100.0)
    # Full of run-a's slots: run-a waits for its own releases (inf), run-b
    # looks again on its timer (no event comes from another process).
    assert a.wait_time(API, 100.0) == math.inf
    assert b.wait_time(API, 100.0) == RECHECK
    assert b.blocked_by == "pool api full"
    assert not b.take(API, 100.0)
    a.release(API)
    later = 100.0 + RECHECK + FRESH
    assert b.wait_time(API, later) == 0
    assert b.take(API, later)
    assert [p.in_use for p in read_shared_pools(b._store.path.parent)] == [2]


def test_a_slot_taken_by_another_run_since_wait_time_is_not_taken_twice(runs) -> None:
    a, _ = runs("run-a")
    b, _ = runs("run-b")
    assert a.take(API, 100.0)
    assert b.wait_time(API, 100.0) == 0  # one slot left, as b sees it
    assert a.take(API, 100.0)  # ... taken by a meanwhile
    assert not b.take(API, 100.0)
    # Progress: the next round does not try again at once.
    assert b.wait_time(API, 100.0) > 0
    assert [p.in_use for p in read_shared_pools(b._store.path.parent)] == [2]


def test_rate_and_retry_after_pause_are_one_for_every_run(runs) -> None:
    a, _ = runs("run-a", concurrency=None, rate=2.0, throttle=DEFAULT_THROTTLE)
    b, b_changes = runs("run-b", concurrency=None, rate=2.0, throttle=DEFAULT_THROTTLE)
    assert a.take(API, 100.0)
    assert b.wait_time(API, 100.0) == pytest.approx(0.5)  # the token a took
    assert b.blocked_by == "pool api rate"
    # a Retry-After read by run-a pauses run-b's starts too, and run-b says whose.
    signal_ = a.throttled((ThrottleMatch(0, "exit 75", 3.0),), 100.0, 100.2)
    assert signal_ is not None
    assert signal_.pause == pytest.approx(3.0)
    assert b.wait_time(API, 100.3) == pytest.approx(2.9)
    assert b.blocked_by == "pool api paused for Retry-After"
    assert b_changes[-1][4] == "paused 3s for Retry-After (run run-a)"
    assert b.wait_time(API, 103.3) == 0
    assert b_changes[-1][4] == "resumed: the Retry-After pause is over"


def test_a_shared_pause_is_said_to_three_digits_as_a_runs_own_pool_says_it(runs) -> None:
    a, a_changes = runs("run-a", concurrency=None, rate=2.0, throttle=DEFAULT_THROTTLE)
    b, b_changes = runs("run-b", concurrency=None, rate=2.0, throttle=DEFAULT_THROTTLE)
    assert a.take(API, 100.0)
    assert b.wait_time(API, 100.0) > 0  # run-b has joined the pool
    assert a.throttled((ThrottleMatch(0, "exit 75", 1.18986),), 100.0, 100.2) is not None
    assert a_changes[-1][4] == "paused 1.19s for Retry-After"
    assert b.wait_time(API, 100.3) == pytest.approx(1.08986)
    assert b_changes[-1][4] == "paused 1.19s for Retry-After (run run-a)"


def test_the_first_runs_settings_hold_and_a_later_run_is_told(runs) -> None:
    a, _ = runs("run-a", concurrency=2)
    assert a.wait_time(API, 100.0) == 0  # joins: opens the pool with its settings
    b, b_changes = runs("run-b", concurrency=5, rate=4.0)
    b.wait_time(API, 100.0)
    assert b.cap("api") == 2
    assert [c[4] for c in b_changes] == [
        "shared pool 'sub-1': the limits of run run-a, which opened it, hold "
        "(concurrency 2; this plan: concurrency 5, rate 4/s)"
    ]
    # Once nobody uses it, the next run opens it with its own settings.
    a.close()
    b.close()
    c, c_changes = runs("run-c", concurrency=5)
    assert c.wait_time(API, 101.0) == 0
    assert c.cap("api") == 5
    assert c_changes == []


def test_a_dead_runs_slots_come_back(runs, tmp_path: Path) -> None:
    # A real process takes both slots and dies without giving them back.
    kill, _ = _dead_holder(tmp_path, 2)
    try:
        b, _ = runs("run-b")
        assert b.wait_time(API, 100.0) == RECHECK  # alive: its slots are its own
        assert [len(p.users) for p in read_shared_pools(tmp_path)] == [2]
    finally:
        kill()
    # The next look for dead users (RECLAIM_EVERY later) finds it gone.
    assert b.wait_time(API, 101.0) == 0
    assert b.take(API, 101.0)
    (pool,) = read_shared_pools(tmp_path)
    assert pool.in_use == 1
    assert [u.run_id for u in pool.users] == ["run-b"]


def _dead_holder(tmp_path: Path, slots: int, **pool: object) -> tuple[Callable[[], None], int]:
    """A real process that joins pool ``sub-1`` and takes ``slots`` slots; returns
    a function that SIGKILLs it (it never gives them back) and its pid."""
    spec = {"concurrency": 2, "shared": "sub-1", **pool}
    code = (
        "import sys; from pathlib import Path; "
        "from fleetrun.engine._shared_store import SharedStore; "
        "from fleetrun.engine._shared_file import config_of; "
        "from fleetrun.plan import Pool; "
        "s = SharedStore(Path(sys.argv[1]), 'run-dead'); "
        f"s.join(config_of(Pool('api', **{spec!r})), 100.0); "
        f"assert all(s.take(('sub-1',), 100.0, [[]])[0] for _ in range({slots})); "
        "print('held', flush=True); sys.stdin.read()"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline() == "held\n"

    def kill() -> None:
        child.kill()
        child.wait()
        assert child.stdin is not None
        child.stdin.close()
        assert child.stdout is not None
        child.stdout.close()

    return kill, child.pid


def test_a_dead_runs_slots_come_back_at_the_next_start_of_a_pool_not_full(
    runs, tmp_path: Path
) -> None:
    kill, _ = _dead_holder(tmp_path, 3, concurrency=16)
    try:
        b, _ = runs("run-b", concurrency=16)
        assert b.wait_time(API, 100.0) == 0  # joined while the holder was alive
        assert b.take(API, 100.0)
        (pool,) = read_shared_pools(tmp_path)
        assert (pool.in_use, pool.gone_slots) == (4, 0)
    finally:
        kill()
    # Gone: the reader says so and does not count its slots as in use ...
    (pool,) = read_shared_pools(tmp_path)
    assert (pool.in_use, pool.gone_slots) == (1, 3)
    assert [(u.run_id, u.alive) for u in pool.users] == [("run-dead", False), ("run-b", True)]
    # ... and run-b's next start takes them back, though the pool is far from full.
    later = 100.0 + RECLAIM_EVERY
    assert b.wait_time(API, later) == 0
    assert b.take(API, later)
    (pool,) = read_shared_pools(tmp_path)
    assert (pool.in_use, pool.gone_slots) == (2, 0)
    assert [u.run_id for u in pool.users] == ["run-b"]
    with sqlite3.connect(tmp_path / "pools.db") as db:
        assert db.execute("SELECT in_use FROM pools").fetchall() == [(2,)]


def test_a_dead_runs_slots_come_back_when_a_run_leaves(runs, tmp_path: Path) -> None:
    kill, _ = _dead_holder(tmp_path, 2, concurrency=16)
    try:
        b, _ = runs("run-b", concurrency=16)
        assert b.wait_time(API, 100.0) == 0
    finally:
        kill()
    b.close()  # its last use of the pool
    with sqlite3.connect(tmp_path / "pools.db") as db:
        assert db.execute("SELECT in_use FROM pools").fetchall() == [(0,)]
        assert db.execute("SELECT COUNT(*) FROM users").fetchall() == [(0,)]


def test_the_adaptive_state_is_shared(runs) -> None:
    adaptive = AdaptiveSettings()
    a, a_changes = runs("run-a", concurrency=None, rate=40.0, adaptive=adaptive)
    b, b_changes = runs("run-b", concurrency=None, rate=40.0, adaptive=adaptive)
    t = 100.0
    assert a.wait_time(API, t) == 0
    assert b.wait_time(API, t) == 0
    start_rate = a.rate("api")
    for _ in range(40):  # attempts of both runs, the throttles all in run-a
        for limits in (a, b):
            t += 0.05
            if limits.wait_time(API, t) == 0 and limits.take(API, t):
                limits.release(API)
                limits.succeeded(API, t, t + 0.01)
        t += 0.05
        a.throttled((ThrottleMatch(0, "exit 75", None),), t - 0.01, t)
        if a_changes:
            break
    assert a_changes, "a throttle never changed the adaptive pool"
    assert a.rate("api") != start_rate
    b.wait_time(API, t + FRESH)
    assert b.rate("api") == a.rate("api")
    assert b_changes[-1][4] == f"{a_changes[-1][4]} (run run-a)"


def test_a_concurrency_throttle_of_a_shared_pool_delays_only_its_attempt(runs) -> None:
    """As a run's own pool: a throttle that the shared adaptive state counts
    against the concurrency does not pause the pool for every run, only the
    throttled attempt waits its Retry-After; a start throttled within that
    delay pauses the whole pool, for every run."""
    adaptive = AdaptiveSettings(initial=8)
    a, a_changes = runs("run-a", concurrency=8, adaptive=adaptive)
    b, _ = runs("run-b", concurrency=8, adaptive=adaptive)
    t = 100.0
    for _ in range(4):
        for limits in (a, b):
            assert limits.wait_time(API, t) == 0
            assert limits.take(API, t)
    a.release(API)  # run-a's throttled attempt ended
    signal = a.throttled((ThrottleMatch(0, "exit 75", 1.0),), t, t + 0.1)
    assert signal is not None
    assert signal.pause == 1.0  # its own retry waits for the Retry-After
    assert a.paused_until[0] < t  # the pool is not paused ...
    b.release(API)
    assert b.wait_time(API, t + 0.2) == 0  # ... for the other run either
    assert a.cap("api") == 7  # 7 were admitted
    said = a_changes[-1][4]
    assert said.endswith("(7 in flight, Retry-After 1s, for the throttled attempt only)")
    assert b.take(API, t + 0.2)
    # A start within that delay is throttled too: now the pool pauses, for both runs.
    b.release(API)
    signal = b.throttled((ThrottleMatch(0, "exit 75", 1.0),), t + 0.2, t + 0.3)
    assert signal is not None
    assert b.paused_until[0] == pytest.approx(t + 1.3)
    a.release(API)
    assert a.wait_time(API, t + 0.4) == pytest.approx(0.9)


def test_every_run_holds_the_same_adaptive_state(runs, tmp_path: Path) -> None:
    # Calls made by two runs, past a snapshot: each run's replica, and one
    # rebuilt by a third run from the snapshot and the calls since, are equal.
    adaptive = AdaptiveSettings()
    a, _ = runs("run-a", concurrency=8, rate=40.0, adaptive=adaptive, throttle=DEFAULT_THROTTLE)
    b, _ = runs("run-b", concurrency=8, rate=40.0, adaptive=adaptive, throttle=DEFAULT_THROTTLE)
    t = 100.0
    for i in range(SNAPSHOT_EVERY):
        limits = (a, b)[i % 3 == 0]
        t += 0.06
        if limits.wait_time(API, t) == 0 and limits.take(API, t):
            limits.release(API)
            if i % 17 == 0:
                limits.throttled((ThrottleMatch(0, "exit 75", None),), t - 0.01, t)
            else:
                limits.succeeded(API, t - 0.01, t)
    c = SharedStore(tmp_path, "run-c")
    try:
        with c._write():
            row = c.read("sub-1")
            assert row is not None
            assert row.aseq > 1
            replicas = [s.replica(row, t) for s in (a._store, b._store, c)]
            states = {store_adaptive(r) for r in replicas if r is not None}
    finally:
        c.close()
    assert len(states) == 1


def test_the_adaptive_state_round_trips() -> None:
    limit = AdaptiveLimit(AdaptiveSettings(), 40.0, 8, 10.0)
    for i in range(30):
        limit.succeeded(10.0 + i * 0.1, 10.05 + i * 0.1, 3)
    limit.throttled(12.0, 13.1, 4, 2.0)
    back = load_adaptive(store_adaptive(limit), limit.settings)
    assert back is not None
    for name in AdaptiveLimit.__slots__:
        assert getattr(back, name) == getattr(limit, name), name
    assert load_adaptive('{"rate": 1.0}', limit.settings) is None  # another version's


def test_plan_errors_name_the_shared_key() -> None:
    with pytest.raises(PlanError) as e:
        load_plan_text(
            "pools:\n"
            "  a: {concurrency: 1, shared: 'bad name'}\n"
            "  b: {concurrency: 1, shared: sub-1}\n"
            "  c: {rate: 1/s, shared: sub-1}\n"
            "tasks:\n  t: {run: x}\n",
            "p.yaml",
        )
    problems = [str(d) for d in e.value.diagnostics]
    assert len(problems) == 2
    assert problems[0].startswith("p.yaml:2:31")
    assert "'bad name' is not a valid shared pool name" in problems[0]
    assert problems[1].startswith("p.yaml:4:26")
    assert "pool 'b' already shares 'sub-1'" in problems[1]


@pytest.mark.parametrize("written", ['"sub-1\\n"', "'sub-1\n\n  '", '"\\nsub-1"'])
def test_a_shared_name_with_a_newline_is_a_plan_error(written: str) -> None:
    # "sub-1\n" would otherwise pass a `$`-anchored pattern and name another pool
    # than sub-1 (and break the `fleetrun pools` table).
    with pytest.raises(PlanError) as e:
        load_plan_text(
            f"pools:\n  a: {{concurrency: 1, shared: {written}}}\ntasks:\n  t: {{run: x}}\n",
            "p.yaml",
        )
    problems = [str(d) for d in e.value.diagnostics]
    assert len(problems) == 1
    assert problems[0].startswith("p.yaml:2:")
    assert "is not a valid shared pool name" in problems[0]


# -- two real `fleetrun apply` processes --------------------------------------------------

PLAN = """\
name: {name}
targets: {{r1: {{}}, r2: {{}}, r3: {{}}, r4: {{}}}}
pools:
  api: {{concurrency: {concurrency}, shared: azure-subscription-1}}
tasks:
  call:
    for_each: all
    pools: [api]
    run: {run}
"""

# Waits (bounded) for the test to create the file ``go``, then works a little.
WAIT_GO = "for i in $(seq 1500); do [ -e {go} ] && break; sleep 0.02; done; sleep 0.1"


def _fleetrun(*args: str) -> subprocess.Popen[str]:
    """``python -m fleetrun ARGS`` in the background (output piped)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen(
        [sys.executable, "-m", "fleetrun", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _completed(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m fleetrun ARGS`` run to its end in ``env`` (no input, bounded)."""
    return subprocess.run(
        [sys.executable, "-m", "fleetrun", *args],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def _until(what: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _users() -> dict[str, int]:
    """The live users of this test's shared pools (``FLEETRUN_POOLS_DIR``, set by conftest)."""
    pools = read_shared_pools(Path(os.environ["FLEETRUN_POOLS_DIR"]))
    return {u.run_id: u.slots for p in pools for u in p.users if u.alive}


def _attempts(*states: Path) -> dict[str, list[tuple[float, float]]]:
    out = {}
    for state in states:
        with JournalReader(state) as r:
            for run in r.runs():
                out[run.id] = [(a.started_at, a.ended_at or math.inf) for a in r.attempts(run.id)]
    return out


def _apply(tmp_path: Path, name: str, concurrency: int, run: str) -> subprocess.Popen[str]:
    """Apply plan ``name`` from a folder of its own (a state directory of its own)."""
    folder = tmp_path / name
    folder.mkdir()
    plan = folder / f"{name}.yaml"
    go = tmp_path / "go"
    plan.write_text(PLAN.format(name=name, concurrency=concurrency, run=run.format(go=go)))
    return _fleetrun("apply", str(plan), "--plain")


@pytest.mark.slow
def test_two_applies_keep_one_limit_and_pools_shows_them(tmp_path: Path) -> None:
    # Two plans in two folders: two state directories, one shared pool.
    state, other = tmp_path / "deploy" / ".fleetrun", tmp_path / "status" / ".fleetrun"
    first = _apply(tmp_path, "deploy", 2, WAIT_GO)
    second: subprocess.Popen[str] | None = None
    try:
        _until(lambda: sorted(_users().values()) == [2])  # deploy holds both slots
        # Another plan, naming the same shared pool with other settings.
        second = _apply(tmp_path, "status", 3, WAIT_GO)
        _until(lambda: len(_users()) == 2)
        out, _ = _fleetrun("pools").communicate(timeout=60)
        users = _users()
        (deploy,) = [r for r, slots in users.items() if slots == 2]
        (status,) = [r for r, slots in users.items() if slots == 0]
        lines = out.splitlines()
        assert lines[1] == "azure-subscription-1: concurrency 2 (2 in use)"
        assert lines[2] == f"  settings: concurrency 2 (opened by run {deploy})"
        assert f"  run {deploy}  pid {first.pid}  2 slots" in out
        assert f"  run {status}  pid {second.pid}  0 slots" in out
        (tmp_path / "go").touch()
        assert first.wait(60) == 0
        assert second.wait(60) == 0
    finally:
        (tmp_path / "go").touch()
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    runs = _attempts(state, other)
    assert sorted(len(a) for a in runs.values()) == [4, 4]
    # Invariant: never more than the shared limit at once, both runs together.
    assert max_overlap([i for a in runs.values() for i in a]) == 2
    with JournalReader(other) as r:
        told = [e["reason"] for e in r.event_data(status, "PoolChanged")]
    assert told[0] == (
        f"shared pool 'azure-subscription-1': the limits of run {deploy}, which opened it, "
        "hold (concurrency 2; this plan: concurrency 3)"
    )
    assert _users() == {}


@pytest.mark.slow
def test_a_killed_apply_gives_its_slots_back(tmp_path: Path) -> None:
    # Two plans in two folders: two state directories, one shared pool.
    state, other = tmp_path / "deploy" / ".fleetrun", tmp_path / "status" / ".fleetrun"
    first = _apply(tmp_path, "deploy", 2, WAIT_GO)
    second: subprocess.Popen[str] | None = None
    try:
        _until(lambda: sorted(_users().values()) == [2])
        second = _apply(tmp_path, "status", 2, "sleep 0")
        _until(lambda: len(_users()) == 2)
        killed_at = time.time()
        first.send_signal(signal.SIGKILL)
        first.wait()
        assert second.wait(60) == 0  # it got the dead run's slots
    finally:
        (tmp_path / "go").touch()  # the killed run's tasks end
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    runs = _attempts(state, other)
    (status,) = [r for r, a in runs.items() if len(a) == 4 and all(e < math.inf for _, e in a)]
    assert all(start > killed_at for start, _ in runs[status])
    (pool,) = read_shared_pools(Path(os.environ["FLEETRUN_POOLS_DIR"]))
    assert pool.in_use == 0
    assert pool.users == ()


def test_an_unusable_pools_dir_names_the_variable_that_chose_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    monkeypatch.setenv("FLEETRUN_POOLS_DIR", str(not_a_dir))
    with pytest.raises(StateDirError) as e:
        open_pools_db(not_a_dir / "pools.db")
    # The directory is at fault, and said so as ``fleetrun pools`` says it.
    assert str(e.value) == (
        f"cannot use the shared pools directory {not_a_dir}: it is not a directory; "
        f"$FLEETRUN_POOLS_DIR is {str(not_a_dir)!r}: point it at a writable directory"
    )
    monkeypatch.delenv("FLEETRUN_POOLS_DIR")
    with pytest.raises(StateDirError) as e:
        open_pools_db(not_a_dir / "pools.db")
    assert "FLEETRUN_POOLS_DIR" not in str(e.value)


def _not_a_database(path: Path) -> None:
    path.write_bytes(b"not a database, " * 512)


@pytest.mark.parametrize(
    ("make", "cause", "fix"),
    [
        # (what is at the pools directory's place, the cause said, the fix said)
        ("file", "cannot use the shared pools directory {d}: it is not a directory", "point it"),
        ("under-file", "cannot use the shared pools directory {d}: {d.parent} is not a", "point"),
        ("db-dir", "cannot use the shared pools file {d}/pools.db: it is a directory", "move it"),
        ("db-link", "cannot use the shared pools file {d}/pools.db: it is a symbolic link", "link"),
        ("db-junk", "cannot use the shared pools file {d}/pools.db: file is not a database", "rem"),
    ],
)
def test_each_unusable_pools_file_gets_the_fix_of_its_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make: str, cause: str, fix: str
) -> None:
    d = tmp_path / "pools"
    if make == "file":
        d.write_text("")
    elif make == "under-file":
        tmp_path.joinpath("file").write_text("")
        d = tmp_path / "file" / "pools"
    else:
        d.mkdir()
        if make == "db-dir":
            (d / "pools.db").mkdir()
        elif make == "db-link":
            _not_a_database(tmp_path / "elsewhere")
            (d / "pools.db").symlink_to(tmp_path / "elsewhere")
        else:
            _not_a_database(d / "pools.db")
    monkeypatch.setenv("FLEETRUN_POOLS_DIR", str(d))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(StateDirError) as e:
        open_pools_db(d / "pools.db")
    message = str(e.value)
    assert message.startswith(cause.format(d=d)), message
    fixes = {
        "point it": f"; $FLEETRUN_POOLS_DIR is {str(d)!r}: point it at a writable directory",
        "point": f"; $FLEETRUN_POOLS_DIR is {str(d)!r}: point it at a writable directory",
        "move it": "; move it away, or $FLEETRUN_POOLS_DIR is",
        "link": "; remove the link, or $FLEETRUN_POOLS_DIR is",
        "rem": "; remove it while no run uses it",
    }
    assert fixes[fix] in message, message
    # A fix for the file is not offered where the directory is at fault, nor the reverse.
    if make in ("file", "under-file"):
        assert "remove" not in message
        assert message.endswith("point it at a writable directory")
    assert "\n" not in message
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing made or changed


def test_apply_with_the_pools_dir_on_dev_null_says_the_directory_is_not_one(
    tmp_path: Path,
) -> None:
    plan = tmp_path / "deploy" / "deploy.yaml"
    plan.parent.mkdir()
    plan.write_text(PLAN.format(name="deploy", concurrency=2, run="sleep 0"))
    res = _completed(
        {**os.environ, "FLEETRUN_POOLS_DIR": "/dev/null"}, "apply", str(plan), "--plain"
    )
    assert res.returncode == 2, res.stderr
    assert res.stderr.splitlines() == [
        "error: cannot use the shared pools directory /dev/null: it is not a directory; "
        "$FLEETRUN_POOLS_DIR is '/dev/null': point it at a writable directory"
    ]
    _nothing_recorded(plan)


def test_an_unusable_pools_dir_refuses_the_run_before_it_is_recorded(tmp_path: Path) -> None:
    plan = tmp_path / "deploy" / "deploy.yaml"
    plan.parent.mkdir()
    plan.write_text(PLAN.format(name="deploy", concurrency=2, run="sleep 0"))
    env = {**os.environ, "FLEETRUN_POOLS_DIR": "/etc/passwd/x"}
    res = _completed(env, "apply", str(plan), "--plain")
    assert res.returncode == 2, res.stderr
    assert "FLEETRUN_POOLS_DIR" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    _nothing_recorded(plan)  # no run to retry, no journal written for it
    pools = _completed({**env, "FLEETRUN_POOLS_DIR": str(tmp_path / "none")}, "pools")
    assert pools.returncode == 0
    assert not (tmp_path / "none").exists()  # a reader creates nothing


# -- a pools file that is not fleetrun's ---------------------------------------------------


def _sqlite_file(path: Path, *statements: str) -> bytes:
    """A database at ``path`` made of ``statements``; its bytes."""
    db = sqlite3.connect(path)
    for s in statements:
        db.execute(s)
    db.commit()
    db.close()
    return path.read_bytes()


FOREIGN = {
    "another table named pools": ("CREATE TABLE pools(x)",),
    "fleetrun's tables and one more": (*_statements(_SCHEMA), "CREATE TABLE notes(n)"),
    "a users table with other columns": ("CREATE TABLE users(pool, run_id)",),
    "another version": ("CREATE TABLE t(x)", "PRAGMA user_version = 7"),
}


@pytest.mark.parametrize("statements", list(FOREIGN.values()), ids=list(FOREIGN))
def test_a_database_that_is_not_fleetruns_is_refused_and_left_as_it_is(
    tmp_path: Path, statements: tuple[str, ...]
) -> None:
    path = tmp_path / "pools.db"
    before = _sqlite_file(path, *statements)
    for readonly in (False, True):
        with pytest.raises(StateDirError) as e:
            open_pools_db(path, readonly=readonly)
        message = str(e.value)
        verb = "read" if readonly else "use"
        assert message.startswith(f"cannot {verb} the shared pools file {path}: it ")
        assert "move it away, or " in message
        assert "\n" not in message
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pools.db"]  # no -wal, no -shm


def test_a_fleetrun_file_with_a_changed_column_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pools.db"
    open_pools_db(path).close()
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE users RENAME COLUMN host TO hostname")
    db.commit()
    db.close()
    with pytest.raises(StateDirError, match=r"not fleetrun's \(table users\(pool, run_id, "):
        open_pools_db(path)


def test_an_empty_or_half_made_file_is_made_whole(tmp_path: Path) -> None:
    empty = tmp_path / "empty" / "pools.db"
    empty.parent.mkdir()
    empty.write_bytes(b"")
    half = tmp_path / "half" / "pools.db"
    half.parent.mkdir()
    # A run stopped while it created the file: some of the tables, version 0.
    open_pools_db(tmp_path / "pools.db").close()
    whole = sqlite3.connect(tmp_path / "pools.db")
    (users,) = whole.execute("SELECT sql FROM sqlite_master WHERE name = 'users'").fetchone()
    whole.close()
    _sqlite_file(half, users)
    for path in (empty, half):
        store = SharedStore(path.parent, "run-1")
        try:
            row, opened = store.join(config_of(Pool("api", concurrency=2, shared="sub-1")), 0.0)
            assert opened
            assert row.concurrency == 2
        finally:
            store.close()
        db = sqlite3.connect(path)
        assert db.execute("PRAGMA user_version").fetchone() == (1,)
        db.close()


def test_apply_refuses_a_foreign_pools_file_before_the_run_is_recorded(tmp_path: Path) -> None:
    pools = tmp_path / "pools"
    pools.mkdir()
    before = _sqlite_file(pools / "pools.db", "CREATE TABLE pools(x)")
    plan = tmp_path / "deploy" / "deploy.yaml"
    plan.parent.mkdir()
    plan.write_text(PLAN.format(name="deploy", concurrency=2, run="sleep 0"))
    env = {**os.environ, "FLEETRUN_POOLS_DIR": str(pools)}
    res = _completed(env, "apply", str(plan), "--plain")
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.splitlines() == [
        f"error: cannot use the shared pools file {pools / 'pools.db'}: it is an SQLite "
        "database that is not fleetrun's (table pools(x)); move it away, or "
        f"$FLEETRUN_POOLS_DIR is {str(pools)!r}: point it at another directory"
    ]
    assert (pools / "pools.db").read_bytes() == before
    _nothing_recorded(plan)
    shown = _completed(env, "pools")
    assert shown.returncode == 2
    assert shown.stderr.startswith(f"error: cannot read the shared pools file {pools / 'pools.db'}")


SHARED_RULE_CASES = {
    "café": ("'é' is not an ASCII letter, digit, '.', '_' or '-'", "use only ASCII letters"),
    "-x": ("its first character '-' is not an ASCII letter or digit", "start it with"),
    "a" * 200: ("it is 200 characters long, more than 64", "shorten it to at most 64"),
    "é" + "b" * 70: (
        "its first character 'é' is not an ASCII letter or digit; it is 71 characters long",
        "start it with an ASCII letter or digit; shorten it to at most 64 characters",
    ),
}


@pytest.mark.parametrize("name", list(SHARED_RULE_CASES), ids=["accent", "dash", "long", "both"])
def test_a_bad_shared_name_says_which_rule_and_is_shortened(name: str) -> None:
    why, fix = SHARED_RULE_CASES[name]
    with pytest.raises(PlanError) as e:
        load_plan_text(
            f"pools:\n  a: {{concurrency: 1, shared: '{name}'}}\ntasks:\n  t: {{run: x}}\n",
            "p.yaml",
        )
    (problem,) = e.value.diagnostics
    assert why in problem.message
    assert problem.fix.startswith(fix)
    assert "at most 64 ASCII letters" in problem.fix
    assert len(problem.message) < 200  # a long name is echoed shortened
    if len(name) > 40:
        assert f"... ({len(name)} characters)" in problem.message
        assert name not in problem.message


def _rename_pools_table(path: Path, old: str, new: str) -> None:
    db = sqlite3.connect(path)
    db.execute(f"ALTER TABLE {old} RENAME TO {new}")
    db.commit()
    db.close()


def test_a_file_failing_for_long_stops_the_pools_starts_once_with_a_line(
    runs, tmp_path: Path
) -> None:
    a, changes = runs("run-a", concurrency=1)
    b, b_changes = runs("run-b", concurrency=1)
    assert a.wait_time(API, 100.0) == 0
    assert a.take(API, 100.0)
    assert b.wait_time(API, 100.0) == RECHECK  # full of run-a's slot
    path = tmp_path / "pools.db"
    _rename_pools_table(path, "pools", "gone")  # every use of the file fails now
    step = RECHECK + FRESH
    now = 100.0 + step
    # Failures for less than GIVE_UP_AFTER: tried again and again, nothing said.
    while now < 100.0 + GIVE_UP_AFTER:
        assert b.wait_time(API, now) == RECHECK
        assert not b.take(API, now)
        now += step
    assert b_changes == []
    # A success in between starts the count again.
    _rename_pools_table(path, "gone", "pools")
    assert b.wait_time(API, now) == RECHECK
    _rename_pools_table(path, "pools", "gone")
    now += step
    start = now  # the first failure since the success
    while now < start + GIVE_UP_AFTER:
        assert b.wait_time(API, now) == RECHECK
        now += step
    assert b_changes == []
    assert b.wait_time(API, now) == math.inf  # no more starts in the pool
    assert b.blocked_by == "pool api: its shared pools file cannot be used"
    (told,) = b_changes
    assert told[0] == "api"
    assert told[4].startswith(f"shared pool 'sub-1': no more starts in this run: its file {path}")
    assert "no such table: pools" in told[4]
    assert told[4].endswith("`fleetrun retry` runs what did not start")
    # Said once, and the pool stays closed to this run.
    assert b.wait_time(API, now + 100.0) == math.inf
    assert not b.take(API, now + 100.0)
    assert len(b_changes) == 1
    # The run holding a slot gives it back as best it can, and is not stopped.
    a.release(API)
    assert changes == []
