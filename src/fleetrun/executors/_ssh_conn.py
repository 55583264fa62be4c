"""SSH connections: one per host, shared by every attempt on it, opened with care.

What this module guarantees (each a problem users of SSH fan-out tools report):

- one asyncssh connection per distinct ``SSHSpec``, reused by every attempt;
  attempts waiting while it is being opened share that one handshake and its
  outcome (a dead host costs one connect timeout, not one per attempt);
- at most ``max_sessions`` sessions open at once on a connection (sshd's
  ``MaxSessions``, 10 by default); further attempts wait for a slot. A
  server that allows fewer refuses the next session while others are open:
  that number becomes the connection's limit (``SessionSlots.lower``) and
  the refused attempt waits for a slot like the others;
- at most ``max_startups`` handshakes in flight at once across all hosts
  (sshd's ``MaxStartups`` starts dropping at 10); a handshake that the server
  drops before it says hello is retried with a short backoff, within the
  connect timeout;
- ``SSHSpec.connect_timeout`` bounds DNS, TCP, key exchange and
  authentication (and, in ``_ssh``, opening the session); a jump host is
  connected first, under its own timeout, so a jump host that does not
  answer is named as the cause (and a target waiting for its jump host
  holds no handshake slot);
- a connection that does not open a session within the connect timeout
  (half-open: the path froze, the host still "there") is dropped
  (``forget``) so that later attempts connect afresh;
- host keys are checked strictly against a known_hosts file; ``accept-new``
  trusts a host that has no key on record and appends its key; a changed key
  is always refused with a message naming the host and the file;
- keys come from the agent, ``~/.ssh/config`` or ``identity_file`` (read once
  per file); no password is ever asked for;
- AES-GCM is offered first (``CIPHERS``), the cheapest for asyncssh to compute;
- SSH keepalives every 15 s: a host that vanishes mid-command (no FIN, no
  RST) fails its attempts as ``lost`` within about 45 s;
- the soft limit on open files is raised to the hard limit, and asyncio's
  epoll loop has no ``select()`` ceiling, so 1,000 hosts fit.

Every failure is an ``SSHFailure`` whose ``reason`` is one line naming the
destination and the cause, with ``kind`` ``connect`` or ``lost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import os
import resource
import socket
from collections import deque
from collections.abc import AsyncIterator, Coroutine, Sequence
from pathlib import Path
from typing import Any

from fleetrun.executors._ssh_lib import asyncssh
from fleetrun.executors._ssh_spec import SSHSpec, parse_destination

log = logging.getLogger(__name__)

DEFAULT_MAX_SESSIONS = 10
DEFAULT_MAX_STARTUPS = 10
_DROP_RETRY_BASE = 0.05
_DROP_RETRY_MAX = 1.0
_DROP_RETRIES = 8
KEEPALIVE_INTERVAL = 15.0
KEEPALIVE_COUNT = 3
CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
)
"""The ciphers offered, in order: asyncssh's own list with AES-GCM first. Both
AES-GCM and ChaCha20-Poly1305 are OpenSSH's recommended ciphers; asyncssh
computes ChaCha20-Poly1305 with a new cipher object per packet, and AES-GCM
costs it about a sixth of the client's CPU less across a fan-out."""
_CLOSE_WAIT = 1.0
"""Seconds a closing connection may take to flush before it is aborted."""


class SSHFailure(Exception):
    """An SSH attempt failed for a reason that is not the command's own."""

    def __init__(self, reason: str, kind: str = "connect") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


def raise_nofile_limit() -> int:
    """Raise the soft limit on open files to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
    return soft


class _Client(asyncssh.SSHClient):
    """Tells its host entry when the connection goes away."""

    def __init__(self, entry: HostEntry) -> None:
        self._entry = entry
        self._conn: asyncssh.SSHClientConnection | None = None

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        self._conn = conn

    def connection_lost(self, exc: Exception | None) -> None:
        self._entry.lost(self._conn, exc)


class SessionSlots:
    """The session slots of one destination, handed out first come, first served.

    ``limit`` starts at the executor's ``max_sessions`` and is lowered to the
    server's own limit once learnt (``lower``); ``held`` counts the slots
    held, ``open`` the sessions open on the connection.

    Invariant: ``held <= limit`` except after ``lower``, until enough holders
    leave; a waiter is woken only into a free slot.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        """Wait for a free slot and take it."""
        if self.held < self.limit and not self._waiters:
            self.held += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut  # `release` took the slot for this waiter
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # woken and cancelled at once: pass the slot on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
            raise

    def release(self) -> None:
        """Give a slot back (and wake the next waiter into it)."""
        self.held -= 1
        while self._waiters and self.held < self.limit:
            fut = self._waiters.popleft()
            if not fut.done():
                self.held += 1
                fut.set_result(None)

    def lower(self, limit: int) -> None:
        """The server allows at most ``limit`` sessions at once: keep to it from now on."""
        self.limit = max(1, min(self.limit, limit))

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        """Hold a slot for the block (``Slot.requeue`` gives it up and waits again)."""
        held = Slot(self)
        await self.acquire()
        held.held = True
        try:
            yield held
        finally:
            held.set_open(False)
            if held.held:
                held.held = False
                self.release()


