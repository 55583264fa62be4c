"""``SSHExecutor``: runs an attempt on its target over SSH (orphans: ``_ssh_orphans``).

An attempt takes a session slot on its host's shared connection (``_ssh_conn``),
opens a session running ``_ssh_remote.BOOTSTRAP``, learns the remote process
group from its first line, reports ``Handle(kind="ssh", host=destination,
pid, pgid)``; the script is sent with the request. Output (stdout and stderr
as one stream, in the order written) goes to the local log as it arrives.

A server that refuses a session while others of ours are open allows no
more than those: its limit becomes the connection's (``SessionSlots``), and
the attempt waits for a slot as for fleetrun's own limit.

On timeout or cancellation the remote group gets SIGTERM, then ``grace``
seconds (cut short by ``kill_now``), then SIGKILL. Each signal is a control
script (``_ssh_remote.end_command``) that also watches the group go; it runs
on the shared connection when that opens a session within ``_FRESH_AFTER``
seconds, else on a fresh connection beside it. So a connection gone
half-open (its path froze; the host and new connections are fine) still
ends the attempt promptly, as timed out, with its remote group ended; the
shared connection, if it never answers within the connect timeout, is
dropped and later attempts connect afresh. When the connection is lost
mid-command, the attempt fails with ``error_kind="lost"`` and the group is
ended through a new connection if the host can still be reached, so nothing
outlives the attempt.

Every failure that is not the command's own is returned as an
``AttemptResult`` with no exit code, a ``reason`` naming the target, the
destination and the cause in words, and an ``error_kind`` (``connect``,
``lost``, ``internal``); nothing about a connection is raised. Outputs follow
the one rule of every executor (``_outputs``).

The attempt's ``cwd`` is local and is not used: remote commands start in the
login directory of the remote user.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shlex
import signal
from typing import Any

from fleetrun.executors._contract import (
    Attempt,
    AttemptResult,
    Handle,
)
from fleetrun.executors._outputs import parse_output_bytes
from fleetrun.executors._ssh_conn import (
    DEFAULT_MAX_SESSIONS,
    DEFAULT_MAX_STARTUPS,
    ConnectionPool,
    HostEntry,
    Slot,
    SSHFailure,
)
from fleetrun.executors._ssh_lib import asyncssh
from fleetrun.executors._ssh_remote import (
    BOOTSTRAP,
    GONE,
    RemoteSession,
    Sink,
    build_script,
    end_command,
    script_command,
)
from fleetrun.executors._ssh_spec import SSHSpec
from fleetrun.names import OUTPUT_ENV
from fleetrun.runs_on import SSHOptions

log = logging.getLogger(__name__)

_LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
_KILL_SETTLE = 5.0
"""Seconds a SIGKILLed group has to go."""
_FRESH_AFTER = 0.5
"""Seconds the shared connection has to open a control session before a fresh
connection is opened beside it (a half-open connection never answers)."""
_SLOT_SETTLE = 0.25
"""Seconds of refused sessions, with others of ours open, before a refusal is
taken as the server's session limit (sshd frees a slot a moment after a
session closes, so a refusal right after one closed means nothing)."""
_CHANNEL_SETTLE = 1.0
"""Seconds the attempt's channel has to report the end once the group is gone,
when the shared connection answered (one that did not never will)."""
_SIGNALS = {"TERM": int(signal.SIGTERM), "KILL": int(signal.SIGKILL)}


def _fail(attempt: Attempt, reason: str, kind: str) -> AttemptResult:
    where = attempt.target or attempt.key
    text = reason if reason.startswith(f"{where}:") else f"{where}: {reason}"
    return AttemptResult(
        exit_code=None,
        reason=attempt.redactor.redact(text),
        error_kind="lost" if kind == "lost" else "connect" if kind == "connect" else "internal",
    )


def _quiet(task: asyncio.Future[Any]) -> None:
    """A done callback: the task's failure was dealt with where it mattered."""
    if not task.cancelled():
        task.exception()


class _Ending:
    """A remote attempt being ended; ``kill_now`` sets ``now``."""

    __slots__ = ("now",)

    def __init__(self) -> None:
        self.now = asyncio.Event()


