"""The files a plan is made of (plan, targets, env_file, scripts, --var-file, exec's
fleet file) are read only when regular and at most ``MAX_FILE_BYTES``: a stream, a
device, a FIFO or a directory is refused at once, with one line naming the file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleetrun.errors import PlanError, UsageError
from fleetrun.plan import _readfile, load_plan
from fleetrun.plan._adhoc import ExecRequest, exec_plan
from fleetrun.plan._readfile import MAX_FILE_BYTES, UnreadableFile, read_bounded
from fleetrun.plan._varfile import read_var_file

STREAM_FIX = "save what it gives to a regular file and give that file's path"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # A bounded wait: a regression (reading a FIFO or /dev/zero) must fail, not hang.
    return subprocess.run(
        [sys.executable, "-m", "fleetrun", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "stream.yaml"
    os.mkfifo(path)  # nobody ever writes to it
    return path


def test_the_cap_fits_the_largest_benchmarked_fleet() -> None:
    # bench_expand.py --fleet loads 700,000 targets from a plan of about 30 MB.
    assert MAX_FILE_BYTES == 64 * 1024 * 1024
    assert MAX_FILE_BYTES > 2 * 30 * 1000 * 1000


@pytest.mark.parametrize("which", ["/dev/zero", "fifo", "dir"])
def test_a_plan_file_that_is_no_regular_file_is_refused_at_once(
    which: str, fifo: Path, tmp_path: Path
) -> None:
    path = {"/dev/zero": "/dev/zero", "fifo": str(fifo), "dir": str(tmp_path)}[which]
    for cmd in (["plan", path], ["apply", "--plain", path], ["exec", path, "--", "true"]):
        got = _cli(*cmd, cwd=tmp_path)
        assert got.returncode == 2, got.stdout + got.stderr
        assert "Traceback" not in got.stderr
        assert path in got.stderr or "is a directory" in got.stderr
        if which != "dir":  # click refuses a directory as PLAN itself
            kind = "a character device" if which == "/dev/zero" else "a FIFO (named pipe)"
            assert f"{kind}, not a regular file" in got.stderr
            assert STREAM_FIX in got.stderr
    assert not (tmp_path / ".fleetrun").exists()


def test_a_plan_file_over_the_cap_is_refused_by_its_size(tmp_path: Path) -> None:
    big = tmp_path / "plan.yaml"
    with big.open("wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk, and nothing of it is read
    with pytest.raises(PlanError) as info:
        load_plan(big)
    (d,) = info.value.diagnostics
    assert (
        d.message == "cannot read the plan file: more than 64 MiB, the most a plan's file may hold"
    )
    assert d.location is not None
    assert d.location.file == str(big)
    with big.open("wb") as f:
        f.truncate(MAX_FILE_BYTES)  # exactly the cap: read (and then found to be no plan)
    with pytest.raises(PlanError) as info:
        load_plan(big)
    assert "64 MiB" not in str(info.value)


def test_a_file_that_grows_past_the_cap_is_cut_off_by_reading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # /proc files say they are empty and then give text: only the reading can bound them.
    monkeypatch.setattr(_readfile, "MAX_FILE_BYTES", 16)
    with pytest.raises(UnreadableFile, match="the most a plan's file may hold"):
        read_bounded("/proc/self/status")
    monkeypatch.setattr(_readfile, "MAX_FILE_BYTES", 1 << 20)
    assert read_bounded("/proc/self/status").startswith(b"Name:")


def test_side_files_that_are_no_regular_files_are_refused_where_named(
    fifo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "scripts").mkdir()
    plan = tmp_path / "plan.yaml"
    plan.write_text("env_file: /dev/zero\ntargets: stream.yaml\ntasks:\n  a: {script: scripts}\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PlanError) as info:
        load_plan("plan.yaml")
    got = [(str(d.location), d.key, d.message, d.fix) for d in info.value.diagnostics]
    assert got == [
        (
            "plan.yaml:1:11",
            "env_file",
            "cannot read env_file '/dev/zero': a character device, not a regular file",
            STREAM_FIX,
        ),
        (
            "plan.yaml:2:10",
            "targets",
            f"cannot read the targets file {str(fifo)!r}: a FIFO (named pipe), not a regular file",
            STREAM_FIX,
        ),
        (
            "plan.yaml:4:15",
            "tasks.a.script",
            f"cannot read the script {str(tmp_path / 'scripts')!r}: "
            "a directory, not a regular file",
            "give the path of a file",
        ),
    ]


def test_side_files_over_the_cap_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_readfile, "MAX_FILE_BYTES", 64)
    (tmp_path / "fleet.yaml").write_text("".join(f"t{i}: {{}}\n" for i in range(20)))
    plan = tmp_path / "plan.yaml"
    plan.write_text("targets: fleet.yaml\ntasks: {a: {run: x}}\n")
    with pytest.raises(PlanError) as info:
        load_plan(plan)
    (d,) = info.value.diagnostics
    assert str(d.location) == f"{plan}:1:10"
    assert d.message.endswith(": more than 64 bytes, the most a plan's file may hold")


@pytest.mark.parametrize("which", ["/dev/zero", "fifo", "dir"])
def test_var_files_that_are_no_regular_files_are_refused(
    which: str, fifo: Path, tmp_path: Path
) -> None:
    path = {"/dev/zero": "/dev/zero", "fifo": str(fifo), "dir": str(tmp_path)}[which]
    with pytest.raises(UsageError, match=f"^--var-file {path}: cannot read it: .*not a regular"):
        read_var_file(path)
    plan = tmp_path / "plan.yaml"
    plan.write_text("vars: {x: 1}\ntasks: {a: {run: x}}\n")
    got = _cli("plan", str(plan), "--var-file", path, cwd=tmp_path)
    assert got.returncode == 2
    assert f"--var-file {path}: cannot read it:" in got.stderr
    assert "Traceback" not in got.stderr


def test_an_exec_fleet_file_that_is_a_stream_is_refused(fifo: Path) -> None:
    request = ExecRequest(file=str(fifo), command=("true",))
    with pytest.raises(UsageError, match="a FIFO \\(named pipe\\), not a regular file"):
        exec_plan(request)
