"""Files the user asks for (``-o``, ``--events``) and the private state directory's helpers."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from fleetrun.errors import StateDirError, UsageError
from fleetrun.state import open_user_file, private_dirs, write_atomic


def test_write_atomic_follows_the_umask_and_leaves_no_lock_file(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_atomic(tmp_path / "r.html", "one")
        write_atomic(tmp_path / "r.html", "two")
    finally:
        os.umask(old)
    assert (tmp_path / "r.html").read_text() == "two"
    assert stat.S_IMODE((tmp_path / "r.html").stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]


def test_a_missing_directory_is_refused_alike_for_every_user_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing" / "dir"
    with pytest.raises(UsageError, match=f"the directory {missing} does not exist"):
        write_atomic(missing / "r.html", "x")
    with pytest.raises(UsageError, match=f"the directory {missing} does not exist"):
        open_user_file(missing / "e.jsonl")
    assert not (tmp_path / "missing").exists()


def test_user_files_are_never_written_through_a_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / "e.jsonl").symlink_to(victim)
    with pytest.raises(UsageError, match="symbolic link"):
        open_user_file(tmp_path / "e.jsonl")
    (tmp_path / "r.html").symlink_to(victim)
    write_atomic(tmp_path / "r.html", "report")  # replaces the link itself
    assert victim.read_text() == "precious\n"
    assert not (tmp_path / "r.html").is_symlink()
    with open_user_file(tmp_path / "fresh.jsonl") as f:
        f.write("{}\n")
    assert (tmp_path / "fresh.jsonl").read_text() == "{}\n"


def test_private_dirs_refuse_a_link_and_an_existing_new_dir(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "runs").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StateDirError, match="symbolic link"):
        private_dirs(tmp_path, "runs", "r1")
    assert list((tmp_path / "elsewhere").iterdir()) == []
    made = private_dirs(tmp_path, "ok", "r1", new=True)
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    with pytest.raises(StateDirError, match="must be new"):
        private_dirs(tmp_path, "ok", "r1", new=True)
