"""``SSHExecutor``: runs an attempt on its target over SSH (orphans: ``_ssh_orphans``).

An attempt takes a session slot on its host's shared connection (``_ssh_conn``),
opens a session running ``_ssh_remote.BOOTSTRAP``, learns the remote process
group from its first line, reports ``Handle(kind="ssh", host=destination,
pid, pgid)``; the script is sent with the request. Output goes to the local log as it
arrives. On timeout or cancellation the remote group gets SIGTERM, then
``grace`` seconds (cut short by ``kill_now``), then SIGKILL, each by a separate
``kill`` exec on the same connection (or a fresh one when the server's
session limit is reached). When the connection is lost mid-command, the
attempt fails with ``error_kind="lost"`` and the group is ended through a new
connection if the host can still be reached, so nothing outlives the attempt.

The attempt's ``cwd`` is local and is not used: remote commands start in the
login directory of the remote user.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shlex

import asyncssh

from fleetrun.executors._contract import (
    Attempt,
    AttemptResult,
    Handle,
)
from fleetrun.executors._local import parse_outputs
from fleetrun.executors._ssh_conn import (
    DEFAULT_MAX_SESSIONS,
    DEFAULT_MAX_STARTUPS,
    ConnectionPool,
    HostEntry,
    SSHFailure,
)
from fleetrun.executors._ssh_remote import (
    BOOTSTRAP,
    RemoteSession,
    Sink,
    build_script,
    kill_command,
    script_command,
)
from fleetrun.executors._ssh_spec import SSHSpec
from fleetrun.names import OUTPUT_ENV
from fleetrun.runs_on import SSHOptions

_LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
_KILL_SETTLE = 5.0


def _fail(attempt: Attempt, reason: str, kind: str) -> AttemptResult:
    where = attempt.target or attempt.key
    text = reason if reason.startswith(f"{where}:") else f"{where}: {reason}"
    return AttemptResult(
        exit_code=None,
        reason=attempt.redactor.redact(text),
        error_kind="lost" if kind == "lost" else "connect" if kind == "connect" else "internal",
    )


class _Ending:
    """A remote attempt being ended; ``kill_now`` sets ``now``."""

    __slots__ = ("now",)

    def __init__(self) -> None:
        self.now = asyncio.Event()


class SSHExecutor:
    """Runs attempts on their targets over SSH (see the module docstring).

    ``max_sessions``: sessions at once per connection (sshd ``MaxSessions``);
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
        self._ending: set[_Ending] = set()

    @property
    def pool(self) -> ConnectionPool:
        """The connection pool (created in the running loop on first use)."""
        if self._pool is None:
            self._pool = ConnectionPool(
                max_sessions=self._max_sessions, max_startups=self._max_startups
            )
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
        async with entry.sessions:
            # The log is opened once a session slot is held: attempts queued on a
            # busy host hold no descriptor.
            fd = os.open(attempt.log_path, _LOG_FLAGS, 0o600)
            sink = Sink(fd, attempt.redactor.stream(), attempt.on_output)
            try:
                result = await self._run_in_slot(attempt, entry, sink, nonce, script, remote_out)
                if result.error_kind is not None and result.reason:
                    # `fleetrun logs` shows why, too (the reason is already redacted).
                    sink.write(f"fleetrun: {result.reason}\n".encode())
                return result
            finally:
                try:
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
        sink: Sink,
        nonce: str,
        script: bytes,
        remote_out: str,
    ) -> AttemptResult:
        spec = entry.spec
        chan: asyncssh.SSHClientChannel[bytes] | None = None
        session = RemoteSession(sink, nonce)
        try:
            conn = await self.pool.connection(entry)
            async with self.pool.first_session(entry):
                async with asyncio.timeout(spec.connect_timeout):
                    chan = await self._open_session(conn, session)
                    # Pipelined: the script waits in the channel for the shell
                    # (one round trip fewer than waiting for the group id first).
                    chan.write(script)
                    chan.write_eof()
                    pid = await session.pid
            entry.warm = True
        except SSHFailure as e:
            return _fail(attempt, e.reason, e.kind)
        except asyncssh.ChannelOpenError as e:
            why = f"the server refused a session ({e.reason}); sshd MaxSessions may be below "
            return _fail(attempt, f"{spec.destination}: {why}{self._max_sessions}", "connect")
        except TimeoutError:
            if chan is not None:
                chan.close()
            why = f"no session within {spec.connect_timeout:g}s"
            return _fail(attempt, f"{spec.destination}: {why}", "connect")
        except (asyncssh.Error, OSError, EOFError, ValueError) as e:
            if chan is not None:
                chan.close()
            return _fail(attempt, f"{spec.destination}: connection lost at start: {e}", "lost")
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
        except BaseException:  # no id (or cancelled again): the channel is all there is
            chan.close()
            return
        attempt.on_started(Handle(kind="ssh", host=entry.spec.destination, pid=pid, pgid=pid))
        await self._end(entry, chan, session, pid, attempt.grace, remote_out)

    async def _open_session(
        self, conn: asyncssh.SSHClientConnection, session: RemoteSession
    ) -> asyncssh.SSHClientChannel[bytes]:
        """Open the attempt's session, retrying while the server's session slots free up.

        sshd frees a session slot a moment after the channel closes, so an open
        right after another session ended can be refused; the caller's timeout
        bounds the retries.
        """
        delay = 0.02
        while True:
            try:
                chan, _ = await conn.create_session(lambda: session, BOOTSTRAP, encoding=None)
                return chan
            except asyncssh.ChannelOpenError:
                if conn.is_closed():
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
        try:
            await asyncio.wait_for(asyncio.shield(session.done), attempt.timeout)
        except TimeoutError:
            timed_out = True
            await self._end(entry, chan, session, pgid, grace, remote_out)
        except asyncio.CancelledError:
            await self._end(entry, chan, session, pgid, grace, remote_out)
            raise
        dest = entry.spec.destination
        trailer = session.trailer_status
        lost = session.lost is not None and trailer is None
        if lost and session.exit_status is None and session.exit_signal is None:
            # The host may still be there: end what the command left (bounded).
            # The first try may meet the dead connection before it is marked
            # lost; a fresh one is tried after a short pause.
            for pause in (0.0, 0.2, 1.0):
                await asyncio.sleep(pause)
                try:
                    async with asyncio.timeout(entry.spec.connect_timeout):
                        await self._control(entry, kill_command(pgid, "KILL", remote_out))
                    break
                except Exception:  # best effort, bounded above
                    continue
            why = f"connection lost while the command ran: {session.lost}"
            return _fail(attempt, f"{dest}: {why}", "lost")
        if trailer is None and session.exit_signal is not None:
            return AttemptResult(exit_code=None, signal=session.exit_signal, timed_out=timed_out)
        code = trailer if trailer is not None else session.exit_status
        if code is None:
            return _fail(attempt, f"{dest}: the session ended without an exit status", "lost")
        if code == 0 and not timed_out:
            text = session.outputs_text
            outputs = parse_outputs(text) if text else {}
            if text:
                _write_outputs(attempt, text)
            return AttemptResult(exit_code=0, outputs=outputs)
        reason = None
        if code == 127:
            reason = f"{attempt.target}: command not found on {dest} (exit 127)"
        elif code == 126:
            reason = f"{attempt.target}: command not executable on {dest} (exit 126)"
        return AttemptResult(exit_code=code, timed_out=timed_out, reason=reason)

    async def _end(
        self,
        entry: HostEntry,
        chan: asyncssh.SSHClientChannel[bytes],
        session: RemoteSession,
        pgid: int,
        grace: float,
        remote_out: str,
    ) -> None:
        """SIGTERM to the remote group, ``grace``, SIGKILL; wait for the channel even if
        cancelled again (a second cancellation skips the grace)."""
        ending = _Ending()
        self._ending.add(ending)
        try:
            for sig, wait in (("TERM", grace), ("KILL", _KILL_SETTLE)):
                if session.done.done():
                    return
                try:
                    async with asyncio.timeout(entry.spec.connect_timeout):
                        await self._control(entry, kill_command(pgid, sig, remote_out))
                except (SSHFailure, asyncssh.Error, OSError, TimeoutError):
                    pass  # the channel is closed below in any case
                except asyncio.CancelledError:
                    ending.now.set()
                if sig == "TERM" and ending.now.is_set():
                    continue
                now: asyncio.Future[object] = asyncio.ensure_future(ending.now.wait())
                done: asyncio.Future[object] = asyncio.ensure_future(asyncio.shield(session.done))
                try:
                    await asyncio.wait(
                        {done, now}, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                    )
                except asyncio.CancelledError:
                    ending.now.set()
                finally:
                    now.cancel()
                    done.cancel()
        finally:
            self._ending.discard(ending)
            if not session.done.done():
                chan.close()

    async def _control(self, entry: HostEntry, command: str) -> None:
        """Run a short command on the host (a fresh connection if sessions are full)."""
        conn = await self.pool.connection(entry)
        try:
            await conn.run(command, check=False)
        except asyncssh.ChannelOpenError:
            # All of the server's sessions are ours and busy: go around them.
            extra = await self.pool.fresh_connection(entry)
            try:
                await extra.run(command, check=False)
            finally:
                extra.close()

    def kill_now(self) -> None:
        """Skip what is left of every grace period: SIGKILL the groups being ended."""
        for ending in list(self._ending):
            ending.now.set()

    async def aclose(self) -> None:
        """Close every connection."""
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None


def _write_outputs(attempt: Attempt, text: str) -> None:
    """A redacted copy of the published outputs at the attempt's local output path."""
    with contextlib.suppress(OSError):
        fd = os.open(attempt.output_path, _LOG_FLAGS, 0o600)
        try:
            os.write(fd, attempt.redactor.redact(text).encode())
        finally:
            os.close(fd)
