"""Where the compute cluster is: the scheduler address of a run, from ``--cluster``,
``FLEETRUN_CLUSTER`` or the plan, checked before anything connects to it."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from fleetrun.errors import UsageError
from fleetrun.names import CLUSTER_ENV

_ADDRESS = re.compile(r"^(?:(?P<scheme>[a-z][a-z0-9+.-]*)://)?(?P<rest>.*)$")
_SCHEMES = ("tcp", "tls", "ws", "wss", "inproc", "ucx")


def resolve_address(
    flag: str | None, plan_address: str | None, env: Mapping[str, str] | None = None
) -> str | None:
    """The scheduler for a run: ``--cluster``, else ``FLEETRUN_CLUSTER``, else the
    plan's ``cluster.address``; None means an embedded local cluster.
    ``HOST:PORT`` gets ``tcp://`` in front. A malformed address raises
    ``UsageError`` (exit 2) naming where it came from and its form."""
    env = os.environ if env is None else env
    where = "--cluster"
    address = flag
    if not address:
        where, address = f"${CLUSTER_ENV}", env.get(CLUSTER_ENV)
    if not address:
        where, address = "the plan's cluster.address", plan_address
    if not address:
        return None
    problem = _address_problem(address)
    if problem is not None:
        raise UsageError(
            f"{where}: {address!r} is not a scheduler address ({problem}); "
            "give HOST:PORT or tcp://HOST:PORT, e.g. tcp://10.0.0.5:8786"
        )
    return address if "://" in address else f"tcp://{address}"


def _address_problem(address: str) -> str | None:
    """What is wrong with a scheduler address, or None."""
    found = _ADDRESS.match(address.strip())
    assert found is not None  # the pattern matches every string
    scheme, rest = found["scheme"], found["rest"]
    if address != address.strip() or any(c.isspace() for c in address):
        return "it holds white space"
    if scheme is not None and scheme not in _SCHEMES:
        return f"unknown scheme {scheme}://"
    if scheme == "inproc":
        return None
    host, sep, port = rest.rpartition(":")
    if not sep or not host:
        return "no host and port"
    if host.startswith("[") != host.endswith("]"):
        return "an unclosed [ in the host"
    if ":" in host and not host.startswith("["):
        return "an IPv6 host goes in brackets, e.g. [::1]:8786"
    if not port.isdigit() or not 0 < int(port) < 65536:
        return f"port {port!r} is not a number from 1 to 65535"
    return None
