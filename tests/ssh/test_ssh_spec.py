"""Reading a target's ``ssh`` attribute into ``SSHSpec``."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from fleetrun.executors import SSHSpec
from fleetrun.executors._ssh_spec import parse_destination


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("host", (None, "host", None)),
        ("ops@host", ("ops", "host", None)),
        ("ops@host:2222", ("ops", "host", 2222)),
        ("10.0.0.1:22", (None, "10.0.0.1", 22)),
        ("root@[::1]:2200", ("root", "::1", 2200)),
        ("a@b@c", None),
        ("host:0", None),
        ("host:70000", None),
        ("", None),
    ],
)
def test_destinations(text: str, want: Any) -> None:
    assert parse_destination(text) == want


def test_specs() -> None:
    assert SSHSpec.from_attribute(None, "web1") == SSHSpec(host="web1")
    s = SSHSpec.from_attribute("deploy@10.0.0.5:2200", "web1")
    assert (s.user, s.host, s.port, s.destination) == (
        "deploy",
        "10.0.0.5",
        2200,
        "deploy@10.0.0.5:2200",
    )
    m = SSHSpec.from_attribute(
        {"host": "ops@h", "port": 2201, "known_hosts": "accept-new:/tmp/kh", "connect_timeout": 3},
        "t",
    )
    assert (m.user, m.host, m.port, m.accept_new, m.known_hosts, m.connect_timeout) == (
        "ops",
        "h",
        2201,
        True,
        "/tmp/kh",
        3.0,
    )
    assert SSHSpec.from_attribute({"known_hosts": "accept-new"}, "t").known_hosts is None
    assert SSHSpec.from_attribute({"user": "x"}, "t").host == "t"
    with pytest.raises(ValueError, match="target 't'"):
        SSHSpec.from_attribute({"bogus": 1}, "t")
    with pytest.raises(ValueError, match="needs a target"):
        SSHSpec.from_attribute(None, None)


def test_open_file_limit_is_raised_for_large_fleets() -> None:
    # In a child: a soft limit of 256 (fewer than a 1,000-host fleet needs) is
    # raised to the hard limit when the executor's pool is created.
    code = (
        "import asyncio, resource\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "from fleetrun.executors import SSHExecutor\n"
        "async def main():\n"
        "    ex = SSHExecutor()\n"
        "    print(ex.pool.nofile == hard, resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard)\n"
        "    await ex.aclose()\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]
