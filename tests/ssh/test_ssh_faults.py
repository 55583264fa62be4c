"""SSH failure modes against the real OpenSSH server of ``conftest.sshd``: a
connection gone half-open, a server with few sessions, a silent jump host,
objects of one event loop used in another, outputs that are not text, the
order of the two output streams, library warnings on stderr."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _ssh_attempts import attempt

from fleetrun.executors import LocalExecutor, OutputRefused, SSHExecutor, SSHOrphanFinder
from fleetrun.executors._contract import AttemptResult, Handle, RecordedAttempt
from fleetrun.executors.testing import LoopbackSshd, TcpRelay

_TAG = f"{secrets.randbelow(10**8):08d}"


def _marker(n: int) -> str:
    """``N.TAG``: a sleep argument (seconds) naming one test's remote processes."""
    return f"{n}.{_TAG}"


def _alive(marker: str) -> list[str]:
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True, check=False)
    return out.stdout.split()


def _wait_gone(marker: str, within: float = 10.0) -> list[str]:
    deadline = time.monotonic() + within
    while (left := _alive(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def _run(coro_fn: Callable[[SSHExecutor], Awaitable[Any]], **kw: Any) -> Any:
    async def main() -> Any:
        ex = SSHExecutor(**kw)
        try:
            return await coro_fn(ex)
        finally:
            await ex.aclose()

    return asyncio.run(main())


async def _started(handles: list[Handle], marker: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not (handles and _alive(marker)):
        assert time.monotonic() < deadline, f"{marker} did not start"
        await asyncio.sleep(0.05)


@pytest.fixture
def relay(sshd: LoopbackSshd) -> Iterator[TcpRelay]:
    """A relay in front of the test server whose connections can be frozen."""
    r = TcpRelay.start(sshd.port)
    try:
        yield r
    finally:
        r.close()


@pytest.mark.slow
def test_half_open_connection_times_out_and_ends_the_group(
    sshd: LoopbackSshd, relay: TcpRelay, tmp_path: Path
) -> None:
    # The connection freezes while the command runs (no FIN, no RST; new
    # connections still work): the attempt times out at its timeout, the kill
    # goes over a fresh connection, the remote group ends, the log keeps its
    # last newline.
    marker = _marker(1101)
    handles: list[Handle] = []
    lines: list[str] = []
    a = attempt(
        tmp_path,
        "node-frozen",
        f"echo first; echo second; exec sleep {marker}",
        sshd.spec("node-frozen", port=relay.port),
        timeout=3.0,
        grace=10.0,  # the group ends at the SIGTERM; the grace is not waited for
        handles=handles,
        lines=lines,
    )

    async def go(ex: SSHExecutor) -> tuple[AttemptResult, float]:
        task = asyncio.ensure_future(ex.run(a))
        deadline = time.monotonic() + 30
        while "second" not in lines:
            assert time.monotonic() < deadline, "the command did not start"
            assert not task.done(), task
            await asyncio.sleep(0.01)
        assert relay.accepted == 1
        relay.freeze()
        t0 = time.monotonic()
        r = await task
        return r, time.monotonic() - t0

    r, took = _run(go)
    assert r.timed_out, r
    assert r.error_kind is None, r
    assert r.reason is None, r
    assert r.exit_code is None
    assert r.signal == signal.SIGTERM
    # The keepalive would notice the dead connection only after 45 s.
    assert took < 30.0
    assert relay.accepted >= 2  # the kill went over a connection of its own
    assert _wait_gone(marker) == []
    assert Path(a.log_path).read_text() == "first\nsecond\n"


def test_orphans_found_in_one_event_loop_are_ended_in_another(sshd: LoopbackSshd) -> None:
    # Finding and ending may run under two asyncio.run calls: nothing the
    # finder keeps between them may belong to the first loop.
    marker = _marker(1102)
    tagged = {"FLEETRUN_RUN_ID": "run-dead-loops", "PATH": "/usr/bin:/bin"}
    left = subprocess.Popen(["sleep", marker], start_new_session=True, env=tagged)
    try:
        rec = RecordedAttempt(
            "run-dead-loops", "t@node-loops", 1, Handle("ssh", "node-loops", left.pid, left.pid)
        )
        finder = SSHOrphanFinder({"node-loops": sshd.spec("node-loops")})
        found = asyncio.run(finder.find([rec], ["run-dead-loops"]))
        assert [o.pids for o in found] == [(left.pid,)]
        # Reaped at once, as its parent on a host would: no zombie keeps the group.
        reaper = threading.Thread(target=left.wait)
        reaper.start()
        asyncio.run(finder.end(found, grace=30.0))
        reaper.join(timeout=10)
        assert left.returncode == -signal.SIGTERM
    finally:
        if left.poll() is None:
            left.kill()
            left.wait()


def test_an_executor_used_in_two_event_loops(sshd: LoopbackSshd, tmp_path: Path) -> None:
    ex = SSHExecutor()
    for n in (1, 2):
        a = attempt(tmp_path, "node-twice", f"echo run {n}", sshd.spec("node-twice"), n=n)
        r = asyncio.run(ex.run(a))
        assert r.ok, r
        assert Path(a.log_path).read_text() == f"run {n}\n"
    asyncio.run(ex.aclose())


@pytest.fixture(scope="module")
def sshd_two_sessions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackSshd]:
    """A test server that allows 2 sessions per connection (sshd ``MaxSessions 2``)."""
    from fleetrun.executors.testing import available

    if not available():
        pytest.skip("openssh-server is not installed")
    server = LoopbackSshd.start(tmp_path_factory.mktemp("sshd2"), extra_config="MaxSessions 2\n")
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_attempts_wait_for_the_servers_session_limit(
    sshd_two_sessions: LoopbackSshd, tmp_path: Path
) -> None:
    # Two attempts hold both sessions past the connect timeout; three more on
    # the same host wait for a slot instead of failing, and the server's limit
    # becomes the connection's.
    server = sshd_two_sessions
    release = tmp_path / "release"
    spec = server.spec("node-max", connect_timeout=2)
    handles: list[Handle] = []
    holders = [
        attempt(
            tmp_path,
            "node-max",
            f"while [ ! -e {release} ]; do sleep 0.05; done; echo held",
            spec,
            task=f"hold{i}",
            handles=handles,
        )
        for i in range(2)
    ]
    quick = [attempt(tmp_path, "node-max", "echo quick", spec, task=f"quick{i}") for i in range(3)]

    async def go(ex: SSHExecutor) -> tuple[list[AttemptResult], int]:
        first = [asyncio.ensure_future(ex.run(a)) for a in holders]
        deadline = time.monotonic() + 30
        while len(handles) < 2:
            assert time.monotonic() < deadline, "the holders did not start"
            await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(ex.run(a)) for a in quick]
        # Longer than the connect timeout: the queued attempts must not fail.
        await asyncio.sleep(3.0)
        assert not any(t.done() for t in rest)
        release.touch()
        results = await asyncio.gather(*first, *rest)
        return list(results), ex.pool.entry(_spec(spec)).sessions.limit

    results, limit = _run(go)
    assert [r.reason for r in results if not r.ok] == []
    assert limit == 2
    for a in quick:
        assert Path(a.log_path).read_text() == "quick\n"


def _spec(attr: dict[str, object]) -> Any:
    from fleetrun.executors import SSHSpec

    return SSHSpec.from_attribute(attr, None)


def test_silent_jump_host_is_named(sshd: LoopbackSshd, tmp_path: Path) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        a = attempt(
            tmp_path,
            "node-behind",
            "true",
            sshd.spec("node-behind", jump=f"127.0.0.1:{port}", connect_timeout=1),
        )
        r: AttemptResult = _run(lambda ex: ex.run(a))
    assert r.error_kind == "connect"
    assert r.exit_code is None
    assert r.reason is not None
    assert f"via jump host 127.0.0.1:{port}: no SSH connection within 1s" in r.reason
    assert r.reason.count(f"127.0.0.1:{port}") == 1, r.reason  # the hop is named once


def test_silent_proxyjump_from_the_config_is_named(sshd: LoopbackSshd, tmp_path: Path) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        cfg = tmp_path / "ssh_config_proxy"
        cfg.write_text(
            f"Host hidden-*\n  ProxyJump 127.0.0.1:{port}\n\n" + sshd.client_config.read_text()
        )
        a = attempt(
            tmp_path,
            "hidden-1",
            "true",
            {"host": "hidden-1", "config_file": str(cfg), "connect_timeout": 1},
        )
        r: AttemptResult = _run(lambda ex: ex.run(a))
    assert r.error_kind == "connect"
    assert r.reason is not None
    assert f"jump host 127.0.0.1:{port}" in r.reason


@pytest.mark.parametrize(
    ("publish", "words"),
    [
        ("printf 'name=caf\\351\\n'", "is not UTF-8 text"),
        ("printf 'ok=1\\nbad=a\\000b\\n'", "holds a NUL byte"),
    ],
)
def test_outputs_refused_as_locally(
    sshd: LoopbackSshd, tmp_path: Path, publish: str, words: str
) -> None:
    # One rule for outputs, whatever the executor: the same message, word for word.
    command = f'{publish} > "$FLEETRUN_OUTPUT"'
    remote = attempt(tmp_path, "node-out", command, sshd.spec("node-out"), task="pub")
    with pytest.raises(OutputRefused) as by_ssh:
        _run(lambda ex: ex.run(remote))
    local_dir = tmp_path / "local"
    local_dir.mkdir()
    here = attempt(local_dir, "node-out", command, None, task="pub")

    async def local() -> AttemptResult:
        ex = LocalExecutor()
        try:
            return await ex.run(here)
        finally:
            await ex.aclose()

    with pytest.raises(OutputRefused) as by_local:
        asyncio.run(local())
    assert words in str(by_ssh.value)
    assert str(by_ssh.value) == str(by_local.value)


def test_stdout_and_stderr_keep_their_order(sshd: LoopbackSshd, tmp_path: Path) -> None:
    a = attempt(
        tmp_path,
        "node-order",
        'i=1; while [ "$i" -le 300 ]; do echo "step $i"; echo "warning $i" >&2; i=$((i+1)); done',
        sshd.spec("node-order"),
    )
    r: AttemptResult = _run(lambda ex: ex.run(a))
    assert r.ok, r
    want = "".join(f"step {i}\nwarning {i}\n" for i in range(1, 301))
    assert Path(a.log_path).read_text() == want


def test_no_cryptography_warnings_but_other_warnings_stay() -> None:
    code = (
        "import warnings\n"
        "import fleetrun.executors._ssh\n"
        "from cryptography.utils import CryptographyDeprecationWarning as W\n"
        "warnings.warn('a warning of the caller', W)\n"
    )
    p = subprocess.run(
        [sys.executable, "-W", "default", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    # asyncssh's own (its import names DSA classes) are gone; the caller's remains.
    assert "asyncssh" not in p.stderr
    assert p.stderr.count("CryptographyDeprecationWarning") == 1
    assert "a warning of the caller" in p.stderr


def _journaled_groups(db: Path) -> int:
    """How many attempts in the journal at ``db`` have a process group on record."""
    if not db.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
            row = c.execute("SELECT count(*) FROM attempts WHERE pgid IS NOT NULL").fetchone()
    except sqlite3.Error:  # not created yet
        return 0
    return int(row[0])


def _fleetrun(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleetrun", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.slow
def test_resume_kill_orphans_after_a_sigkill_during_an_ssh_task(
    sshd: LoopbackSshd, tmp_path: Path
) -> None:
    marker = _marker(1103)
    flag = tmp_path / "first-ran"
    state = tmp_path / "state"
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "targets:\n"
        f"  a: {{ssh: {{host: node-resume, config_file: {sshd.client_config}}}}}\n"
        "tasks:\n"
        "  t: {for_each: all, runs_on: ssh,\n"
        f'      run: "if [ -e {flag} ]; then echo again; else touch {flag}; sleep {marker}; fi"}}\n'
    )
    first = subprocess.Popen(
        [sys.executable, "-m", "fleetrun", "apply", str(plan), "--state-dir", str(state)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not _alive(marker):
            assert time.monotonic() < deadline, "the SSH task never started"
            assert first.poll() is None
            time.sleep(0.05)
        while not _journaled_groups(state / "state.db"):
            assert time.monotonic() < deadline, "the attempt's handle never reached the journal"
            time.sleep(0.05)
        first.kill()
        first.wait(timeout=10)
        assert _alive(marker)  # left running on the host
        res = _fleetrun(
            "apply", str(plan), "--resume", "--kill-orphans", "--state-dir", str(state), "--plain"
        )
        out = res.stdout + res.stderr
        assert res.returncode == 0, out
        # The SSH host is this machine: the local finder sees the same processes,
        # and each orphan is still listed, and counted, once.
        assert out.count("orphan: t@a") == 1, out
        assert "ended 1 orphaned process group(s)" in out
        assert "Traceback" not in out
        assert "Warning" not in res.stderr  # no library deprecation noise either
        assert _wait_gone(marker) == []
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        for pid in _alive(marker):
            subprocess.run(["kill", "-KILL", pid], check=False)
