"""A real OpenSSH server on 127.0.0.1, started once per test session.

``fleetrun.executors.testing.LoopbackSshd`` generates the host and user keys
(ssh-keygen) and the configs, starts ``/usr/sbin/sshd -D`` on a free port as
the current user with sshd's default ``MaxStartups``/``MaxSessions``, and is
stopped after the session. Its client config maps every host name to it, so
targets ``node-000`` ... ``node-199`` are distinct hosts - distinct
connections - to one server. Nothing leaves the loopback interface.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from fleetrun.executors.testing import LoopbackSshd, available


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackSshd]:
    """The session's OpenSSH server (skipped where none is installed, unless in CI)."""
    if not available():
        if os.environ.get("CI"):
            pytest.fail("openssh-server is not installed (.ci/run installs it)")
        pytest.skip("openssh-server is not installed")
    server = LoopbackSshd.start(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()
