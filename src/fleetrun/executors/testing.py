"""A throwaway OpenSSH server on 127.0.0.1, for tests, benchmarks and the examples.

``LoopbackSshd.start(dir)`` generates a host key and a user key (ssh-keygen),
writes an sshd_config (``UsePAM no``, ``StrictModes no``, its own
``AuthorizedKeysFile``, ``SetEnv SHLVL=1`` so that bash does not run the real
user's ``~/.bashrc`` for each command; everything else sshd's defaults, ``MaxStartups
10:30:100`` and ``MaxSessions 10`` included, unless overridden), starts
``/usr/sbin/sshd -D`` on a free port as the current user, and writes a client
config that maps every host name to it (``HostKeyAlias`` keeps one
known_hosts entry): targets ``node-001``, ``web1``... are distinct hosts -
distinct connections - to one server. Nothing leaves the loopback interface.
``stop()`` ends it.

``TcpRelay`` sits in front of it to make connections half-open on demand.

``python -m fleetrun.executors.testing DIR`` starts one, writes
``DIR/ssh_config`` (what ``examples/hosts`` uses) and runs until interrupted.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"
ALIAS = "fleetrun-loopback-sshd"


def available() -> bool:
    """True when sshd and ssh-keygen are installed."""
    return os.path.exists(SSHD) and shutil.which("ssh-keygen") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30
    )


@dataclass
class LoopbackSshd:
    """A running test server and the files a client needs to reach it."""

    port: int
    dir: Path
    proc: subprocess.Popen[bytes]
    user: str
    identity: Path
    known_hosts: Path
    client_config: Path
    host_key_line: str

    @property
    def pid(self) -> int:
        """The listening sshd's pid (per-connection sshd processes are its children)."""
        return self.proc.pid

    @classmethod
    def start(
        cls,
        directory: str | os.PathLike[str],
        *,
        extra_config: str = "",
        timeout: float = 20.0,
        user: str | None = None,
    ) -> LoopbackSshd:
        """Generate keys and configs under ``directory`` and start sshd there.

        ``user``: the remote user clients log in as (default: the current
        one); another user must be able to read ``directory``.
        """
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o755 if user else 0o700)
        for name in ("host_key", "id_user"):
            if not (d / name).exists():
                _keygen(d / name)
        shutil.copy(d / "id_user.pub", d / "authorized_keys")
        (d / "authorized_keys").chmod(0o644)
        # Privilege separation needs this directory (Debian's package creates it at boot).
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        port = _free_port()
        if user is None:
            user = "root" if os.geteuid() == 0 else os.environ.get("USER", "root")
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
            # Bash sources ~/.bashrc for a command sshd starts only when it is
            # the first shell level: with SHLVL=1 the real user's start-up
            # file does not run, so its output or races (a version manager's
            # rehash, say) never reach the commands' output.
            "SetEnv SHLVL=1\n"
            "LogLevel ERROR\n" + extra_config
        )
        host_pub = (d / "host_key.pub").read_text().split()
        key_line = f"{host_pub[0]} {host_pub[1]}"
        (d / "known_hosts").write_text(f"{ALIAS} {key_line}\n[127.0.0.1]:{port} {key_line}\n")
        client = d / "ssh_config"
        client.write_text(
            "Host *\n"
            "  HostName 127.0.0.1\n"
            f"  Port {port}\n"
            f"  User {user}\n"
            f"  IdentityFile {d / 'id_user'}\n"
            "  IdentitiesOnly yes\n"
            f"  HostKeyAlias {ALIAS}\n"
            f"  UserKnownHostsFile {d / 'known_hosts'}\n"
            "  StrictHostKeyChecking yes\n"
        )
        log = open(d / "sshd.log", "wb")  # noqa: SIM115 - sshd writes it while it runs
        try:
            proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(d / "sshd_config")],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        finally:
            log.close()
        try:
            cls._wait_ready(proc, port, d, timeout)
        except BaseException:
            # Not started in time, or interrupted while starting: no sshd is left.
            proc.kill()
            proc.wait()
            raise
        return cls(
            port=port,
            dir=d,
            proc=proc,
            user=user,
            identity=d / "id_user",
            known_hosts=d / "known_hosts",
            client_config=client,
            host_key_line=key_line,
        )

    @staticmethod
    def _wait_ready(proc: subprocess.Popen[bytes], port: int, d: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                text = (d / "sshd.log").read_text(errors="replace")
                raise RuntimeError(f"sshd did not start: {text.strip()}")
            time.sleep(0.05)

    def children(self) -> list[int]:
        """Pids of the per-connection sshd processes (children of the listener)."""
        out = subprocess.run(
            ["pgrep", "-P", str(self.pid)], capture_output=True, text=True, check=False
        ).stdout
        return [int(p) for p in out.split()]

    def spec(self, host: str = "node-000", **extra: object) -> dict[str, object]:
        """An ``ssh`` attribute reaching the server as ``host`` (through the client config)."""
        return {"host": host, "config_file": str(self.client_config), **extra}

    def direct(self, **extra: object) -> dict[str, object]:
        """An ``ssh`` attribute reaching 127.0.0.1:port directly (no client config)."""
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "user": self.user,
            "identity_file": str(self.identity),
            "known_hosts": str(self.known_hosts),
            **extra,
        }

    def stop(self) -> None:
        """Stop the listener (established connections end as their clients close)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


class TcpRelay:
    """A TCP relay on 127.0.0.1 in front of a server, whose connections can be frozen.

    ``TcpRelay.start(port)`` listens on a free port of its own and forwards
    every connection it accepts to ``127.0.0.1:port``, both ways, from one
    thread. ``freeze()`` makes every connection open at that moment half-open:
    nothing more is forwarded either way, yet nothing is closed (no FIN, no
    RST), as when a NAT or firewall on the path forgets a connection. New
    connections are forwarded as usual. ``accepted`` counts the connections
    accepted so far; ``close()`` closes the listener and every connection.
    """

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self.accepted = 0
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ, None)
        # Each socket maps to its peer; a frozen pair is unregistered, not closed.
        self._peers: dict[socket.socket, socket.socket] = {}
        self._frozen: list[socket.socket] = []
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._stop = False
        self._freeze = False
        self._thread = threading.Thread(target=self._loop, name="tcp-relay", daemon=True)

    @classmethod
    def start(cls, target_port: int) -> TcpRelay:
        """A running relay to ``127.0.0.1:target_port``."""
        relay = cls(target_port)
        relay._thread.start()
        return relay

    def freeze(self) -> None:
        """Stop forwarding on every connection open now (both ways), closing none."""
        with self._lock:
            self._freeze = True
        self._wake_w.send(b"f")
        # Wait until the relay's thread has applied it (bounded).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with self._lock:
                if not self._freeze:
                    return
            time.sleep(0.01)

    def close(self) -> None:
        """Close the listener and every connection, frozen ones included."""
        self._stop = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"s")
        self._thread.join(timeout=10)
        for s in [*self._peers, *self._frozen]:
            s.close()
        self._peers.clear()
        self._frozen.clear()
        self._sel.close()
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    def _drop(self, s: socket.socket) -> None:
        peer = self._peers.pop(s, None)
        for x in (s, peer):
            if x is None:
                continue
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(x)
            self._peers.pop(x, None)
            x.close()

    def _loop(self) -> None:
        while not self._stop:
            for key, _ in self._sel.select(timeout=1.0):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                if key.data == "wake":
                    with contextlib.suppress(OSError):
                        s.recv(64)
                    with self._lock:
                        if self._freeze:
                            for x in list(self._peers):
                                self._sel.unregister(x)
                                self._frozen.append(x)
                            self._peers.clear()
                            self._freeze = False
                    continue
                if s is self._listener:
                    try:
                        client, _ = s.accept()
                        upstream = socket.create_connection(("127.0.0.1", self._target))
                    except OSError:
                        continue
                    self.accepted += 1
                    for x, y in ((client, upstream), (upstream, client)):
                        x.setblocking(True)
                        self._peers[x] = y
                        self._sel.register(x, selectors.EVENT_READ, "peer")
                    continue
                peer = self._peers.get(s)
                if peer is None:
                    continue
                try:
                    data = s.recv(65536)
                    if data:
                        peer.sendall(data)
                except OSError:
                    data = b""
                if not data:
                    self._drop(s)


class _Stopped(Exception):
    """SIGTERM or SIGHUP reached the command-line server: stop as Ctrl-C does."""


def _stop_on_signal(signum: int, frame: object) -> None:
    raise _Stopped(signal.Signals(signum).name)


def main(argv: list[str]) -> int:
    """Start a server for DIR (writes DIR/ssh_config) and run until interrupted:
    Ctrl-C, SIGTERM (``kill %1`` of a background job) or SIGHUP (the terminal
    closed) stop the sshd with it."""
    if len(argv) != 1:
        print("usage: python3 -m fleetrun.executors.testing DIR", file=sys.stderr)
        return 2
    # A signal while the server starts is noted, and acted on once start() has
    # returned: raised inside it, it could come while subprocess.Popen waits
    # for sshd's exec (long on a busy machine), and the sshd it had started
    # would be left running with nothing knowing its pid.
    noted: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda signum, frame: noted.append(signum))
    target = Path(argv[0]).resolve()
    server = LoopbackSshd.start(target / ".sshd")
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, _stop_on_signal)
        if noted:
            raise _Stopped(signal.Signals(noted[0]).name)
        shutil.copy(server.client_config, target / "ssh_config")
        print(f"sshd on 127.0.0.1:{server.port}; wrote {target / 'ssh_config'}; "
              "Ctrl-C (or kill) stops it", flush=True)  # fmt: skip
        server.proc.wait()
    except (KeyboardInterrupt, _Stopped):
        pass
    finally:
        # A second signal while the sshd stops must not leave it running.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