class Slot:
    """One holder's slot in ``SessionSlots``: whether it is held and its session open."""

    __slots__ = ("_open", "held", "slots")

    def __init__(self, slots: SessionSlots) -> None:
        self.slots = slots
        self.held = False
        self._open = False

    def set_open(self, value: bool) -> None:
        """Whether this holder's session is open on the connection (``SessionSlots.open``)."""
        if value != self._open:
            self._open = value
            self.slots.open += 1 if value else -1

    async def requeue(self) -> None:
        """Give the slot up and wait for one again (the limit was lowered)."""
        if self.held:
            self.held = False
            self.slots.release()
        await self.slots.acquire()
        self.held = True


class HostEntry:
    """One destination: its connection (or the handshake in progress) and session slots.

    Invariant: at most ``sessions.limit`` attempts' sessions are open on
    ``conn`` at once (each holder of a slot owns one).
    """

    def __init__(self, spec: SSHSpec, max_sessions: int) -> None:
        self.spec = spec
        self.sessions = SessionSlots(max_sessions)
        self.conn: asyncssh.SSHClientConnection | None = None
        self.pending: asyncio.Future[asyncssh.SSHClientConnection] | None = None
        self.lost_reason: str | None = None
        self.warm = False
        """True once a session has started on the current connection."""

    def lost(self, conn: asyncssh.SSHClientConnection | None, exc: Exception | None) -> None:
        """A connection of this entry went away (an older one may go after a newer came)."""
        if conn is not self.conn:
            return
        self.conn = None
        self.warm = False
        self.lost_reason = str(exc) if exc else "closed"
        # A connection closed on purpose (the run is over) is no news.
        log.log(
            logging.INFO if exc else logging.DEBUG,
            "%s: connection lost: %s",
            self.spec.destination,
            self.lost_reason,
        )

    def forget(self, conn: asyncssh.SSHClientConnection, reason: str) -> None:
        """``conn`` stopped answering: later attempts connect afresh; it is aborted,
        which ends what still waits on it (its sessions see the connection lost)."""
        if conn is self.conn:
            self.conn = None
            self.warm = False
            self.lost_reason = reason
        log.info(
            "%s: dropping the connection (%s); the next attempt connects afresh",
            self.spec.destination,
            reason,
        )
        conn.abort()


