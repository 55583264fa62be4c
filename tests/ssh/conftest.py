"""A real OpenSSH server on 127.0.0.1, started once per test session.

The fixture generates a host key and a user key (ssh-keygen), writes an
sshd_config (``UsePAM no``, ``StrictModes no``, its own ``AuthorizedKeysFile``;
everything else is sshd's default, ``MaxStartups 10:30:100`` and
``MaxSessions 10`` included), starts ``/usr/sbin/sshd -D`` on a free port as
the current user, and stops it after the session. A client config maps every
host name to that server (``HostKeyAlias`` keeps one known_hosts entry), so
targets ``node-000`` ... ``node-199`` are distinct hosts - distinct
connections - to one server. Nothing leaves the loopback interface.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"
ALIAS = "fleetrun-test-sshd"


@dataclass(frozen=True)
class Sshd:
    """The running test server and the files a client needs to reach it."""

    port: int
    dir: Path
    pid: int
    user: str
    identity: Path
    known_hosts: Path
    client_config: Path
    host_key_line: str

    def spec(self, host: str = "node-000", **extra: object) -> dict[str, object]:
        """An ``ssh`` attribute reaching the server as ``host`` (through the client config)."""
        return {"host": host, "config_file": str(self.client_config), **extra}

    def direct(self, **extra: object) -> dict[str, object]:
        """An ``ssh`` attribute reaching 127.0.0.1:port directly (no client config)."""
        known = self.dir / "known_hosts_direct"
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "user": self.user,
            "identity_file": str(self.identity),
            "known_hosts": str(known),
            **extra,
        }

    def children(self) -> list[int]:
        """Pids of the per-connection sshd processes (children of the listener)."""
        out = subprocess.run(
            ["pgrep", "-P", str(self.pid)], capture_output=True, text=True, check=False
        ).stdout
        return [int(p) for p in out.split()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        timeout=30,
    )


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """The session's OpenSSH server (skipped where no sshd is installed, unless in CI)."""
    if not os.path.exists(SSHD) or shutil.which("ssh-keygen") is None:
        if os.environ.get("CI"):
            pytest.fail("openssh-server is not installed (.ci/run installs it)")
        pytest.skip("openssh-server is not installed")
    d = tmp_path_factory.mktemp("sshd")
    d.chmod(0o700)
    _keygen(d / "host_key")
    _keygen(d / "id_user")
    shutil.copy(d / "id_user.pub", d / "authorized_keys")
    # Privilege separation needs this directory (Debian's package creates it at boot).
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    port = _free_port()
    user = os.environ.get("USER") or "root"
    if os.geteuid() == 0:
        user = "root"
    (d / "sshd_config").write_text(
        f"Port {port}\n"
        "ListenAddress 127.0.0.1\n"
        f"HostKey {d / 'host_key'}\n"
        f"PidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\n"
        "UsePAM no\n"
        "StrictModes no\n"
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "LogLevel ERROR\n"
    )
    host_pub = (d / "host_key.pub").read_text().split()
    key_line = f"{host_pub[0]} {host_pub[1]}"
    (d / "known_hosts").write_text(f"{ALIAS} {key_line}\n")
    (d / "known_hosts_direct").write_text(f"[127.0.0.1]:{port} {key_line}\n")
    (d / "ssh_config").write_text(
        "Host *\n"
        "  HostName 127.0.0.1\n"
        f"  Port {port}\n"
        f"  User {user}\n"
        f"  IdentityFile {d / 'id_user'}\n"
        "  IdentitiesOnly yes\n"
        f"  HostKeyAlias {ALIAS}\n"
        f"  UserKnownHostsFile {d / 'known_hosts'}\n"
    )
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(d / "sshd_config")],
        stdout=subprocess.DEVNULL,
        stderr=open(d / "sshd.log", "wb"),  # noqa: SIM115 - kept open while sshd runs
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(4).startswith(b"SSH-"):
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            log = (d / "sshd.log").read_text(errors="replace")
            proc.kill()
            pytest.fail(f"sshd did not start: {log}")
        time.sleep(0.05)
    try:
        yield Sshd(
            port=port,
            dir=d,
            pid=proc.pid,
            user=user,
            identity=d / "id_user",
            known_hosts=d / "known_hosts",
            client_config=d / "ssh_config",
            host_key_line=key_line,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
