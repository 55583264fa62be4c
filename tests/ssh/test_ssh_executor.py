"""SSHExecutor against the real OpenSSH server of ``conftest.sshd``."""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from _ssh_attempts import attempt

from fleetrun.executors import SSHExecutor, SSHOrphanFinder
from fleetrun.executors._contract import AttemptResult, Handle, Orphan, RecordedAttempt
from fleetrun.executors._ssh_spec import DEFAULT_CONNECT_TIMEOUT
from fleetrun.runs_on import Script, SSHOptions


def _run(coro_fn: Callable[[SSHExecutor], Awaitable[Any]], **kw: Any) -> Any:
    async def main() -> Any:
        ex = SSHExecutor(**kw)
        try:
            return await coro_fn(ex)
        finally:
            await ex.aclose()

    return asyncio.run(main())


# Suffix of the remote `sleep` arguments that mark each test's processes: unique
# to this test process, so `pgrep -f` never sees another test run's (another
# worker's, another checkout's) sleeps.
_TAG = f"{secrets.randbelow(10**8):08d}"


def _marker(n: int) -> str:
    """``N.TAG``: a sleep argument (seconds) that names one test's processes."""
    return f"{n}.{_TAG}"


def _alive(marker: str) -> list[str]:
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True, check=False)
    return out.stdout.split()