class ConnectionPool:
    """The connections of one executor (see the module docstring)."""

    def __init__(
        self, *, max_sessions: int = DEFAULT_MAX_SESSIONS, max_startups: int = DEFAULT_MAX_STARTUPS
    ) -> None:
        self.max_sessions = max_sessions
        self._startups = asyncio.Semaphore(max_startups)
        self._hosts: dict[SSHSpec, HostEntry] = {}
        self._keys: dict[str, Sequence[asyncssh.SSHKey]] = {}
        self._known: dict[str, asyncssh.SSHKnownHosts] = {}
        self._known_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.nofile = raise_nofile_limit()

    def background(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a task the pool owns (cancelled by ``aclose``)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def entry(self, spec: SSHSpec) -> HostEntry:
        """The entry of ``spec``'s destination (created on first use)."""
        e = self._hosts.get(spec)
        if e is None:
            e = self._hosts[spec] = HostEntry(spec, self.max_sessions)
        return e

    async def connection(self, entry: HostEntry) -> asyncssh.SSHClientConnection:
        """The open connection of ``entry``, opening it if needed (raises ``SSHFailure``)."""
        conn = entry.conn
        if conn is not None:
            return conn
        fut = entry.pending
        if fut is None:
            loop = asyncio.get_running_loop()
            fut = entry.pending = loop.create_future()
            # The handshake is shared: it runs as its own task, owned by the pool and
            # awaited by every waiter, so one waiter's cancellation does not abort it.
            self.background(self._open(entry, fut))
        return await asyncio.shield(fut)

    async def _open(
        self, entry: HostEntry, fut: asyncio.Future[asyncssh.SSHClientConnection]
    ) -> None:
        try:
            conn = await self._connect(entry)
        except Exception as e:
            if not fut.done():
                fut.set_exception(e)
                fut.exception()  # waiters may all be gone; the failure is reported to each
        except BaseException:
            # Cancelled (the pool closes) or interrupted: the waiters learn it too.
            if not fut.done():
                fut.set_exception(SSHFailure("cancelled"))
                fut.exception()
            raise
        else:
            entry.conn = conn
            entry.lost_reason = None
            if not fut.done():
                fut.set_result(conn)
        finally:
            entry.pending = None

    async def _connect(self, entry: HostEntry) -> asyncssh.SSHClientConnection:
        spec = entry.spec
        # The jump host first, under its own timeout and outside this target's
        # handshake slot: its failure is named as its own, and targets waiting
        # for a jump host hold no slot the jump host's handshake needs.
        tunnel = await self._jump(spec) if spec.jump is not None else None
        delay = _DROP_RETRY_BASE
        tries = 0
        while True:
            tries += 1
            try:
                # Waiting for a handshake slot is queueing, not connecting: the
                # timeout starts once this handshake may go.
                async with self._startups, asyncio.timeout(spec.connect_timeout):
                    log.debug("%s: connecting (try %d)", spec.destination, tries)
                    conn = await self._connect_once(entry, tunnel)
                log.info("%s: connected (try %d)", spec.destination, tries)
                return conn
            except TimeoutError:
                log.info(
                    "%s: connect try %d: no answer within %gs",
                    spec.destination,
                    tries,
                    spec.connect_timeout,
                )
                why = "host down, filtered or overloaded"
                proxy = await _proxy_jump(spec) if tunnel is None else None
                if proxy:
                    why = (
                        f"{why}; it is reached through jump host {proxy} (ProxyJump in the "
                        "ssh config), which may be the one not answering"
                    )
                raise SSHFailure(
                    f"{spec.destination}: no SSH connection within {spec.connect_timeout:g}s "
                    f"({why})"
                ) from None
            except (asyncssh.ConnectionLost, ConnectionResetError, BrokenPipeError) as e:
                # sshd's MaxStartups drops excess handshakes before its banner: retry.
                _log_failure(spec, tries, e)
                if tries >= _DROP_RETRIES:
                    raise SSHFailure(
                        f"{spec.destination}: the server closed the connection during the "
                        f"handshake ({e or type(e).__name__}), {tries} times; sshd "
                        "MaxStartups may be too low"
                    ) from None
                log.info(
                    "%s: the server dropped the handshake; retry %d of %d in %gs",
                    spec.destination,
                    tries,
                    _DROP_RETRIES - 1,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _DROP_RETRY_MAX)
            except asyncssh.HostKeyNotVerifiable as e:
                _log_failure(spec, tries, e)
                raise SSHFailure(await self._host_key_reason(spec)) from None
            except asyncssh.PermissionDenied as e:
                _log_failure(spec, tries, e)
                who = f"user {spec.user}" if spec.user else "the configured user"
                how = f"key {spec.identity_file}" if spec.identity_file else "agent/config keys"
                raise SSHFailure(
                    f"{spec.destination}: authentication failed for {who} ({how})"
                ) from None
            except socket.gaierror as e:
                _log_failure(spec, tries, e)
                raise SSHFailure(
                    f"{spec.destination}: cannot resolve host {spec.host!r}: {e.strerror}"
                ) from None
            except ConnectionRefusedError as e:
                _log_failure(spec, tries, e)
                raise SSHFailure(
                    f"{spec.destination}: connection refused (no SSH server on that port)"
                ) from None
            except asyncssh.DisconnectError as e:
                _log_failure(spec, tries, e)
                raise SSHFailure(f"{spec.destination}: the server disconnected: {e}") from None
            except OSError as e:
                _log_failure(spec, tries, e)
                what = {
                    errno.EHOSTUNREACH: "host unreachable",
                    errno.ENETUNREACH: "network unreachable",
                    errno.EMFILE: "too many open files here",
                }.get(e.errno or 0, e.strerror or str(e))
                raise SSHFailure(f"{spec.destination}: {what}") from None
            except (asyncssh.Error, ValueError, KeyError) as e:
                _log_failure(spec, tries, e)
                raise SSHFailure(f"{spec.destination}: cannot connect: {e}") from None

    async def _connect_once(
        self, entry: HostEntry, tunnel: asyncssh.SSHClientConnection | None
    ) -> asyncssh.SSHClientConnection:
        spec = entry.spec
        kwargs: dict[str, Any] = {"client_factory": lambda: _Client(entry)}
        if spec.port is not None:
            kwargs["port"] = spec.port
        if spec.user is not None:
            kwargs["username"] = spec.user
        if spec.config_file is not None:
            kwargs["config"] = [spec.config_file]
        if tunnel is not None:
            kwargs["tunnel"] = tunnel
        if spec.identity_file is not None:
            kwargs["client_keys"] = await self._client_keys(spec.identity_file)
        accept_new = False
        if spec.known_hosts is not None:
            known = await self._known_hosts(spec.known_hosts)
            if spec.accept_new and not _has_entry(known, spec):
                accept_new = True
                kwargs["known_hosts"] = None  # learn the key; it is recorded below
            else:
                kwargs["known_hosts"] = known
        elif spec.accept_new:
            path = _default_known_hosts()
            known = await self._known_hosts(path)
            if not _has_entry(known, spec):
                accept_new = True
                kwargs["known_hosts"] = None
        # A host that vanishes mid-command (no FIN, no RST) is noticed within
        # KEEPALIVE_INTERVAL * KEEPALIVE_COUNT seconds instead of TCP's hours.
        kwargs["encryption_algs"] = CIPHERS
        kwargs["keepalive_interval"] = KEEPALIVE_INTERVAL
        kwargs["keepalive_count_max"] = KEEPALIVE_COUNT
        conn = await asyncssh.connect(spec.host, **kwargs)
        if accept_new:
            await self._record_key(spec, conn)
        return conn

    async def _jump(self, spec: SSHSpec) -> asyncssh.SSHClientConnection:
        """The (shared) connection to the last jump host of ``spec``.

        Each hop is reached with the target's keys, known_hosts and config
        file; ``a,b`` means a, then b through a (the hop's own entry has jump
        ``a``, so chains are opened, and shared, one hop at a time).
        """
        hops = [h.strip() for h in (spec.jump or "").split(",") if h.strip()]
        dest = parse_destination(hops[-1]) if hops else None
        if dest is None:
            raise SSHFailure(f"{spec.destination}: cannot read jump host {spec.jump!r}")
        hop = dataclasses.replace(
            spec, host=dest[1], port=dest[2], user=dest[0], jump=",".join(hops[:-1]) or None
        )
        try:
            return await self.connection(self.entry(hop))
        except SSHFailure as e:
            # The hop's own failure starts with its address; name it once.
            reason = e.reason
            for name in (f"{hop.destination}: ", f"{hops[-1]}: "):
                if reason.startswith(name):
                    reason = reason[len(name) :]
                    break
            raise SSHFailure(f"{spec.destination}: via jump host {hops[-1]}: {reason}") from None

    async def _client_keys(self, path: str) -> Sequence[asyncssh.SSHKey]:
        keys = self._keys.get(path)
        if keys is None:
            try:
                key = await asyncio.to_thread(asyncssh.read_private_key, path)
            except (OSError, asyncssh.KeyImportError) as e:
                raise SSHFailure(f"cannot read identity_file {path}: {e}") from None
            keys = self._keys[path] = [key]
        return keys

    async def _known_hosts(self, path: str) -> asyncssh.SSHKnownHosts:
        known = self._known.get(path)
        if known is None:
            known = await asyncio.to_thread(_read_known_hosts, path)
            self._known[path] = known
        return known

    async def _record_key(self, spec: SSHSpec, conn: asyncssh.SSHClientConnection) -> None:
        """``accept-new``: append the server's key for ``spec`` to the known_hosts file."""
        key = conn.get_server_host_key()
        if key is None:
            return
        path = spec.known_hosts or _default_known_hosts()
        name = _known_name(spec)
        line = f"{name} {key.export_public_key().decode().strip()}\n"
        async with self._known_lock:
            known = self._known.get(path)
            if known is not None and _has_entry(known, spec):
                return
            await asyncio.to_thread(_append, path, line)
            self._known.pop(path, None)

    async def _host_key_reason(self, spec: SSHSpec) -> str:
        path = spec.known_hosts or (_default_known_hosts() if spec.accept_new else None)
        shown = path or "~/.ssh/known_hosts (or the file ~/.ssh/config names)"
        has = False
        if path is not None:
            self._known.pop(path, None)
            has = _has_entry(await self._known_hosts(path), spec)
        else:
            known = await asyncio.to_thread(_read_known_hosts, _default_known_hosts())
            has = _has_entry(known, spec)
        if has:
            return (
                f"{spec.destination}: HOST KEY CHANGED: the server's key does not match "
                f"{_known_name(spec)} in {shown}; if the change is expected, remove the old "
                "entry (ssh-keygen -R) and connect again"
            )
        return (
            f"{spec.destination}: host key unknown: {_known_name(spec)} is not in {shown}; "
            "add it (ssh-keyscan) or set known_hosts: accept-new"
        )

    @contextlib.asynccontextmanager
    async def first_session(self, entry: HostEntry) -> AsyncIterator[None]:
        """Around opening a session: on a connection that has not started one yet,
        hold a handshake slot, since the server's work for a new client (its
        session process, the login shell) is part of the storm MaxStartups bounds."""
        if entry.warm:
            yield
            return
        async with self._startups:
            yield

    async def fresh_connection(self, entry: HostEntry) -> asyncssh.SSHClientConnection:
        """A new connection to ``entry``'s destination that the pool does not keep
        (for control commands when every session of the shared one is busy)."""
        spare = HostEntry(entry.spec, 1)
        tunnel = await self._jump(entry.spec) if entry.spec.jump is not None else None
        async with asyncio.timeout(entry.spec.connect_timeout):
            return await self._connect_once(spare, tunnel)

    def entries(self) -> list[HostEntry]:
        """Every destination used so far."""
        return list(self._hosts.values())

    async def aclose(self) -> None:
        """Close every connection (and abandon handshakes in progress)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        # Each task's failure was delivered where it mattered; here they only end.
        for task, ended in zip(
            tasks, await asyncio.gather(*tasks, return_exceptions=True), strict=True
        ):
            if isinstance(ended, Exception):
                log.debug("closing: %s ended with %s", task.get_name(), _why(ended))
        conns = [e.conn for e in self._hosts.values() if e.conn is not None]
        for conn in conns:
            conn.close()
        if conns:
            # A connection whose path froze never flushes its goodbye: abort it.
            waits = [asyncio.ensure_future(c.wait_closed()) for c in conns]
            _, late = await asyncio.wait(waits, timeout=_CLOSE_WAIT)
            for w in late:
                w.cancel()
            for conn in conns:
                conn.abort()
        self._hosts.clear()


async def _proxy_jump(spec: SSHSpec) -> str | None:
    """The jump host(s) the ssh config gives ``spec``'s host (``ProxyJump``), if any.

    Read only to name the cause of a failed connection: asyncssh follows the
    config's ``ProxyJump`` itself, inside the target's timeout.
    """
    kwargs: dict[str, Any] = {"host": spec.host, "known_hosts": None}
    if spec.port is not None:
        kwargs["port"] = spec.port
    if spec.user is not None:
        kwargs["username"] = spec.user
    if spec.config_file is not None:
        kwargs["config"] = [spec.config_file]
    try:
        options = await asyncio.wait_for(
            asyncssh.SSHClientConnectionOptions.construct(**kwargs), spec.connect_timeout
        )
    except Exception as e:  # only a hint for a message: none when the config cannot be read
        log.debug("%s: cannot read ProxyJump from the ssh config: %s", spec.destination, _why(e))
        return None
    tunnel = getattr(options, "tunnel", None)
    return tunnel if isinstance(tunnel, str) and tunnel else None


def _why(e: BaseException) -> str:
    """An exception as the library worded it: its type and its message."""
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _log_failure(spec: SSHSpec, tries: int, e: BaseException) -> None:
    """One connect try failed: the library's own words, before fleetrun's summary."""
    log.info("%s: connect try %d failed: %s", spec.destination, tries, _why(e))


def _default_known_hosts() -> str:
    return str(Path("~", ".ssh", "known_hosts").expanduser())


def _read_known_hosts(path: str) -> asyncssh.SSHKnownHosts:
    try:
        return asyncssh.read_known_hosts(path)
    except FileNotFoundError:
        return asyncssh.import_known_hosts("")


def _known_name(spec: SSHSpec) -> str:
    port = spec.port or 22
    return spec.host if port == 22 else f"[{spec.host}]:{port}"


def _has_entry(known: asyncssh.SSHKnownHosts, spec: SSHSpec) -> bool:
    port = spec.port if spec.port and spec.port != 22 else None
    found = known.match(spec.host, "", port)
    return bool(found[0] or found[1] or found[3] or found[5])


def _append(path: str, line: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
