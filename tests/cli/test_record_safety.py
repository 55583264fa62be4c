"""The state directory: made or refused in one line, owner-only, never written
through a symbolic link."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from pathlib import Path

import pytest

from fleetrun.state import lock_path

from ._helpers import fleetrun

PLAN = """\
name: small
targets: {a: {}, b: {}}
tasks:
  first:
    for_each: all
    run: echo "addr=0x{{ target.name }}" >> "$FLEETRUN_OUTPUT"; echo hello
  second:
    for_each: all
    needs: [first]
    run: echo second
"""


def _plan(where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    plan = where / "plan.yaml"
    plan.write_text(PLAN)
    return plan


def test_a_state_directory_that_cannot_be_made_is_one_line_and_exit_2(tmp_path: Path) -> None:
    plan = _plan(tmp_path / "p")
    res = fleetrun("apply", str(plan), "--state-dir", "/proc/nope")
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.count("\n") == 1, res.stderr
    assert "/proc/nope" in res.stderr
    assert "--state-dir" in res.stderr
    assert "Traceback" not in res.stderr

    # A plan in a read-only directory (a read-only filesystem: root ignores modes).
    ro = tmp_path / "ro"
    ro.mkdir()
    _plan(ro)
    mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(ro), str(ro)], check=False,
                             capture_output=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip("cannot make a read-only bind mount here")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=False)
        res = fleetrun("apply", str(ro / "plan.yaml"))
        assert res.returncode == 2, res.stdout + res.stderr
        assert res.stderr.count("\n") == 1, res.stderr
        assert str(ro / ".fleetrun") in res.stderr
        assert "--state-dir" in res.stderr
    finally:
        subprocess.run(["umount", str(ro)], check=False)


def test_every_mode_in_the_state_directory_is_owner_only(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    events = tmp_path / "events.jsonl"
    old = os.umask(0o022)
    try:
        res = fleetrun("apply", str(plan), "--events", str(events))
        assert res.returncode == 0, res.stdout + res.stderr
        report = tmp_path / "out.env"
        res = fleetrun("outputs", "--plan", str(plan), "--format", "env", "-o", str(report))
        assert res.returncode == 0, res.stdout + res.stderr
    finally:
        os.umask(old)
    state = tmp_path / ".fleetrun"
    seen = {"dirs": 0, "files": 0}
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for root, dirs, files in os.walk(state):
        for d in dirs:
            assert stat.S_IMODE(os.lstat(Path(root, d)).st_mode) == 0o700, Path(root, d)
            seen["dirs"] += 1
        for f in files:
            assert stat.S_IMODE(os.lstat(Path(root, f)).st_mode) == 0o600, Path(root, f)
            seen["files"] += 1
    names = {p.name for p in state.rglob("*")}
    assert {"state.db", "locks", "logs", "outputs"} <= names
    assert any(n.endswith(".outputs") for n in names)
    assert any(n.endswith(".log") for n in names)
    # What the user asked for follows the umask, with no lock file left beside it.
    assert stat.S_IMODE(report.stat().st_mode) == 0o644
    assert not Path(f"{report}.lock").exists()
    assert seen["dirs"] >= 8
    assert seen["files"] >= 8


def test_a_state_directory_of_another_user_or_writable_by_others_is_refused(
    tmp_path: Path,
) -> None:
    plan = _plan(tmp_path)
    state = tmp_path / ".fleetrun"
    state.mkdir(mode=0o700)
    os.chmod(state, 0o777)
    res = fleetrun("apply", str(plan))
    assert res.returncode == 2
    assert "others can write to it" in res.stderr
    assert not (state / "state.db").exists()
    if os.geteuid() == 0:
        os.chmod(state, 0o700)
        os.chown(state, 4242, 4242)
        res = fleetrun("apply", str(plan))
        assert res.returncode == 2
        assert "belongs to uid 4242" in res.stderr
    # One that others may only read (an older fleetrun made it 0755) is tightened.
    os.chown(state, os.geteuid(), os.getegid())
    os.chmod(state, 0o755)
    assert fleetrun("apply", str(plan)).returncode == 0
    assert stat.S_IMODE(state.stat().st_mode) == 0o700


def _snapshot(root: Path, skip: Path) -> dict[str, bytes]:
    out = {}
    for p in root.rglob("*"):
        if skip in p.parents or p == skip or p.is_symlink() or not p.is_file():
            continue
        out[str(p)] = p.read_bytes()
    return out


@pytest.mark.parametrize(
    "link",
    ["state.db", "state.db-wal", "state.db-shm", "runs", "locks", "lock-file"],
)
def test_links_planted_in_the_state_directory_are_never_followed(tmp_path: Path, link: str) -> None:
    proj = tmp_path / "proj"
    plan = _plan(proj)
    state = proj / ".fleetrun"
    state.mkdir(mode=0o700)
    victims = tmp_path / "victims"
    victims.mkdir()
    (victims / "file").write_text("precious\n")
    (victims / "dir").mkdir()
    (victims / "dir" / "keep").write_text("precious too\n")
    if link == "lock-file":
        lock = lock_path(state, str(plan.resolve()))
        lock.parent.mkdir(mode=0o700)
        lock.symlink_to(victims / "file")
    elif link in ("runs", "locks"):
        (state / link).symlink_to(victims / "dir")
    else:
        (state / link).symlink_to(victims / "file")
    before = _snapshot(tmp_path, state)
    res = fleetrun("apply", str(plan))
    assert res.returncode == 2, res.stdout + res.stderr
    assert "symbolic link" in res.stderr
    assert res.stderr.count("\n") == 1, res.stderr
    after = _snapshot(tmp_path, state)
    assert after == before
    assert sorted(p.name for p in (victims / "dir").iterdir()) == ["keep"]
    assert (
        hashlib.sha256((victims / "file").read_bytes()).hexdigest()
        == hashlib.sha256(b"precious\n").hexdigest()
    )
