"""The portable process path (``FLEETRUN_PLATFORM=portable``) through real
``fleetrun apply`` processes: the Linux modules are never loaded, and the
chain138 example, a timeout, Ctrl-C and orphans behave as on Linux."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import psutil
import pytest

from fleetrun.errors import UsageError
from fleetrun.executors._platform import ENV, LINUX_MODULES, choose, linux_missing

ROOT = Path(__file__).resolve().parents[2]
CHAIN138 = ROOT / "examples" / "chain138" / "plan.yaml"
PORTABLE = {ENV: "portable"}

# ``fleetrun`` as its console script runs it, then the executor modules it loaded.
MAIN = textwrap.dedent(
    """
    import sys
    from fleetrun.cli import main
    try:
        main(sys.argv[1:])
    finally:
        loaded = sorted(m for m in sys.modules if m.startswith("fleetrun.executors."))
        print("MODULES", " ".join(loaded), file=sys.stderr)
    """
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    env["PYTHONPATH"] = str(ROOT / "src")
    env.update(extra)
    return env


def _fleetrun(*args: str, timeout: float = 90, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", MAIN, *args],
        env=_env(**extra),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _spawn(*args: str, **extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", MAIN, *args],
        env=_env(**extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _modules(stderr: str) -> list[str]:
    return stderr.rsplit("MODULES", 1)[1].split()


def _tagged(tag: str) -> list[int]:
    """Live processes whose environment holds ``TEST_TAG=tag`` (psutil: any system)."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.status() != psutil.STATUS_ZOMBIE and p.environ().get("TEST_TAG") == tag:
                found.append(p.pid)
        except (psutil.Error, OSError):
            continue
    return found


def _kill_tagged(tag: str) -> None:
    for pid in _tagged(tag):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue


def _daemon(tmp_path: Path) -> str:
    """A command that leaves its process group and sleeps (``setsid``, on any system)."""
    script = tmp_path / "daemon.py"
    script.write_text("import os\nos.setsid()\nos.execvp('sleep', ['sleep', '60'])\n")
    return f"{sys.executable} {script}"


def _wait_for(predicate: object, what: str, limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


def test_the_setting_chooses_the_path() -> None:
    assert choose("portable") == "portable"
    assert choose(" Portable ") == "portable"
    expected = "linux" if linux_missing() is None else "portable"
    assert choose(None) == choose("") == choose("auto") == expected
    with pytest.raises(UsageError, match=r"FLEETRUN_PLATFORM=windows: not a platform"):
        choose("windows")


@pytest.mark.slow  # the whole chain138 example, scaled down: about 3 s
def test_chain138_runs_on_the_portable_path_without_loading_linux_modules(
    tmp_path: Path,
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    res = _fleetrun(
        "apply",
        str(CHAIN138),
        "--state-dir",
        str(tmp_path / "st"),
        "--plain",
        CHAIN138_SCALE="0.05",
        CHAIN138_MARKER_DIR=str(marks),
        **PORTABLE,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    loaded = _modules(res.stderr)
    assert "fleetrun.executors._posix_local" in loaded
    assert [m for m in LINUX_MODULES if m in loaded] == []
    # Every instance of the example ran exactly once.
    runs = {p.name: p.read_text().splitlines() for p in marks.iterdir()}
    assert len(runs) > 10
    assert all(len(lines) == 1 for lines in runs.values())


@pytest.mark.skipif(linux_missing() is not None, reason="the Linux path cannot run here")
def test_the_linux_path_is_chosen_by_default_where_it_works(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("tasks:\n  a: {run: 'echo hi'}\n")
    res = _fleetrun("apply", str(plan), "--plain")
    assert res.returncode == 0, res.stdout + res.stderr
    loaded = _modules(res.stderr)
    assert "fleetrun.executors._local" in loaded
    assert "fleetrun.executors._posix_local" not in loaded


def test_a_timeout_ends_the_group_and_what_left_it(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    plan = tmp_path / "plan.yaml"
    # The command starts a daemon outside its process group, then hangs.
    plan.write_text(f"tasks:\n  slow:\n    timeout: 1s\n    run: {_daemon(tmp_path)} & sleep 60\n")
    res = _fleetrun("apply", str(plan), "--plain", "--grace", "1", TEST_TAG=tag, **PORTABLE)
    try:
        assert res.returncode == 1, res.stdout + res.stderr
        assert "timed out" in res.stdout + res.stderr
        assert _tagged(tag) == []
        log = next((tmp_path / ".fleetrun").rglob("slow*.log")).read_text()
        assert "[fleetrun] ended 1 process(es) the command left running" in log
        assert [m for m in LINUX_MODULES if m in _modules(res.stderr)] == []
    finally:
        _kill_tagged(tag)


def test_ctrl_c_ends_every_process_of_the_run(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    started = tmp_path / "started"
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "targets: {a: {}, b: {}}\n"
        "tasks:\n"
        "  hang:\n"
        "    for_each: all\n"
        f"    run: {_daemon(tmp_path)} & sleep 60 & touch {started}-{{{{ target.name }}}}; wait\n"
    )
    p = _spawn("apply", str(plan), "--plain", "--grace", "1", TEST_TAG=tag, **PORTABLE)
    try:
        _wait_for(lambda: all(Path(f"{started}-{t}").exists() for t in "ab"), "both started")
        assert len(_tagged(tag)) >= 4  # a shell, its sleep and a daemon per target
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 130, out
        assert _tagged(tag) == []
        assert [m for m in LINUX_MODULES if m in _modules(out)] == []
    finally:
        _kill_tagged(tag)
        if p.poll() is None:
            p.kill()
            p.communicate()


@pytest.mark.slow  # two runs, a refusal and the record: about 5 s
def test_orphans_of_a_killed_run_are_found_and_ended(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    started = tmp_path / "started"
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "tasks:\n"
        "  step:\n"
        f"    run: if [ -e {started} ]; then echo again; else touch {started}; sleep 60; fi\n"
    )
    p = _spawn("apply", str(plan), "--plain", TEST_TAG=tag, **PORTABLE)
    try:
        _wait_for(started.exists, "the step started")
        p.send_signal(signal.SIGKILL)  # the step's `sleep 60` goes on without it
        p.communicate()
        orphans = _tagged(tag)
        assert orphans

        refused = _fleetrun("apply", str(plan), "--resume", **PORTABLE)
        assert refused.returncode == 3, refused.stdout + refused.stderr
        assert "1 attempt(s) of a run that died still run" in refused.stderr
        assert sorted(_tagged(tag)) == sorted(orphans)

        ended = _fleetrun(
            "apply", str(plan), "--resume", "--kill-orphans", "--grace", "1", **PORTABLE
        )
        assert ended.returncode == 0, ended.stdout + ended.stderr
        assert "ended 1 orphaned process group(s)" in ended.stdout
        assert _tagged(tag) == []
        assert [m for m in LINUX_MODULES if m in _modules(ended.stderr)] == []
    finally:
        _kill_tagged(tag)
        if p.poll() is None:
            p.kill()
            p.communicate()
