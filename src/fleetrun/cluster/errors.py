"""Errors of the compute-cluster package.

The tree (rooted at ``fleetrun.errors.FleetrunError``)::

    FleetrunError
    └── ClusterError              the compute cluster could not do what was asked (exit 1)
        ├── ClusterConfigError    bad or missing cluster configuration (exit 2)
        ├── ClusterCommandError   kubectl or docker failed; carries the command (redacted)
        └── ClusterNotFoundError  no cluster is recorded or reachable where one was named (exit 2)
"""

from __future__ import annotations

import os

from fleetrun.errors import FleetrunError


class ClusterError(FleetrunError):
    """The compute cluster could not do what was asked."""

    exit_code = 1


class ClusterConfigError(ClusterError):
    """Configuration is missing or invalid; the message is one line naming the setting."""

    exit_code = 2


class ClusterCommandError(ClusterError):
    """An external command (kubectl, docker) failed.

    ``argv`` is the command as run (it never holds a password: those go on stdin).
    """

    def __init__(self, argv: list[str], returncode: int, detail: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        first = detail.strip().splitlines()[-1] if detail.strip() else ""
        shown = " ".join([os.path.basename(argv[0]), *argv[1:4]]) if argv else "command"
        super().__init__(f"{shown} failed with exit {returncode}" + (f": {first}" if first else ""))


class ClusterNotFoundError(ClusterError):
    """No cluster is recorded in the state directory, or the scheduler cannot be reached."""

    exit_code = 2
