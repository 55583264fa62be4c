"""Serving the application with uvicorn, on a socket bound here.

The socket is bound before uvicorn starts, so port 0 (any free port) works and
the URL is known, and told (``on_ready``), before the first request. uvicorn's
own signal handling stops the server on SIGINT/SIGTERM; stopping also ends
every live-update stream at once (instead of waiting for the pages to go) and
the retries started from the pages (``Actions.close``).

``beside``: serve beside the process with that pid (``fleetrun apply --ui``):
stop when it has gone or asks (SIGTERM), but not at once: the run has just
ended, and the open pages must see that end. The server first lets the poller
look at the journal once more (publishing the run's last change), then tells
the pages it stops (``bye``), and waits until they have read the final state
and closed their streams, at most ``END_WAIT`` seconds in all.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import uvicorn

from fleetrun.errors import UsageError
from fleetrun.ui._app import UiState, create_app
from fleetrun.ui._auth import Access, is_loopback
from fleetrun.ui._live import Hub
from fleetrun.ui._store import Stores

log = logging.getLogger(__name__)

PARENT_CHECK = 0.5
"""Seconds between two looks at the process a server runs beside."""

END_WAIT = 3.0
"""Most seconds a server beside a run spends, once told to stop, pushing the
run's end to the open pages before it stops."""


@dataclass(frozen=True, slots=True)
class UiConfig:
    """How to serve: the state directories, the address, the token."""

    state_dirs: tuple[Path, ...]
    host: str = "127.0.0.1"
    port: int = 8765
    token: str = ""
    beside: int | None = None


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; ``UsageError`` (one line) when it cannot be had."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UsageError(f"--host {host}: cannot resolve it ({e.strerror})") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(128)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise UsageError(
                f"port {port} on {host} is in use; choose another with --port (0: any free port)"
            ) from None
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(False)
    return sock


def url_of(sock: socket.socket, host: str) -> str:
    """The base URL a browser opens for ``sock``."""
    port = sock.getsockname()[1]
    shown = host if host not in ("0.0.0.0", "::", "") else socket.gethostname()
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


class _Server(uvicorn.Server):
    """uvicorn's server, ending the live streams as soon as it is told to stop."""

    def __init__(self, config: uvicorn.Config, state: UiState) -> None:
        super().__init__(config)
        self.state = state

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.beside is not None and not self._stop_asked:
            # The watcher pushes the run's end to the pages, then stops the server.
            self._stop_asked = True
            return
        self.state.hub.closing.set()
        super().handle_exit(sig, frame)

    async def main_loop(self) -> None:
        watcher = None
        if self.beside is not None:
            watcher = asyncio.create_task(self._watch_parent(self.beside))
        try:
            await super().main_loop()
        finally:
            if watcher is not None:
                watcher.cancel()
            self.state.hub.closing.set()

    beside: int | None = None
    _stop_asked: bool = False

    async def _watch_parent(self, pid: int) -> None:
        waited = 0.0
        while not self.should_exit and not self._stop_asked and os.getppid() == pid:
            # Short naps, so that a stop asked for is taken up at once.
            await asyncio.sleep(0.05)
            waited += 0.05
            if waited >= PARENT_CHECK:
                waited = 0.0
        if not self.should_exit:
            await self._push_end()
            self.state.hub.closing.set()
            self.should_exit = True

    async def _push_end(self) -> None:
        """The run's end to the open pages, then ``bye``; bounded by ``END_WAIT``."""
        hub = self.state.hub
        loop = asyncio.get_running_loop()
        deadline = loop.time() + END_WAIT
        # Two polls after this moment: the second began after the run's end was
        # committed (the run ended before this server was told to stop).
        polls = hub.polls
        await _until(hub, lambda: hub.polls >= polls + 2, deadline - loop.time())
        dirs = [str(s.state_dir) for s in self.state.stores.all]
        hub.publish("bye", {"state_dirs": dirs})
        # Each page reads the final state, then closes its stream.
        await _until(hub, lambda: hub.clients == 0, deadline - loop.time())


async def _until(hub: Hub, done: Callable[[], bool], within: float) -> None:
    """Wait until ``done()`` (checked at each change of ``hub``), at most ``within`` s."""

    async def wait() -> None:
        while not done():
            hub.changed.clear()
            if done():
                return
            await hub.changed.wait()

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wait(), max(0.0, within))


def serve(config: UiConfig, on_ready: Callable[[str, Access], None]) -> None:
    """Serve until told to stop; ``on_ready(url, access)`` once the socket listens."""
    sock = bind(config.host, config.port)
    port = sock.getsockname()[1]
    access = Access(token=config.token, reads_need_token=not is_loopback(config.host), port=port)
    state = UiState(Stores(list(config.state_dirs)), access)
    app = create_app(state)
    uv = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        http="h11",
        ws="none",
        loop="asyncio",
        server_header=False,
        timeout_graceful_shutdown=3,
    )
    server = _Server(uv, state)
    server.beside = config.beside
    url = url_of(sock, config.host)
    log.info(
        "serving %d state director%s at %s (reads need the token: %s)",
        len(config.state_dirs),
        "y" if len(config.state_dirs) == 1 else "ies",
        url,
        "yes" if access.reads_need_token else "no",
    )
    on_ready(url, access)
    with contextlib.closing(sock):
        server.run(sockets=[sock])
    log.info("stopped serving at %s", url)