class _Full(Exception):
    """The server refused a session: its limit is learnt; wait for a slot again."""


class SSHExecutor:
    """Runs attempts on their targets over SSH (see the module docstring).

    ``max_sessions``: sessions at once per connection (sshd ``MaxSessions``;
    a server that allows fewer is kept to its own limit once it says so);
    ``max_startups``: SSH handshakes in flight at once (sshd ``MaxStartups``);
    ``grace``: seconds between SIGTERM and SIGKILL when an attempt gives none.
    """

    kind = "ssh"
    queue_reason: str | None = None

    def __init__(
        self,
        *,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        max_startups: int = DEFAULT_MAX_STARTUPS,
        grace: float = 10.0,
    ) -> None:
        self._max_sessions = max_sessions
        self._max_startups = max_startups
        self.grace = grace
        self._pool: ConnectionPool | None = None
        self._pool_loop: asyncio.AbstractEventLoop | None = None
        self._ending: set[_Ending] = set()

    @property
    def pool(self) -> ConnectionPool:
        """The connection pool of the running event loop.

        Connections, futures and locks belong to the loop they were made in: an
        executor used again under another ``asyncio.run`` gets a new pool (the
        old loop, and with it every connection of the old pool, is gone).
        """
        loop = asyncio.get_running_loop()
        if self._pool is None or self._pool_loop is not loop:
            self._pool = ConnectionPool(
                max_sessions=self._max_sessions, max_startups=self._max_startups
            )
            self._pool_loop = loop
            self._ending = set()
        return self._pool

    async def run(self, attempt: Attempt) -> AttemptResult:
        """Run the attempt on its target; see the module docstring."""
        try:
            spec = SSHSpec.from_attribute(attempt.attributes.get("ssh"), attempt.target)
        except ValueError as e:
            return _fail(attempt, str(e), "internal")
        entry = self.pool.entry(spec)
        nonce = secrets.token_hex(16)
        remote_out = f"/tmp/.fleetrun-out-{nonce}"
        command = self._command(attempt, nonce)
        env = {**attempt.env, **attempt.env_extra}
        env.pop(OUTPUT_ENV, None)
        script = build_script(command, env, remote_out, nonce)
        async with entry.sessions.slot() as slot:
            # The log is opened once a session slot is held: attempts queued on a
            # busy host hold no descriptor.
            fd = os.open(attempt.log_path, _LOG_FLAGS, 0o600)
            sink = Sink(fd, attempt.redactor.stream(), attempt.on_output)
            session = RemoteSession(sink, nonce)
            try:
                result = await self._run_in_slot(attempt, entry, slot, session, script, remote_out)
                session.finish()
                if result.error_kind is not None and result.reason:
                    # `fleetrun logs` shows why, too (the reason is already redacted).
                    sink.write(f"fleetrun: {result.reason}\n".encode())
                return result
            finally:
                try:
                    # Whatever came last (a final newline held back in case the
                    # trailer followed) reaches the log; nothing after this does.
                    session.finish()
                    sink.close()
                finally:
                    os.close(fd)

    def _command(self, attempt: Attempt, nonce: str) -> str:
        script = SSHOptions.of(attempt.options).script
        if script is None:
            return attempt.command
        prefix = f"sh {shlex.quote(script.path)}"
        args = attempt.command
        if args.startswith(prefix):
            args = args[len(prefix) :]
        return script_command(script.text, args.strip(), nonce)

    async def _run_in_slot(
        self,
        attempt: Attempt,
        entry: HostEntry,
        slot: Slot,
        session: RemoteSession,
        script: bytes,
        remote_out: str,
    ) -> AttemptResult:
        spec = entry.spec
        chan: asyncssh.SSHClientChannel[bytes] | None = None
        try:
            conn = await self.pool.connection(entry)
            while True:
                try:
                    async with self.pool.first_session(entry):
                        chan = await self._open_session(conn, entry, session)
                    break
                except _Full:
                    # Outside the handshake slot: other hosts' handshakes go on.
                    await slot.requeue()
            slot.set_open(True)
            # Pipelined: the script waits in the channel for the shell (one round
            # trip fewer than waiting for the group id first).
            chan.write(script)
            chan.write_eof()
            async with asyncio.timeout(spec.connect_timeout):
                # Shielded: a cancellation here must not cancel the future itself,
                # which `_end_unstarted` still waits on to end the group.
                pid = await asyncio.shield(session.pid)
            entry.warm = True
        except SSHFailure as e:
            return _fail(attempt, e.reason, e.kind)
        except asyncssh.ChannelOpenError as e:
            why = f"the server refused a session ({e.reason}) with no other session open"
            return _fail(attempt, f"{spec.destination}: {why}", "connect")
        except TimeoutError:
            if chan is not None:
                chan.close()
            why = f"no session within {spec.connect_timeout:g}s"
            return _fail(attempt, f"{spec.destination}: {why}", "connect")
        except (asyncssh.Error, OSError, EOFError, ValueError) as e:
            if chan is not None:
                chan.close()
            why = f"connection lost at start: {e or type(e).__name__}"
            return _fail(attempt, f"{spec.destination}: {why}", "lost")
        except asyncio.CancelledError:
            if chan is not None:
                await self._end_unstarted(attempt, entry, chan, session, remote_out)
            raise
        attempt.on_started(Handle(kind="ssh", host=spec.destination, pid=pid, pgid=pid))
        return await self._wait(attempt, entry, chan, session, pid, remote_out)

    async def _end_unstarted(
        self,
        attempt: Attempt,
        entry: HostEntry,
        chan: asyncssh.SSHClientChannel[bytes],
        session: RemoteSession,
        remote_out: str,
    ) -> None:
        """Cancelled after the script was sent but before the group id came: wait for
        the id (bounded), then end the group as for any cancellation."""
        try:
            pid = await asyncio.wait_for(asyncio.shield(session.pid), entry.spec.connect_timeout)
        except (Exception, asyncio.CancelledError) as e:
            # No id (or cancelled again): closing the channel is all there is to do.
            log.debug(
                "%s: %s: cancelled before the remote group id came (%s); closing the channel",
                attempt.key,
                entry.spec.destination,
                f"{type(e).__name__}: {e}" if str(e) else type(e).__name__,
            )
            chan.close()
            return
        attempt.on_started(Handle(kind="ssh", host=entry.spec.destination, pid=pid, pgid=pid))
        await self._end(entry, chan, session, pid, attempt.grace, remote_out)

    async def _open_session(
        self, conn: asyncssh.SSHClientConnection, entry: HostEntry, session: RemoteSession
    ) -> asyncssh.SSHClientChannel[bytes]:
        """Open the attempt's session within the connect timeout.

        A refusal while other sessions of ours are open, lasting past
        ``_SLOT_SETTLE``, is the server's session limit: it is learnt and
        ``_Full`` sends the attempt back to wait for a slot. A refusal with none
        open is retried until the timeout (then raised). A connection that does
        not answer within the timeout is dropped (``HostEntry.forget``): it
        will not answer the next attempt either.
        """
        spec = entry.spec
        loop = asyncio.get_running_loop()
        deadline = loop.time() + spec.connect_timeout
        refused_at: float | None = None
        delay = 0.02
        while True:
            left = deadline - loop.time()
            try:
                if left <= 0:
                    raise TimeoutError
                async with asyncio.timeout(left):
                    chan, _ = await conn.create_session(lambda: session, BOOTSTRAP, encoding=None)
                return chan
            except TimeoutError:
                if refused_at is None:
                    entry.forget(conn, f"no session within {spec.connect_timeout:g}s")
                raise
            except asyncssh.ChannelOpenError:
                if conn.is_closed():
                    raise
                now = loop.time()
                refused_at = now if refused_at is None else refused_at
                others = entry.sessions.open
                if others and now - refused_at >= _SLOT_SETTLE:
                    entry.sessions.lower(others)
                    log.info(
                        "%s: the server refuses more than %d sessions at once; keeping to that",
                        spec.destination,
                        entry.sessions.limit,
                    )
                    raise _Full from None
                if now + delay >= deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)

    async def _wait(
        self,
        attempt: Attempt,
        entry: HostEntry,
        chan: asyncssh.SSHClientChannel[bytes],
        session: RemoteSession,
        pgid: int,
        remote_out: str,
    ) -> AttemptResult:
        grace = attempt.grace if attempt.grace is not None else self.grace
        timed_out = False
        ended_by: int | None = None
        try:
            await asyncio.wait_for(asyncio.shield(session.done), attempt.timeout)
        except TimeoutError:
            timed_out = True
            ended_by = await self._end(entry, chan, session, pgid, grace, remote_out)
        except asyncio.CancelledError:
            await self._end(entry, chan, session, pgid, grace, remote_out)
            raise
        dest = entry.spec.destination
        trailer = session.trailer_status
        if timed_out and trailer is None:
            # Timed out, whatever the connection did meanwhile: the channel's
            # word on how the group ended if it came, else the signal after
            # which the group was seen gone.
            if session.exit_signal is None and session.exit_status is not None:
                return AttemptResult(exit_code=session.exit_status, timed_out=True)
            return AttemptResult(
                exit_code=None, signal=session.exit_signal or ended_by, timed_out=True
            )
        if trailer is None and session.exit_status is None and session.exit_signal is None:
            # The channel closed with no word on how the command ended: its
            # connection was lost (or dropped as dead). The host may still be
            # there: end what the command left (bounded). The first try may
            # meet the dead connection before it is marked lost; a fresh one
            # is tried after a short pause.
            for pause in (0.0, 0.2, 1.0):
                await asyncio.sleep(pause)
                try:
                    async with asyncio.timeout(entry.spec.connect_timeout + _FRESH_AFTER):
                        await self._control(entry, end_command([pgid], "KILL", 0, remote_out))
                    break
                except Exception as e:  # best effort, bounded above
                    log.info(
                        "%s: %s: ending the remote group %d after the connection was lost: %s: %s",
                        attempt.key,
                        dest,
                        pgid,
                        type(e).__name__,
                        e,
                    )
                    continue
            cause = session.lost or entry.lost_reason or "the session closed with no exit status"
            why = f"connection lost while the command ran: {cause}"
            return _fail(attempt, f"{dest}: {why}", "lost")
        if trailer is None and session.exit_signal is not None:
            return AttemptResult(exit_code=None, signal=session.exit_signal, timed_out=timed_out)
        code = trailer if trailer is not None else session.exit_status
        # What the command left in its group, which the script ended after it.
        left = session.trailer_left
        assert code is not None  # the trailer's, else the channel's (checked above)
        if code == 0 and not timed_out:
            data = session.outputs
            if data is not None:
                _write_outputs(attempt, data)
            # The rule every executor applies (raises OutputRefused, as locally).
            outputs = parse_output_bytes(data, attempt.key) if data is not None else {}
            return AttemptResult(exit_code=0, outputs=outputs, left_running=left)
        reason = None
        if code == 127:
            reason = f"{attempt.target}: command not found on {dest} (exit 127)"
        elif code == 126:
            reason = f"{attempt.target}: command not executable on {dest} (exit 126)"
        return AttemptResult(exit_code=code, timed_out=timed_out, reason=reason, left_running=left)

    async def _end(
        self,
        entry: HostEntry,
        chan: asyncssh.SSHClientChannel[bytes],
        session: RemoteSession,
        pgid: int,
        grace: float,
        remote_out: str,
    ) -> int | None:
        """SIGTERM to the remote group, up to ``grace`` seconds for it to go, SIGKILL.

        The group is over when its channel closes or when the control script
        sees it gone (the channel of a half-open connection never closes).
        Returns the signal after which the control script saw it gone (None:
        the channel said, or nobody could tell). A cancellation meanwhile
        skips the grace, and is raised again once the group is ended.
        """
        ending = _Ending()
        self._ending.add(ending)
        cancelled = False
        ctl: asyncio.Task[tuple[str, bool]] | None = None
        spec = entry.spec
        try:
            for sig, wait in (("TERM", grace), ("KILL", _KILL_SETTLE)):
                if session.done.done():
                    return None
                if sig == "TERM" and ending.now.is_set():
                    continue
                ctl = asyncio.ensure_future(
                    self._control(entry, end_command([pgid], sig, wait, remote_out))
                )
                ctl.add_done_callback(_quiet)
                waits: set[asyncio.Future[Any]] = {ctl, asyncio.ensure_future(session.done)}
                if sig == "TERM":
                    waits.add(asyncio.ensure_future(ending.now.wait()))
                try:
                    await asyncio.wait(
                        waits,
                        timeout=wait + spec.connect_timeout + _FRESH_AFTER,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                except asyncio.CancelledError:
                    cancelled = True
                    ending.now.set()
                finally:
                    for w in waits:
                        if w is not ctl and w is not session.done:
                            w.cancel()
                if session.done.done():
                    return None
                if (
                    ctl.done()
                    and not ctl.cancelled()
                    and ctl.exception() is None
                    and ctl.result()[0].strip() == GONE
                ):
                    settle = _CHANNEL_SETTLE if ctl.result()[1] else 0.0
                    try:
                        await asyncio.wait_for(asyncio.shield(session.done), settle)
                    except TimeoutError:
                        pass
                    except asyncio.CancelledError:
                        cancelled = True
                    return _SIGNALS[sig]
                ctl.cancel()
            return None
        finally:
            if ctl is not None:
                ctl.cancel()
            self._ending.discard(ending)
            if not session.done.done():
                chan.close()
            if cancelled:
                raise asyncio.CancelledError

    async def _control(self, entry: HostEntry, script: bytes) -> tuple[str, bool]:
        """Run a control script on the host; return what it printed, and whether it
        ran on the shared connection.

        On the shared connection when it opens a session within
        ``_FRESH_AFTER``; else (no answer yet, or every session taken) on a
        fresh connection, while the shared one goes on trying in the
        background (``_shared_control`` drops it if it never answers).
        """
        conn = entry.conn
        if conn is not None and not conn.is_closed():
            opened = asyncio.Event()
            shared = self.pool.background(self._shared_control(entry, conn, script, opened))
            shared.add_done_callback(_quiet)
            is_open = asyncio.ensure_future(opened.wait())
            try:
                await asyncio.wait(
                    {shared, is_open}, timeout=_FRESH_AFTER, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                is_open.cancel()
            if opened.is_set():
                result: str = await asyncio.shield(shared)
                return result, True
        extra = await self.pool.fresh_connection(entry)
        try:
            return await _run_script(extra, script, None), False
        finally:
            extra.close()

    async def _shared_control(
        self,
        entry: HostEntry,
        conn: asyncssh.SSHClientConnection,
        script: bytes,
        opened: asyncio.Event,
    ) -> str:
        """``_run_script`` on the shared connection; one that opens no session
        within the connect timeout is dropped (it is half-open or hopeless)."""
        timeout = entry.spec.connect_timeout
        try:
            return await _run_script(conn, script, opened, timeout)
        except TimeoutError:
            if not opened.is_set():
                entry.forget(conn, f"no session within {timeout:g}s")
            raise

    def kill_now(self) -> None:
        """Skip what is left of every grace period: SIGKILL the groups being ended."""
        for ending in list(self._ending):
            ending.now.set()

    async def aclose(self) -> None:
        """Close every connection (of this loop's pool; another loop's went with it)."""
        pool, loop = self._pool, self._pool_loop
        self._pool = self._pool_loop = None
        if pool is not None and loop is asyncio.get_running_loop():
            await pool.aclose()


async def _run_script(
    conn: asyncssh.SSHClientConnection,
    script: bytes,
    opened: asyncio.Event | None,
    open_timeout: float | None = None,
) -> str:
    """Run ``script`` under ``BOOTSTRAP`` on ``conn``; return its stdout.

    ``opened`` is set once the session is open; ``open_timeout`` bounds opening it.
    """
    async with asyncio.timeout(open_timeout):
        proc = await conn.create_process(BOOTSTRAP, encoding=None)
    if opened is not None:
        opened.set()
    out, _ = await proc.communicate(script)
    return bytes(out or b"").decode("utf-8", "replace")


def _write_outputs(attempt: Attempt, data: bytes) -> None:
    """A redacted copy of the published outputs at the attempt's local output path."""
    with contextlib.suppress(OSError):
        fd = os.open(attempt.output_path, _LOG_FLAGS, 0o600)
        try:
            view = memoryview(attempt.redactor.redact_bytes(data))
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
