"""Reading ``ssh`` settings: a target's ``ssh`` attribute and the plan's ``ssh:`` defaults.

A target's ``ssh`` is ``[user@]host[:port]`` or a mapping of ``SSH_KEYS``; the
plan's ``ssh:`` is a mapping of the same keys (usually without ``host``) that
every target's settings are laid over. Paths (``identity_file``,
``config_file``, ``known_hosts``) are made absolute relative to the plan's
directory (``~`` is left for the executor to expand); ``known_hosts`` may
also be ``accept-new`` or ``accept-new:PATH``. The result is checked here so
that the executor only normalises (``fleetrun.executors.SSHSpec``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from fleetrun.plan._fields import Ctx, join
from fleetrun.plan._model import Scalar
from fleetrun.plan._yaml import YMap, YNode, YScalar
from fleetrun.runs_on import SSH_KEYS

_DEST = re.compile(
    r"^(?:(?P<user>[^@\s]+)@)?(?P<host>\[[^\]\s]+\]|[^:@\s\[\]]+)(?::(?P<port>\d+))?$"
)
_DEST_HELP = "write user@host:port (user and port optional), or a mapping with host, port, user"
ACCEPT_NEW = "accept-new"


def read_destination(ctx: Ctx, node: YScalar, key: str) -> dict[str, Scalar] | None:
    """``user@host:port`` as ``{user, host, port}`` (the parts given)."""
    text = str(node.value).strip()
    m = _DEST.match(text)
    port = int(m.group("port")) if m and m.group("port") else None
    if m is None or (port is not None and not 0 < port < 65536):
        ctx.error(node, key, f"cannot read the SSH destination {text!r}", _DEST_HELP)
        return None
    host = m.group("host")
    out: dict[str, Scalar] = {"host": host[1:-1] if host.startswith("[") else host}
    if m.group("user"):
        out["user"] = m.group("user")
    if port is not None:
        out["port"] = port
    return out


def read_ssh(
    ctx: Ctx, node: YNode, key: str, base_dir: Path, *, allow_string: bool
) -> dict[str, Scalar] | None:
    """An ``ssh`` value at ``node`` (None after reporting a problem)."""
    if isinstance(node, YScalar) and isinstance(node.value, str) and allow_string:
        return read_destination(ctx, node, key)
    if not isinstance(node, YMap):
        want = "user@host:port or a mapping" if allow_string else "a mapping of SSH settings"
        ctx.wrong_type(node, key, want)
        return None
    out: dict[str, Scalar] = {}
    ok = True
    for k, v in ctx.items(node, key, SSH_KEYS):
        sub = join(key, k)
        if k == "port":
            port = ctx.integer(v, sub, minimum=1)
            if port is not None and port > 65535:
                ctx.error(v, sub, f"port {port} is out of range", "use a port from 1 to 65535")
                port = None
            ok &= port is not None
            out[k] = port
        elif k == "connect_timeout":
            t = ctx.duration(v, sub, positive=True)
            ok &= t is not None
            out[k] = t
        else:
            text = ctx.string(v, sub)
            ok &= text is not None
            if text is None:
                continue
            if k == "host" and isinstance(v, YScalar):
                dest = read_destination(ctx, v, sub)
                if dest is None:
                    ok = False
                    continue
                for dk, dv in dest.items():
                    out.setdefault(dk, dv)
                continue
            if k in ("identity_file", "config_file"):
                text = _absolute(text, base_dir)
            elif k == "known_hosts":
                if text == ACCEPT_NEW:
                    pass
                elif text.startswith(ACCEPT_NEW + ":"):
                    text = ACCEPT_NEW + ":" + _absolute(text[len(ACCEPT_NEW) + 1 :], base_dir)
                else:
                    text = _absolute(text, base_dir)
            out[k] = text
    return out if ok else None


def merge_ssh(
    defaults: Mapping[str, Scalar] | None, own: Mapping[str, Scalar] | None
) -> dict[str, Scalar] | None:
    """A target's settings over the plan's defaults (None when neither is given)."""
    if defaults is None and own is None:
        return None
    return {**(defaults or {}), **(own or {})}


def _absolute(path: str, base_dir: Path) -> str:
    if path.startswith("~") or Path(path).is_absolute():
        return path
    return str(base_dir / path)
