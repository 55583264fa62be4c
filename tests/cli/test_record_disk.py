"""A full disk under the state directory: the cause in one line, reads still work,
every attempt that ran on record afterwards, and a preflight before a run starts.

The small filesystem is a real 2 MB tmpfs mounted for the test (this needs root,
or a user namespace that allows mounting tmpfs); where mounting is not allowed
the test is skipped rather than imitated with a file-size limit, because a size
limit fails writes with EFBIG, not with ENOSPC as a full disk does.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._helpers import fleetrun

BIG = """\
name: big
targets: {a: {}, b: {}, c: {}, d: {}}
tasks:
  spew:
    for_each: all
    run: python3 -c "import sys; sys.stdout.write('x' * 1500000)"
  after:
    for_each: all
    needs: [spew]
    run: echo done
"""


@contextlib.contextmanager
def _tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=700", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _grow(where: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(where)], check=True)


def test_a_full_disk_is_reported_and_nothing_is_lost(tmp_path: Path) -> None:
    plan = tmp_path / "big.yaml"
    plan.write_text(BIG)
    with _tmpfs(tmp_path / "st", "2m") as state:
        res = fleetrun("apply", str(plan), "--state-dir", str(state),
                       extra_env={"FLEETRUN_MIN_FREE_MB": "0"})  # fmt: skip
        assert res.returncode == 1, res.stdout + res.stderr
        errors = [line for line in res.stderr.splitlines() if line.strip()]
        assert len(errors) == 1, res.stderr
        assert "database or disk is full" in errors[0]
        assert str(state / "state.db") in errors[0]
        assert "free space" in errors[0]
        assert "Traceback" not in res.stderr
        assert "cannot rollback" not in res.stderr

        # Reading works while the disk stays full.
        for args in (["history"], ["show"], ["show", "--format", "json"], ["report"]):
            r = fleetrun(*args, "--state-dir", str(state))
            assert r.returncode == 0, (args, r.stdout + r.stderr)
            assert "Traceback" not in r.stderr

        # Space comes back: the next command settles the record.
        _grow(state, "32m")
        r = fleetrun("show", "--state-dir", str(state), "--format", "json")
        assert r.returncode == 0, r.stderr
        data = json.loads(r.stdout)
        assert data["run"]["status"] == "interrupted"
        logs = sorted(
            f"{p.parent.name}@{p.name.split('.')[0]}" for p in state.glob("runs/*/logs/*/*.log")
        )
        # Every attempt that ran has its log, and every log its attempt on record.
        per_key = {i["key"]: i for i in data["instances"]}
        on_record = sorted(k for k, i in per_key.items() if i["attempts"] > 0)
        assert logs
        assert on_record == logs
        # No attempt started once the journal could not record: the run stopped
        # with work left (a spew was still writing when the disk filled, so at
        # least its dependent never started).
        assert "not_started" in {per_key[f"after@{t}"]["status"] for t in "abcd"}
        started_after = [k for k, i in per_key.items() if k.startswith("after@") and i["attempts"]]
        assert len(started_after) < 4
        r = fleetrun("retry", "--state-dir", str(state))
        assert r.returncode == 0, r.stdout + r.stderr


def test_too_little_free_space_is_refused_before_the_run(tmp_path: Path) -> None:
    plan = tmp_path / "big.yaml"
    plan.write_text(BIG)
    state = tmp_path / "st"
    res = fleetrun("apply", str(plan), "--state-dir", str(state),
                   extra_env={"FLEETRUN_MIN_FREE_MB": str(2**40)})  # fmt: skip
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.count("\n") == 1
    assert f"free for the state directory {state}" in res.stderr
    assert "FLEETRUN_MIN_FREE_MB" in res.stderr
    assert not (state / "state.db").exists()
    assert os.listdir(state) == []
