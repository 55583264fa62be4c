"""How to reach an SSH target: the ``ssh`` attribute, read into ``SSHSpec``.

A target's ``ssh`` is either a destination string ``[user@]host[:port]`` or a
mapping with the keys of ``SSH_KEYS`` (``fleetrun.runs_on``, shared with the plan
loader); a target without one is reached at its own name (which
``~/.ssh/config`` may map to a real host, user and key). The
plan loader has already merged the plan's ``ssh:`` defaults into each target's
mapping and checked every value, so this module only normalises.

``known_hosts`` is the strict host-key file (default: what ``~/.ssh/config``
says, else ``~/.ssh/known_hosts``), or ``accept-new`` / ``accept-new:PATH``:
a host with no key on record yet is trusted on first use and its key appended
to the file; a host whose recorded key differs is still refused.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fleetrun.runs_on import SSH_KEYS

ACCEPT_NEW = "accept-new"
DEFAULT_CONNECT_TIMEOUT = 10.0
"""Seconds for DNS, TCP, key exchange, authentication and opening a session."""

_DEST = re.compile(
    r"^(?:(?P<user>[^@\s]+)@)?(?P<host>\[[^\]\s]+\]|[^:@\s\[\]]+)(?::(?P<port>\d+))?$"
)


def parse_destination(text: str) -> tuple[str | None, str, int | None] | None:
    """``user@host:port`` as ``(user, host, port)`` (IPv6 as ``[::1]:22``); None if malformed."""
    m = _DEST.match(text.strip())
    if m is None:
        return None
    port = int(m.group("port")) if m.group("port") else None
    if port is not None and not 0 < port < 65536:
        return None
    host = m.group("host")
    if host.startswith("["):
        host = host[1:-1]
    return m.group("user"), host, port


@dataclass(frozen=True, slots=True)
class SSHSpec:
    """One target's resolved SSH settings (``None``: left to ``~/.ssh/config``).

    Two targets with equal specs share one connection.
    """

    host: str
    port: int | None = None
    user: str | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    accept_new: bool = False
    jump: str | None = None
    config_file: str | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT

    @property
    def destination(self) -> str:
        """``user@host:port`` as far as it is known (what handles and messages show)."""
        user = f"{self.user}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port else ""
        return f"{user}{host}{port}"

    @classmethod
    def from_attribute(cls, value: Any, target: str | None) -> SSHSpec:
        """The spec of a target whose ``ssh`` attribute is ``value`` (None: absent).

        Raises ``ValueError`` with a message naming the target when ``value``
        cannot be read (the loader normally catches this first).
        """
        where = f"target {target!r}" if target else "the attempt"
        if value is None or value == "":
            if not target:
                raise ValueError("an SSH task needs a target (give the task for_each)")
            return cls(host=target)
        if isinstance(value, str):
            dest = parse_destination(value)
            if dest is None:
                raise ValueError(f"{where}: cannot read ssh {value!r}: write user@host:port")
            return cls(host=dest[1], port=dest[2], user=dest[0])
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: ssh must be user@host:port or a mapping")
        unknown = set(value) - set(SSH_KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown ssh keys {sorted(unknown)}")
        host = value.get("host") or target
        if not host:
            raise ValueError(f"{where}: ssh needs a host")
        dest = parse_destination(str(host))
        user, port = value.get("user"), value.get("port")
        if dest is not None:
            host = dest[1]
            user = user if user is not None else dest[0]
            port = port if port is not None else dest[2]
        known = value.get("known_hosts")
        accept_new = False
        if isinstance(known, str) and known.startswith(ACCEPT_NEW):
            accept_new = True
            known = known[len(ACCEPT_NEW) :].lstrip(":") or None
        timeout = value.get("connect_timeout")
        return cls(
            host=str(host),
            port=int(port) if port is not None else None,
            user=str(user) if user is not None else None,
            identity_file=_path(value.get("identity_file")),
            known_hosts=_path(known),
            accept_new=accept_new,
            jump=str(value["jump"]) if value.get("jump") else None,
            config_file=_path(value.get("config_file")),
            connect_timeout=float(timeout) if timeout else DEFAULT_CONNECT_TIMEOUT,
        )


def _path(value: Any) -> str | None:
    return os.path.expanduser(str(value)) if value else None
