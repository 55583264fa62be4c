"""fleetrun on a system without Linux's process facilities: with ``select.epoll``,
the ``EPOLL*`` constants, ``os.pidfd_open`` and ``/proc`` taken away (in a fresh
interpreter, before fleetrun is imported), every module of the package imports,
the portable path is chosen, and ``fleetrun plan`` works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from fleetrun.executors._platform import ENV

ROOT = Path(__file__).resolve().parents[2]
CHAIN138 = ROOT / "examples" / "chain138" / "plan.yaml"

# Runs in a fresh interpreter: the hiding happens before anything of fleetrun
# loads, and nothing of the test process leaks in.
HIDE = textwrap.dedent(
    """
    import builtins, io, os, select, sys

    for name in [n for n in dir(select) if n.startswith("EPOLL")] + ["epoll"]:
        if hasattr(select, name):
            delattr(select, name)
    if hasattr(os, "pidfd_open"):
        del os.pidfd_open

    def _proc(path):
        if isinstance(path, int):
            return False
        p = os.fsdecode(os.fspath(path))
        return p == "/proc" or p.startswith("/proc/")

    def _hidden(real):
        def call(path, *a, **k):
            if _proc(path):
                raise FileNotFoundError(2, "No such file or directory", os.fspath(path))
            return real(path, *a, **k)
        return call

    builtins.open = io.open = _hidden(io.open)
    for name in ("open", "stat", "lstat", "listdir", "scandir", "access", "readlink"):
        setattr(os, name, _hidden(getattr(os, name)))
    """
)

IMPORT_ALL = textwrap.dedent(
    """
    import importlib, json, os, pkgutil, select, sys
    import fleetrun

    assert not hasattr(select, "epoll") and not hasattr(os, "pidfd_open")
    assert not os.path.isdir("/proc/self")
    failed = {}
    names = sorted(
        m.name for m in pkgutil.walk_packages(fleetrun.__path__, "fleetrun.")
    )
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as e:
            failed[name] = f"{type(e).__name__}: {e}"
    from fleetrun.executors import _platform

    print(json.dumps({
        "imported": names,
        "failed": failed,
        "platform": _platform.selected(),
        "missing": _platform.linux_missing(),
    }))
    """
)

PLAN = textwrap.dedent(
    """
    import sys
    from fleetrun.cli import main
    try:
        main(sys.argv[1:])
    finally:
        loaded = sorted(m for m in sys.modules if m.startswith("fleetrun.executors"))
        print("MODULES", " ".join(loaded), file=sys.stderr)
    """
)


def _python(
    code: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", HIDE + code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
        env=env,
    )


def test_every_module_imports_without_epoll_pidfd_or_proc() -> None:
    res = _python(IMPORT_ALL)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["failed"] == {}
    # The Linux modules are among them: they import anywhere, and are used only on Linux.
    for linux in ("_local", "_proc", "_spawner", "_exits", "_procfs", "_reaper", "_cspawn"):
        assert f"fleetrun.executors.{linux}" in got["imported"]
    assert len(got["imported"]) > 100
    assert got["platform"] == "portable"
    assert got["missing"] == "os.pidfd_open is missing"


def test_plan_runs_without_epoll_pidfd_or_proc() -> None:
    res = _python(PLAN, "plan", str(CHAIN138))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "infra@" in res.stdout
    assert "k8s@" in res.stdout
    # No process code was needed to show the plan.
    loaded = res.stderr.split("MODULES", 1)[1].split()
    assert [m for m in loaded if "_local" in m or "_proc" in m or "_platform" in m] == []


def test_insisting_on_linux_where_it_cannot_run_is_one_clear_line(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("tasks:\n  a: {run: 'true'}\n")
    env = {
        **_env(),
        ENV: "linux",
    }
    res = _python(PLAN, "apply", str(plan), "--plain", env=env)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.split("MODULES", 1)[0].strip().splitlines()
    assert lines == [
        "error: FLEETRUN_PLATFORM=linux: the Linux process code cannot run here "
        "(os.pidfd_open is missing); unset FLEETRUN_PLATFORM or set it to portable"
    ]
    # Refused before any run was recorded or anything started.
    assert not (tmp_path / ".fleetrun" / "state.db").exists()
    assert list(tmp_path.rglob("*.log")) == []


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != ENV}
