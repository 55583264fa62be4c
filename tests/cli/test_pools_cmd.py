"""``fleetrun pools``: the shared pools of a state directory, their limits and users.

The pool is made by the engine's own store in this process (a live user) and
in a child process that exits holding a slot (a dead one); the command reads
the real coordination file.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from fleetrun.cli import cli
from fleetrun.engine._shared_file import config_of
from fleetrun.engine._shared_store import SharedStore
from fleetrun.plan import AdaptiveSettings, Pool

POOL = Pool("api", concurrency=4, rate=10.0, adaptive=AdaptiveSettings(), shared="sub-1")


def _pools(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, ["pools", *args])
    return res.exit_code, res.output


def test_pools_shows_limits_pause_and_live_and_dead_users(tmp_path: Path) -> None:
    now = time.monotonic()  # the clock runs keep pauses on
    store = SharedStore(tmp_path, "run-live")
    try:
        store.join(config_of(POOL), now)
        assert store.take(("sub-1",), now, [[("started", (now,))]])[0]
        store.observe("sub-1", now, lambda *_: [], now + 60.0, "paused 60s for Retry-After")
        # Another run that died holding a slot.
        code = (
            "import sys, time; from pathlib import Path; "
            "from fleetrun.engine._shared_store import SharedStore; "
            "from fleetrun.engine._shared_file import config_of; "
            "from fleetrun.plan import Pool; "
            "s = SharedStore(Path(sys.argv[1]), 'run-dead'); "
            "s.join(config_of(Pool('api', concurrency=1, shared='sub-1')), time.monotonic()); "
            "s.take(('sub-1',), time.monotonic() + 61, [[('started', (0.0,))]]); print(s.pid)"
        )
        dead = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path)],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        dead_pid = int(dead.stdout)

        rc, out = _pools("--pools-dir", str(tmp_path))
        assert rc == 0, out
        lines = out.splitlines()
        assert lines[0] == f"shared pools in {tmp_path}"
        assert re.fullmatch(
            r"sub-1: concurrency 4 \(1 in use, 1 more held by a run that is gone: "
            r"they come back at the pool's next start\), rate 10/s, "
            r"paused \d+\.\ds more \(until \d\d:\d\d:\d\d\)",
            lines[1],
        ), lines[1]
        assert lines[2] == "  settings: concurrency 4, rate 10/s, adaptive (opened by run run-live)"
        assert lines[3].startswith("  last change: paused 60s for Retry-After (run run-live, ")
        assert lines[4].startswith(f"  run run-live  pid {os.getpid()}  1 slot  since ")
        assert lines[5].startswith(f"  run run-dead  pid {dead_pid}  1 slot  since ")
        assert lines[5].endswith("(gone: its slots come back at the pool's next start)")
        assert len(lines) == 6

        rc, out = _pools("--pools-dir", str(tmp_path), "--format", "json")
        assert rc == 0, out
        (pool,) = json.loads(out)
        # ``in_use`` counts the live runs' slots only; the dead run's are apart.
        assert (
            pool["name"],
            pool["concurrency"],
            pool["in_use"],
            pool["gone_slots"],
            pool["rate"],
        ) == ("sub-1", 4, 1, 1, 10.0)
        assert 0 < pool["paused_for"] <= 60
        # A read command: the file still counts the dead run's slot.
        with sqlite3.connect(tmp_path / "pools.db") as db:
            assert db.execute("SELECT in_use FROM pools").fetchall() == [(2,)]
            assert db.execute("SELECT COUNT(*) FROM users").fetchall() == [(2,)]
        assert [(u["run_id"], u["slots"], u["alive"]) for u in pool["users"]] == [
            ("run-live", 1, True),
            ("run-dead", 1, False),
        ]
    finally:
        store.close()
    # Leaving gives this run's slot back, and the dead run's (a use of the pool).
    rc, out = _pools("--pools-dir", str(tmp_path), "--format", "json")
    (pool,) = json.loads(out)
    assert (pool["in_use"], pool["gone_slots"], pool["users"]) == (0, 0, [])


def test_pools_without_shared_pools_and_with_a_broken_file(tmp_path: Path) -> None:
    rc, out = _pools("--pools-dir", str(tmp_path))
    assert (rc, out) == (
        0,
        f"no shared pools in {tmp_path} (a plan's pool with `shared: NAME` makes one)\n",
    )
    (tmp_path / "pools.db").write_bytes(b"not a database" * 100)
    rc, out = _pools("--pools-dir", str(tmp_path))
    assert rc == 2
    assert out.startswith(f"error: cannot read the shared pools file {tmp_path / 'pools.db'}: ")
    assert len(out.splitlines()) == 1


def _pools_process(pools_dir: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m fleetrun pools ARGS`` with ``$FLEETRUN_POOLS_DIR`` set to
    ``pools_dir`` (and ``env`` over the environment)."""
    return subprocess.run(
        [sys.executable, "-m", "fleetrun", "pools", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "FLEETRUN_POOLS_DIR": pools_dir, **env},
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def test_pools_refuses_a_directory_no_run_could_use(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("")
    cases = {
        str(a_file): "it is not a directory",
        str(a_file / "x"): f"{a_file} is not a directory",
    }
    if Path("/proc/self").exists():
        cases["/proc/x"] = "it does not exist, and /proc cannot hold files (a pseudo file system)"
    for given, why in cases.items():
        res = _pools_process(given)
        assert res.returncode == 2, (given, res.stdout)
        assert res.stdout == ""
        assert res.stderr.splitlines() == [
            f"error: cannot use the shared pools directory {given}: {why}; "
            f"$FLEETRUN_POOLS_DIR is {given!r}: point it at a writable directory"
        ]
    # Given on the command line, the fix does not name the variable.
    res = _pools_process(str(tmp_path), "--pools-dir", str(a_file / "x"))
    assert res.returncode == 2
    assert res.stderr.splitlines() == [
        f"error: cannot use the shared pools directory {a_file / 'x'}: {a_file} is not a "
        "directory; use a writable directory"
    ]


def test_pools_says_none_for_a_directory_without_the_file_yet(tmp_path: Path) -> None:
    missing = tmp_path / "not" / "yet"
    for given in (tmp_path, missing):
        res = _pools_process(str(given))
        assert (res.returncode, res.stderr) == (0, ""), res.stderr
        assert res.stdout == (
            f"no shared pools in {given} (a plan's pool with `shared: NAME` makes one)\n"
        )
    assert not (tmp_path / "not").exists()  # a reader creates nothing
    assert list(tmp_path.iterdir()) == []


def test_an_empty_pools_dir_variable_means_the_default(tmp_path: Path) -> None:
    # XDG_STATE_HOME chooses the default directory; an empty variable falls back to it.
    state = tmp_path / "state"
    res = _pools_process("", XDG_STATE_HOME=str(state))
    assert (res.returncode, res.stderr) == (0, "")
    assert res.stdout.startswith(f"no shared pools in {state / 'fleetrun'} ")