def _wait_gone(marker: str, within: float = 5.0) -> list[str]:
    deadline = time.monotonic() + within
    while (left := _alive(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def _cmdlines() -> str:
    return subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


async def _started(handles: list[Handle], marker: str, within: float = 20.0) -> None:
    """Wait until the attempt reported its handle and the marked process runs."""
    for _ in range(int(within / 0.05)):
        if handles and _alive(marker):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{marker} did not start")


def test_command_env_outputs_and_handle(sshd: Any, tmp_path: Path) -> None:
    handles: list[Handle] = []
    lines: list[str] = []
    cmd = (
        'echo "greeting=$GREETING"; echo "to stderr" >&2; '
        'echo "target=$FLEETRUN_TARGET attempt=$FLEETRUN_ATTEMPT"; '
        'echo "token is $API_TOKEN"; '
        'printf "address=0xabc\\nnote = two words\\n" > "$FLEETRUN_OUTPUT"; '
        'echo "pgid=$(ps -o pgid= -p $$ | tr -d " ")"; '
        'echo "outputs file=$FLEETRUN_OUTPUT"'
    )
    a = attempt(
        tmp_path,
        "node-env",
        cmd,
        sshd.spec("node-env"),
        env={"GREETING": 'it\'s a "quoted" $value', "API_TOKEN": "s3cr3t-value"},
        secrets=("s3cr3t-value",),
        handles=handles,
        lines=lines,
    )
    r: AttemptResult = _run(lambda ex: ex.run(a))
    assert r.ok, r
    assert r.outputs == {"address": "0xabc", "note": "two words"}
    log = Path(a.log_path).read_text()
    assert 'greeting=it\'s a "quoted" $value\n' in log
    assert "target=node-env attempt=1\n" in log
    assert "to stderr\n" in log
    assert "token is ***\n" in log
    assert "s3cr3t-value" not in log
    # The outputs trailer never reaches the log.
    assert "address=0xabc" not in log
    assert "token is ***" in lines
    [h] = handles
    assert h.kind == "ssh"
    assert h.host == "node-env"
    assert h.pid == h.pgid
    # The command ran in the group the handle names (eval'd in a subshell of it).
    assert f"pgid={h.pgid}\n" in log
    # The remote outputs file was removed.
    [remote_out] = [
        ln.split("=", 1)[1] for ln in log.splitlines() if ln.startswith("outputs file=")
    ]
    assert Path(remote_out).name.startswith(".fleetrun-out-")
    assert not Path(remote_out).exists()


def test_timeout_ends_the_remote_group(sshd: Any, tmp_path: Path) -> None:
    marker = _marker(1001)
    a = attempt(
        tmp_path,
        "node-timeout",
        f"sleep {marker} & sleep {marker}; echo never",
        sshd.spec("node-timeout"),
        timeout=1.0,
        grace=10.0,  # the group ends at the SIGTERM, however busy the machine
    )
    t0 = time.monotonic()
    r: AttemptResult = _run(lambda ex: ex.run(a))
    took = time.monotonic() - t0
    assert r.timed_out
    assert not r.ok
    assert r.exit_code is None
    assert r.signal == signal.SIGTERM
    assert took < 30.0  # not the command's 1001 s
    assert _wait_gone(marker) == []
    assert "never" not in Path(a.log_path).read_text()


def test_cancellation_ends_the_remote_group(sshd: Any, tmp_path: Path) -> None:
    marker = _marker(1002)
    handles: list[Handle] = []
    # The command ignores SIGTERM: the grace period runs out and SIGKILL follows.
    a = attempt(
        tmp_path,
        "node-cancel",
        f"trap '' TERM; sleep {marker}",
        sshd.spec("node-cancel"),
        grace=0.5,
        handles=handles,
    )

    async def go(ex: SSHExecutor) -> float:
        task = asyncio.ensure_future(ex.run(a))
        await _started(handles, marker)
        t0 = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - t0

    took = _run(go)
    assert took < 30.0  # not the command's 1002 s
    assert _wait_gone(marker) == []


def test_kill_now_skips_the_grace(sshd: Any, tmp_path: Path) -> None:
    marker = _marker(1003)
    handles: list[Handle] = []
    a = attempt(
        tmp_path,
        "node-killnow",
        f"trap '' TERM; sleep {marker}",
        sshd.spec("node-killnow"),
        grace=30.0,
        handles=handles,
    )

    async def go(ex: SSHExecutor) -> float:
        task = asyncio.ensure_future(ex.run(a))
        await _started(handles, marker)
        t0 = time.monotonic()
        task.cancel()
        await asyncio.sleep(0.3)
        ex.kill_now()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - t0

    assert _run(go) < 15.0  # not the 30 s grace
    assert _wait_gone(marker) == []


def test_lost_connection_fails_that_attempt_only(sshd: Any, tmp_path: Path) -> None:
    marker = _marker(1004)
    handles: list[Handle] = []
    victim = attempt(
        tmp_path,
        "node-lost",
        f"sleep {marker}",
        sshd.spec("node-lost"),
        handles=handles,
    )
    others = [
        attempt(tmp_path, f"node-other-{i}", "sleep 1; echo done", sshd.spec(f"node-other-{i}"))
        for i in range(3)
    ]

    async def go(ex: SSHExecutor) -> list[AttemptResult]:
        tasks = [asyncio.ensure_future(ex.run(x)) for x in [victim, *others]]
        await _started(handles, marker)
        # Kill the sshd process that serves this connection (the listener's child
        # that is an ancestor of the remote shell).
        pid = handles[0].pid
        assert pid is not None
        children = set(sshd.children())
        while pid not in children and pid > 1:
            pid = _ppid(pid)
        assert pid in children
        os.kill(pid, signal.SIGKILL)
        return list(await asyncio.gather(*tasks))

    lost, *rest = _run(go)
    assert lost.exit_code is None
    assert lost.error_kind == "lost"
    assert lost.reason is not None
    assert lost.reason.startswith("node-lost: connection lost while the command ran")
    assert all(r.ok for r in rest), rest
    # The executor reconnected and ended what the dead session left.
    assert _wait_gone(marker) == []


def test_host_key_changed_is_refused(sshd: Any, tmp_path: Path) -> None:
    bad = tmp_path / "known_hosts_bad"
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong = " ".join(Path(f"{other}.pub").read_text().split()[:2])
    bad.write_text(f"[127.0.0.1]:{sshd.port} {wrong}\n")
    a = attempt(tmp_path, "changed", "echo no", sshd.direct(known_hosts=str(bad)))
    r: AttemptResult = _run(lambda ex: ex.run(a))
    assert r.exit_code is None
    assert r.error_kind == "connect"
    assert r.reason is not None
    assert "HOST KEY CHANGED" in r.reason
    assert str(bad) in r.reason
    assert f"[127.0.0.1]:{sshd.port}" in r.reason
    assert "\n" not in r.reason


def test_unknown_host_key_and_accept_new(sshd: Any, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts_new"
    known.write_text("")
    strict = attempt(tmp_path, "strict", "echo a", sshd.direct(known_hosts=str(known)))
    r: AttemptResult = _run(lambda ex: ex.run(strict))
    assert r.error_kind == "connect"
    assert r.reason is not None
    assert "host key unknown" in r.reason
    assert "accept-new" in r.reason
    assert known.read_text() == ""

    learn = attempt(tmp_path, "learn", "echo b", sshd.direct(known_hosts=f"accept-new:{known}"))
    r = _run(lambda ex: ex.run(learn))
    assert r.ok, r
    assert known.read_text() == f"[127.0.0.1]:{sshd.port} {sshd.host_key_line}\n"
    # Now the strict check passes with the learnt key.
    r = _run(lambda ex: ex.run(strict))
    assert r.ok, r


def test_refused_and_silent_ports_fail_in_bounded_time(sshd: Any, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    refused = attempt(tmp_path, "refused", "true", sshd.direct(port=closed_port))
    t0 = time.monotonic()
    r: AttemptResult = _run(lambda ex: ex.run(refused))
    assert time.monotonic() - t0 < DEFAULT_CONNECT_TIMEOUT * 0.8  # at once, not at the timeout
    assert r.error_kind == "connect"
    assert r.reason is not None
    assert "connection refused" in r.reason
    assert Path(refused.log_path).read_text() == f"fleetrun: {r.reason}\n"

    # A port that accepts and then says nothing (a host that hangs in the handshake).
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        hung = attempt(tmp_path, "silent", "true", sshd.direct(port=port, connect_timeout=1))
        t0 = time.monotonic()
        r = _run(lambda ex: ex.run(hung))
        took = time.monotonic() - t0
    assert 0.9 < took < DEFAULT_CONNECT_TIMEOUT * 0.8  # the given 1 s, not the default
    assert r.error_kind == "connect"
    assert r.reason is not None
    assert "no SSH connection within 1s" in r.reason


def test_auth_failure_and_command_not_found(sshd: Any, tmp_path: Path) -> None:
    stranger = tmp_path / "id_stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    a = attempt(tmp_path, "auth", "true", sshd.direct(identity_file=str(stranger)))
    r: AttemptResult = _run(lambda ex: ex.run(a))
    assert r.error_kind == "connect"
    assert r.reason is not None
    assert "authentication failed" in r.reason

    b = attempt(tmp_path, "node-127", "no-such-command-xyz", sshd.spec("node-127"))
    r = _run(lambda ex: ex.run(b))
    assert r.exit_code == 127
    assert r.reason == "node-127: command not found on node-127 (exit 127)"


def test_one_connection_per_host_and_session_cap(sshd: Any, tmp_path: Path) -> None:
    # 25 attempts on one host: one connection, never more than 10 sessions at once.
    atts = [
        attempt(
            tmp_path, "node-shared", "sleep 0.2; echo ok", sshd.spec("node-shared"), task=f"t{i}"
        )
        for i in range(25)
    ]

    async def go(ex: SSHExecutor) -> tuple[list[AttemptResult], int]:
        before = set(sshd.children())
        results = await asyncio.gather(*(ex.run(x) for x in atts))
        new = set(sshd.children()) - before
        return list(results), len(new)

    results, new_conns = _run(go)
    assert all(r.ok for r in results), [r.reason for r in results if not r.ok]
    assert new_conns == 1


@pytest.mark.slow
def test_more_targets_at_once_than_default_maxstartups_admits(sshd: Any, tmp_path: Path) -> None:
    # sshd's default MaxStartups 10:30:100 refuses every unauthenticated connection
    # past 100: 120 targets connecting at once are more than it admits, as 200
    # would be; none of them may fail.
    atts = [
        attempt(
            tmp_path,
            f"node-{i:03d}",
            'echo "$FLEETRUN_TARGET"',
            # A generous bound: the point is that sshd drops nothing, not the speed
            # of a shared test machine.
            sshd.spec(f"node-{i:03d}", connect_timeout=60),
        )
        for i in range(120)
    ]

    async def go(ex: SSHExecutor) -> list[AttemptResult]:
        return list(await asyncio.gather(*(ex.run(x) for x in atts)))

    results = _run(go)
    failed = [(a.target, r.reason) for a, r in zip(atts, results, strict=True) if not r.ok]
    assert failed == []
    for a in atts[:5]:
        assert Path(a.log_path).read_text() == f"{a.target}\n"


def test_script_is_streamed_with_quoted_arguments(sshd: Any, tmp_path: Path) -> None:
    script = tmp_path / "check.sh"
    # Copies of this script and its outputs file hold the token, and nothing else does.
    token = f"up-{secrets.token_hex(8)}"
    script.write_text(
        "#!/usr/bin/env bash\n"
        'set -eu\nargs=("$@")\necho "n=${#args[@]} first=$1 second=$2"\n'
        'read -r line || echo "stdin is empty"\n'
        f'echo "status={token}" >> "$FLEETRUN_OUTPUT"\n'
    )
    before = set(Path("/tmp").iterdir())
    path = str(script)
    a = attempt(
        tmp_path,
        "node-script",
        f"sh {shlex.quote(path)} 'two words' \"\\$HOME;x\"",
        sshd.spec("node-script"),
        options=SSHOptions(script=Script(path, script.read_text())),
    )
    r: AttemptResult = _run(lambda ex: ex.run(a))
    assert r.ok, (r, Path(a.log_path).read_text())
    assert r.outputs == {"status": token}
    log = Path(a.log_path).read_text()
    assert log == "n=2 first=two words second=$HOME;x\nstdin is empty\n"
    # No copy of the script and no outputs file stays behind (other programs,
    # other tests among them, create files in /tmp meanwhile: look for the token).
    left = []
    for p in set(Path("/tmp").iterdir()) - before:
        try:
            if token in p.read_text():
                left.append(p)
        except (OSError, UnicodeDecodeError):
            continue
    assert left == []


def test_orphan_finder_ends_remote_groups_of_dead_runs(sshd: Any) -> None:
    # A process group left on the host (the same machine as the test sshd).
    tagged = {**os.environ, "FLEETRUN_RUN_ID": "run-dead"}
    left = subprocess.Popen(["sleep", "1007.4242"], start_new_session=True, env=tagged)
    # A group whose id a dead run recorded but that is another program's now.
    reused = subprocess.Popen(["sleep", "1007.4343"], start_new_session=True)
    gone = subprocess.Popen(["true"], start_new_session=True)
    gone.wait(timeout=10)
    try:
        recs = [
            RecordedAttempt(
                "run-dead", "t@node-orphan", 1, Handle("ssh", "node-orphan", left.pid, left.pid)
            ),
            RecordedAttempt(
                "run-dead", "t@node-orphan2", 1, Handle("ssh", "node-orphan2", gone.pid, gone.pid)
            ),
            RecordedAttempt("run-dead", "u@local", 1, Handle("local", "here", 1, 1)),
            RecordedAttempt(
                "run-dead", "t@node-orphan", 2, Handle("ssh", "node-orphan", reused.pid, reused.pid)
            ),
        ]
        finder = SSHOrphanFinder(
            {"node-orphan": sshd.spec("node-orphan"), "node-orphan2": sshd.spec("node-orphan2")}
        )

        async def go() -> list[Orphan]:
            found = await finder.find(recs, ["run-dead"])
            await finder.end(found, grace=0.5)
            return found

        found = asyncio.run(go())
        assert [(o.key, o.handle.pgid, o.pids) for o in found] == [
            ("t@node-orphan", left.pid, (left.pid,))
        ]
        assert found[0].describe() == f"process group {left.pid} on node-orphan, pids {left.pid}"
        assert left.wait(timeout=10) == -signal.SIGTERM
        assert reused.poll() is None
    finally:
        for p in (left, reused):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_what_the_command_leaves_in_its_group_ends_with_it(sshd: Any, tmp_path: Path) -> None:
    marker = _marker(1008)
    a = attempt(
        tmp_path,
        "node-leftover",
        f"sleep {marker} >/dev/null 2>&1 & echo started; exit 3",
        sshd.spec("node-leftover"),
    )
    t0 = time.monotonic()
    r: AttemptResult = _run(lambda ex: ex.run(a))
    assert time.monotonic() - t0 < 30.0  # not the leftover's 1008 s
    assert r.exit_code == 3
    assert r.signal is None
    assert Path(a.log_path).read_text() == "started\n"
    assert _wait_gone(marker, within=2.0) == []


def test_jump_hosts_from_the_jump_key_and_from_proxyjump(sshd: Any, tmp_path: Path) -> None:
    # A config whose via-* hosts are reached through a jump host (ProxyJump),
    # all of them the test server; the jump host forwards to 127.0.0.1:port.
    cfg = tmp_path / "ssh_config_jump"
    cfg.write_text("Host via-*\n  ProxyJump bastion\n\n" + sshd.client_config.read_text())
    by_key = attempt(
        tmp_path,
        "node-jumped",
        "echo jumped",
        sshd.spec("node-jumped", jump="bastion-a,bastion-b"),
    )
    by_config = attempt(
        tmp_path, "via-config", "echo proxied", {"host": "via-config", "config_file": str(cfg)}
    )

    async def go(ex: SSHExecutor) -> tuple[list[AttemptResult], int]:
        before = set(sshd.children())
        results = await asyncio.gather(ex.run(by_key), ex.run(by_config))
        return list(results), len(set(sshd.children()) - before)

    (r1, r2), conns = _run(go)
    assert r1.ok, r1
    assert r2.ok, r2
    assert Path(by_key.log_path).read_text() == "jumped\n"
    assert Path(by_config.log_path).read_text() == "proxied\n"
    # bastion-a, bastion-b (through a), node-jumped (through b), bastion and via-config.
    assert conns == 5


@pytest.mark.parametrize("delay", [0.0, 0.005, 0.02, 0.06])
def test_cancelled_while_starting_leaves_nothing(sshd: Any, tmp_path: Path, delay: float) -> None:
    marker = _marker(1009 + int(delay * 1000))
    a = attempt(tmp_path, "node-early", f"sleep {marker}", sshd.spec("node-early"))

    async def go(ex: SSHExecutor) -> None:
        await ex.run(attempt(tmp_path, "node-early", "true", sshd.spec("node-early"), task="w"))
        task = asyncio.ensure_future(ex.run(a))
        # The connection is warm: cancel while the session is being opened.
        await asyncio.sleep(delay)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    _run(go)
    assert _wait_gone(marker, within=3.0) == []


def test_secrets_never_on_a_command_line(sshd: Any, tmp_path: Path) -> None:
    secret = "tok-5up3r-s3cr3t-9931"
    marker = _marker(1010)
    handles: list[Handle] = []
    a = attempt(
        tmp_path,
        "node-secret",
        f'sleep {marker}; echo "$DEPLOY_TOKEN" >/dev/null',
        sshd.spec("node-secret"),
        env={"DEPLOY_TOKEN": secret},
        secrets=(secret,),
        handles=handles,
        timeout=30.0,
        grace=0.5,
    )

    async def go(ex: SSHExecutor) -> str:
        task = asyncio.ensure_future(ex.run(a))
        await _started(handles, marker)
        # Every process's command line on the machine, the remote shells included.
        cmdlines = _cmdlines()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return cmdlines

    cmdlines = _run(go)
    assert f"sleep {marker}" in cmdlines
    assert secret not in cmdlines


def test_timeouts_when_every_session_of_the_host_is_busy(sshd: Any, tmp_path: Path) -> None:
    # Ten sessions fill sshd's MaxSessions: the kill commands go around them.
    marker = _marker(1011)
    atts = [
        attempt(
            tmp_path,
            "node-full",
            f"sleep {marker}",
            sshd.spec("node-full"),
            task=f"t{i}",
            timeout=1.5,
            # The group ends at the SIGTERM: the grace only has to outlast a
            # fresh connection's handshake on a busy machine.
            grace=10.0,
        )
        for i in range(10)
    ]

    fresh: list[object] = []

    async def go(ex: SSHExecutor) -> list[AttemptResult]:
        pool = ex.pool
        original = pool.fresh_connection

        async def counted(entry: Any) -> Any:
            fresh.append(entry)
            return await original(entry)

        pool.fresh_connection = counted  # type: ignore[method-assign]
        return list(await asyncio.gather(*(ex.run(a) for a in atts)))

    t0 = time.monotonic()
    results = _run(go)
    assert time.monotonic() - t0 < 60.0  # not the commands' 1011 s
    assert fresh, "the kill commands never needed a connection of their own"
    assert [r for r in results if not (r.timed_out and r.signal == signal.SIGTERM)] == []
    assert _wait_gone(marker) == []
