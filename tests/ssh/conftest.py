"""A real OpenSSH server on 127.0.0.1, started once per test process.

``fleetrun.executors.testing.LoopbackSshd`` generates the host and user keys
(ssh-keygen) and the configs, starts ``/usr/sbin/sshd -D`` on a free port as
the current user with sshd's default ``MaxStartups``/``MaxSessions``, and is
stopped after the session. Its client config maps every host name to it, so
targets ``node-000`` ... ``node-199`` are distinct hosts - distinct
connections - to one server. Nothing leaves the loopback interface.

Each pytest-xdist worker starts its own server, in its own temporary
directory, on a port of its own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from fleetrun.executors.testing import LoopbackSshd, available


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackSshd]:
    """This process's OpenSSH server (skipped where none is installed, unless in CI)."""
    if not available():
        if os.environ.get("CI"):
            pytest.fail("openssh-server is not installed (.ci/run installs it)")
        pytest.skip("openssh-server is not installed")
    # The free port is chosen before sshd binds it: another process may take it
    # meanwhile, so a failed start is tried again on another port.
    for tries_left in (2, 1, 0):
        try:
            server = LoopbackSshd.start(tmp_path_factory.mktemp("sshd"))
            break
        except RuntimeError:
            if not tries_left:
                raise
    try:
        yield server
    finally:
        server.stop()
