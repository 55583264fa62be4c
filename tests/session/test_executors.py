"""Executors by kind: each implements the whole contract, and a run closes all of them."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
from pathlib import Path

import pytest

from fleetrun.executors import (
    Attempt,
    AttemptResult,
    ClusterExecutor,
    Handle,
    LocalExecutor,
    NoopExecutor,
    SSHExecutor,
)
from fleetrun.executors._local import LocalExecutor as LinuxLocalExecutor
from fleetrun.executors._posix_local import LocalExecutor as PortableLocalExecutor
from fleetrun.redact import Redactor
from fleetrun.runs_on import KINDS, ClusterOptions, ExecutorOptions, LocalOptions
from fleetrun.session._executors import ExecutorRegistry, default_registry


def _attempt(tmp: Path, command: str, options: ExecutorOptions | None = None) -> Attempt:
    return Attempt(
        run_id="run-test",
        key="t",
        task="t",
        target=None,
        n=1,
        command=command,
        display=command,
        env={},
        env_extra={},
        cwd=None,
        log_path=str(tmp / "t.log"),
        output_path=str(tmp / "t.out"),
        timeout=None,
        grace=1.0,
        redactor=Redactor(()),
        on_started=lambda h: None,
        options=options,
    )


# Both local executors: the Linux fast path's and the portable one (_platform).
@pytest.mark.parametrize(
    "cls",
    [LinuxLocalExecutor, PortableLocalExecutor, NoopExecutor, SSHExecutor, ClusterExecutor],
)
def test_every_executor_implements_the_whole_contract(cls: type) -> None:
    assert inspect.iscoroutinefunction(cls.run)
    assert inspect.iscoroutinefunction(cls.aclose)
    assert callable(cls.kill_now)
    assert isinstance(cls.kind, str)
    assert hasattr(cls, "queue_reason")


def test_every_kind_has_a_factory() -> None:
    assert sorted(default_registry().executors) == sorted(KINDS)


class _FailsToClose:
    kind = "broken"
    queue_reason: str | None = None
    closed = 0

    async def run(self, attempt: Attempt) -> AttemptResult:
        attempt.on_started(Handle("broken"))
        return AttemptResult(exit_code=0)

    def kill_now(self) -> None:
        pass

    async def aclose(self) -> None:
        self.closed += 1
        raise RuntimeError("cannot close")


def test_closing_a_run_closes_every_executor_even_when_one_fails(tmp_path: Path) -> None:
    local = LocalExecutor(grace=1.0)
    broken = _FailsToClose()

    async def go() -> AttemptResult:
        result = await local.run(_attempt(tmp_path, "echo hi"))
        assert local._env  # the per-task caches of this run are held
        with pytest.raises(RuntimeError, match="cannot close"):
            await ExecutorRegistry.close({"broken": broken, "local": local})
        return result

    result = asyncio.run(go())
    assert result.ok
    assert (tmp_path / "t.log").read_text() == "hi\n"
    assert broken.closed == 1
    assert not local._env  # released although the executor before it failed


def test_the_local_executor_reads_its_typed_options(tmp_path: Path) -> None:
    # keep_running: the background process outlives the command, which succeeds.
    pid_file = tmp_path / "bg.pid"
    cmd = f"sleep 30 & echo $! > {pid_file}"
    ex = LocalExecutor(grace=1.0)

    async def go() -> AttemptResult:
        try:
            return await ex.run(_attempt(tmp_path, cmd, LocalOptions(keep_running=True)))
        finally:
            await ex.aclose()

    assert asyncio.run(go()).ok
    pid = int(pid_file.read_text())
    try:
        assert Path(f"/proc/{pid}").exists()
    finally:
        os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):  # re-parented here (a subreaper)
            os.waitpid(pid, 0)


def test_another_kinds_options_are_refused_before_anything_starts(tmp_path: Path) -> None:
    ex = LocalExecutor(grace=1.0)
    with pytest.raises(TypeError, match="LocalOptions expected, got ClusterOptions"):
        asyncio.run(ex.run(_attempt(tmp_path, "echo hi", ClusterOptions())))
    assert not (tmp_path / "t.log").exists()
