"""Who may read and who may act: the session token, the host check, the headers.

- **The token.** ``fleetrun ui`` prints one (``--token``, or a generated one).
  Opening any page with ``?token=T`` stores it in a cookie for this server
  (``SameSite=Strict``) and redirects to the same page without it, so it does
  not stay in the address bar or the history.
- **Actions** (every ``POST``) need the token in the ``X-Fleetrun-Token``
  header; the page's script reads it from the cookie. A cookie alone is not
  enough: another site can make a browser send cookies, not set a header
  (that would need a CORS preflight, which this server never grants). So a
  forged request changes nothing: 403, whatever the cookie.
- **Reading** is open on a loopback address. Bound to any other address,
  every request needs the token: the cookie, ``Authorization: Bearer T``
  (for a Prometheus scraper) or ``?token=T``.
- **Host check.** On loopback, a request whose ``Host`` is not the loopback
  address it was sent to is refused, so a web page cannot reach this server
  through a DNS name rebound to 127.0.0.1.
- **Headers.** Every answer carries a strict Content-Security-Policy (scripts,
  styles and connections from this server only; no inline script or style
  attribute, no frames, no forms), ``nosniff``, ``no-referrer`` and no caching.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TOKEN_HEADER = "x-fleetrun-token"
"""The header an action carries the token in."""

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]


def new_token() -> str:
    """A fresh session token (192 random bits, URL-safe)."""
    return secrets.token_urlsafe(24)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Access:
    """The rules of one server: its token, whether reading needs it, its port."""

    token: str
    reads_need_token: bool
    port: int

    @property
    def cookie(self) -> str:
        """The token cookie's name (per port: cookies do not tell ports apart)."""
        return f"fleetrun_token_{self.port}"

    def matches(self, given: str | None) -> bool:
        """Whether ``given`` is the token (compared in constant time)."""
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k == name:
            return str(v.decode("latin-1"))
    return None


def _cookie(scope: Scope, name: str) -> str | None:
    raw = _header(scope, b"cookie") or ""
    for part in raw.split(";"):
        k, _, v = part.strip().partition("=")
        if k == name:
            return urllib.parse.unquote(v)
    return None


class Guard:
    """ASGI middleware that applies ``Access`` and adds the security headers."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        access = self.access
        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
        given = query.get("token", [None])[-1]
        if not access.reads_need_token:
            host = (_header(scope, b"host") or "").rsplit(":", 1)[0]
            if not is_loopback(host):
                await _plain(send, 403, "refused: this server answers on its loopback address only")
                return
        if given is not None and scope["method"] == "GET":
            if not access.matches(given):
                await _plain(send, 403, "refused: that is not this server's token")
                return
            await _redirect_with_cookie(scope, send, access, query)
            return
        bearer = (_header(scope, b"authorization") or "").removeprefix("Bearer ").strip() or None
        cookie = _cookie(scope, access.cookie)
        known = access.matches(cookie) or access.matches(bearer)
        if access.reads_need_token and not known:
            await _plain(
                send,
                401,
                "this server needs its token: open the URL `fleetrun ui` printed "
                "(it ends in ?token=...), or send Authorization: Bearer TOKEN",
            )
            return
        if scope["method"] not in ("GET", "HEAD") and not access.matches(
            _header(scope, TOKEN_HEADER.encode())
        ):
            await _plain(
                send,
                403,
                "refused: actions need the token `fleetrun ui` printed (nothing was changed)",
                json=True,
            )
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in _HEADERS if k not in names
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _plain(send: Send, status: int, text: str, *, json: bool = False) -> None:
    if json:
        import json as _json

        body = _json.dumps({"error": text}).encode()
        kind = b"application/json"
    else:
        body = (text + "\n").encode()
        kind = b"text/plain; charset=utf-8"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode()),
                        *_HEADERS],
        }
    )  # fmt: skip
    await send({"type": "http.response.body", "body": body})


async def _redirect_with_cookie(
    scope: Scope, send: Send, access: Access, query: dict[str, list[str]]
) -> None:
    rest = {k: v for k, v in query.items() if k != "token"}
    location = scope.get("path", "/") or "/"
    if not location.startswith("/") or location.startswith("//"):
        location = "/"
    if rest:
        location += "?" + urllib.parse.urlencode(rest, doseq=True)
    cookie = f"{access.cookie}={access.token}; Path=/; SameSite=Strict"
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [
                (b"location", urllib.parse.quote(location, safe="/?=&%").encode("latin-1")),
                (b"set-cookie", cookie.encode()),
                (b"content-length", b"0"),
                *_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})
