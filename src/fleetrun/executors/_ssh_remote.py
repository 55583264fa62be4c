"""What runs on the remote host, and how its output comes back.

The SSH exec request is always ``BOOTSTRAP`` (``exec /bin/sh -s``), which
holds no data of the attempt and reads the same in every login shell (sh,
bash, zsh, fish, csh). The script's first line prints the shell's pid behind
a tag (anything the login shell's start-up files print before it goes to the
log). sshd starts every session in a new session and process group (``setsid``) and
``exec`` keeps the pid, so that pid is the group's id: the command and
everything it starts live in that group, and a timeout or cancel signals it
with ``kill -s TERM -- -PGID`` over a separate exec (never relying on the
server forwarding signals).

The script follows on stdin at once (``build_script``), waiting in the channel
until the shell reads it:
``export`` lines for the attempt's environment (sshd's ``AcceptEnv`` refuses
environment requests, and stdin keeps values off every command line), then
the command, run by ``eval`` in a subshell with stdin from ``/dev/null`` (as a
local attempt has) and its stderr sent to its stdout (``2>&1``): the
command's two streams reach the log as one, in the order it wrote them, as a
local attempt's do (two SSH streams arrive in no useful order). The
channel's stdout is then the command's output and nothing else: it goes to
the log as it arrives, the last line too. ``$FLEETRUN_OUTPUT`` names a
remote temp file. When the command ends, the script writes a trailer on the
channel's stderr - a random nonce, the exit status and how many processes
the command left in its group (``ps``), then (on success) the
outputs file, at most ``MAX_OUTPUTS_BYTES + 1`` bytes of it (enough for the
outputs rule, ``_outputs``, to refuse a larger one) - removes the file and
SIGKILLs its own group, so whatever the command left running in it ends with
the attempt, as for a local attempt, and outputs come back without a second
round trip. The exit status is the trailer's (sshd reports the SIGKILL).
Whatever else reaches the channel's stderr (the login shell's start-up
files) goes to the log.
A ``script:`` task's local file is sent inside the same stream as a
here-document its interpreter (``/bin/sh`` or its shebang's) reads
on descriptor 3: no copy, no file left behind.

Control commands (signalling a group, waiting for it to go) are scripts sent
the same way, on stdin of ``BOOTSTRAP``, so they too read the same whatever the
user's login shell.
"""

from __future__ import annotations

import asyncio
import math
import os
import shlex
import signal
from collections.abc import Callable, Mapping, Sequence

from fleetrun.executors._outputs import MAX_OUTPUTS_BYTES
from fleetrun.executors._ssh_lib import asyncssh
from fleetrun.names import OUTPUT_ENV
from fleetrun.redact import StreamRedactor

BOOTSTRAP = "exec /bin/sh -s"
"""The exec request of every attempt: a POSIX shell reading the script from stdin."""
_PGID_TAG = "fleetrun-pgid"
_MAX_HEAD = 1 << 16
_MAX_PARTIAL_LINE = 1 << 16
_STATUS_LINE = 32
"""Bytes kept for the trailer's status line, before the outputs."""
_POLL = 0.1
"""Seconds between two looks at a group being ended (control scripts)."""


def _interpreter(text: str) -> list[str]:
    """The script's interpreter: its shebang's (``env`` skipped), or ``/bin/sh``."""
    first = text.split("\n", 1)[0]
    words = shlex.split(first[2:], comments=False) if first.startswith("#!") else []
    if words and os.path.basename(words[0]) == "env":
        words = [w for w in words[1:] if w != "-S"]
    return words or ["/bin/sh"]


def script_command(text: str, args: str, nonce: str) -> str:
    """The shell command that runs script ``text`` with the (quoted) ``args``.

    The interpreter reads the script from descriptor 3, a here-document, so
    the script's own stdin stays ``/dev/null`` (a ``read`` in it cannot eat
    the script) and no file is written.
    """
    delim = f"FLEETRUN_SCRIPT_{nonce}"
    body = text if text.endswith("\n") else text + "\n"
    argv = " ".join(map(shlex.quote, _interpreter(text)))
    return f"{argv} /dev/fd/3 {args} 3<<'{delim}'\n{body}{delim}\n"


def build_script(command: str, env: Mapping[str, str], outputs_file: str, nonce: str) -> bytes:
    """The script ``BOOTSTRAP``'s shell reads from stdin (see the module docstring)."""
    lines = [f'echo "{_PGID_TAG}-{nonce} $$"']
    lines += [f"export {name}={shlex.quote(value)}" for name, value in env.items()]
    out = shlex.quote(outputs_file)
    ps_out = shlex.quote(outputs_file + ".ps")
    head = f"head -c {MAX_OUTPUTS_BYTES + 1} {out}"
    lines += [
        f"{OUTPUT_ENV}={out}; export {OUTPUT_ENV}",
        f"__fr_cmd={shlex.quote(command)}",
        # One stream for the command, in the order it writes.
        '( eval "$__fr_cmd" ) </dev/null 2>&1',
        "__fr_rc=$?",
        # What the command left in the group: every member but this shell and
        # the `ps` that lists them (`$!`); unknown (0) where `ps` cannot say.
        "__fr_left=0",
        f"ps -e -o pid= -o pgid= >{ps_out} 2>/dev/null &",
        "__fr_ps=$!",
        'if wait "$__fr_ps"; then',
        "  while read -r __fr_p __fr_g; do",
        '    if [ "$__fr_g" = "$$" ] && [ "$__fr_p" != "$$" ] && [ "$__fr_p" != "$__fr_ps" ]; then',
        "      __fr_left=$((__fr_left + 1))",
        "    fi",
        f"  done <{ps_out}",
        "fi",
        f"rm -f {ps_out}",
        # The trailer, on stderr: the exit status and that count, then (on
        # success) the outputs.
        f'printf "\\n%s %s %s\\n" {nonce} "$__fr_rc" "$__fr_left" >&2',
        f'if [ "$__fr_rc" -eq 0 ] && [ -s {out} ]; then {head} >&2; fi',
        f"if [ -e {out} ]; then rm -f {out}; fi",
        # Nothing the command left in the group outlives it (as for a local attempt).
        "kill -KILL 0",
        'exit "$__fr_rc"',
        "",
    ]
    return "\n".join(lines).encode()


GONE = "gone"
"""What ``end_command`` prints when every group it signalled has no member left."""


def end_command(
    pgids: Sequence[int],
    sig: str,
    wait: float,
    outputs_file: str | None = None,
    *,
    then_kill: bool = False,
) -> bytes:
    """A control script: send ``sig`` to each remote group, then wait up to ``wait``
    seconds for them all to be gone, looking every ``_POLL`` seconds; it prints
    ``GONE`` when they are, else ``alive`` when the time ran out (or, with
    ``then_kill``, sends SIGKILL to the groups and prints ``killed``).

    Run over any connection to the host (a fresh one when the attempt's own
    is dead): the verdict does not depend on the attempt's channel.
    """
    groups = " ".join(str(int(g)) for g in pgids)
    steps = max(0, math.ceil(wait / _POLL))
    at_end = "echo alive"
    if then_kill:
        at_end = f"for g in {groups}; do kill -s KILL -- -$g 2>/dev/null; done; echo killed"
    lines = [
        f"for g in {groups}; do kill -s {sig} -- -$g 2>/dev/null; done",
        f"rm -f {shlex.quote(outputs_file)}" if outputs_file else ":",
        # `kill -s 0` succeeds while a group has a member (`kill -0 -- -G` and
        # `kill -TERM -- -G` are errors in dash: `-s` reads the same in every shell).
        "alive() {",
        f"  for g in {groups}; do kill -s 0 -- -$g 2>/dev/null && return 0; done; return 1",
        "}",
        "n=0",
        "while alive; do",
        f'  if [ "$n" -ge {steps} ]; then {at_end}; exit 0; fi',
        # A POSIX sleep may take whole seconds only: then each look takes one.
        f"  sleep {_POLL:g} 2>/dev/null || sleep 1",
        "  n=$((n + 1))",
        "done",
        f"echo {GONE}",
        "",
    ]
    return "\n".join(lines).encode()


class Sink:
    """Where an attempt's output goes: the redacted log file and ``on_output`` lines."""

    def __init__(
        self, log_fd: int, redact: StreamRedactor, on_output: Callable[[str], None] | None
    ) -> None:
        self.fd = log_fd
        self.redact = redact
        self.on_output = on_output
        self.line = b""
        self.last_line = b""

    def write(self, data: bytes) -> None:
        clean = self.redact.feed(data)
        if clean:
            self._emit(clean)

    def _emit(self, clean: bytes) -> None:
        view = memoryview(clean)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        if self.on_output is not None:
            text = self.line + clean
            *full, rest = text.split(b"\n")
            for line in full:
                self.on_output(line.decode("utf-8", "replace"))
            if len(rest) > _MAX_PARTIAL_LINE:
                self.on_output(rest.decode("utf-8", "replace"))
                rest = b""
            self.line = rest

    def close(self) -> None:
        tail = self.redact.flush()
        if tail:
            self._emit(tail)
        if self.on_output is not None and self.line:
            self.on_output(self.line.decode("utf-8", "replace"))
            self.line = b""


class RemoteSession(asyncssh.SSHClientSession[bytes]):
    """One remote attempt's channel: the pid line, output, outputs trailer, exit.

    stdout: what the login shell printed first, the pid line, then the
    command's output, written to the log as it arrives. stderr: the trailer
    (anything before it goes to the log). ``pid`` resolves with the pid line;
    ``done`` once the channel is closed (with the connection's error when it
    was lost). ``finish`` hands back the sink: what arrives after it is
    dropped (the channel of a dead connection may be closed long after its
    attempt ended).
    """

    def __init__(self, sink: Sink, nonce: str) -> None:
        loop = asyncio.get_running_loop()
        self.sink: Sink | None = sink
        self.nonce = nonce
        self.marker = f"\n{nonce} ".encode()
        self.tag = f"{_PGID_TAG}-{nonce} ".encode()
        self.pid: asyncio.Future[int] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self.exit_status: int | None = None
        self.exit_signal: int | None = None
        self.lost: Exception | None = None
        self._head = b""
        self._held = b""
        self._nl = False  # the last byte written from stderr was a newline
        self._outputs: bytearray | None = None

    def _write(self, data: bytes) -> None:
        if self.sink is not None:
            self.sink.write(data)

    def finish(self) -> None:
        """The attempt is over: write what stderr held back (no trailer came after
        it) and drop whatever arrives from now on."""
        if self._held:
            self._write(self._held)
            self._held = b""
        self.sink = None

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self.sink is None:
            return
        if datatype == asyncssh.EXTENDED_DATA_STDERR:
            self._stderr(data)
        elif self.pid.done():
            self._write(data)
        else:
            self._before_pid(data)

    def _before_pid(self, data: bytes) -> None:
        self._head += data
        i = self._head.find(self.tag)
        end = self._head.find(b"\n", i) if i >= 0 else -1
        if end < 0:
            if len(self._head) > _MAX_HEAD:
                self.pid.set_exception(ValueError("no process group id from the remote shell"))
            return
        if i:
            # What the login shell's start-up files printed first.
            self._write(self._head[:i])
        try:
            self.pid.set_result(int(self._head[i + len(self.tag) : end]))
        except ValueError:
            self.pid.set_exception(ValueError("unreadable process group id"))
            return
        rest = self._head[end + 1 :]
        self._head = b""
        if rest:
            self._write(rest)

    def _stderr(self, data: bytes) -> None:
        if self._outputs is not None:
            room = _STATUS_LINE + MAX_OUTPUTS_BYTES + 1 - len(self._outputs)
            if room > 0:
                self._outputs += data[:room]
            return
        buf = self._held + data
        # The trailer is written at once, so it nearly always comes whole; its
        # newline may still have come alone at the end of the last chunk (and
        # been written as the login shell's): then the nonce starts this one.
        lead = self.marker[1:] if self._nl else b""
        i, skip = buf.find(self.marker), len(self.marker)
        if i < 0 and lead and buf.startswith(lead):
            i, skip = 0, len(lead)
        if i >= 0:
            self._write(buf[:i])
            self._held = b""
            self._outputs = bytearray(buf[i + skip :])
            return
        if lead and lead.startswith(buf):
            self._held = buf
            return
        # Hold back only a tail that could begin the trailer: a newline and the
        # start of the nonce (a newline alone is written: the noise's own, nearly
        # always, and it reaches the log in its place).
        cut = len(buf)
        j = buf.rfind(b"\n", max(0, len(buf) - len(self.marker) + 1))
        if 0 <= j < len(buf) - 1 and self.marker.startswith(buf[j:]):
            cut = j
        if cut:
            self._write(buf[:cut])
            self._nl = buf[cut - 1 : cut] == b"\n"
        self._held = buf[cut:]

    def exit_status_received(self, status: int) -> None:
        self.exit_status = status

    def exit_signal_received(
        self, signal_name: str, core_dumped: bool, msg: str, lang: str
    ) -> None:
        try:
            self.exit_signal = int(signal.Signals["SIG" + signal_name])
        except KeyError:
            self.exit_signal = int(signal.SIGKILL)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._held:
            self._write(self._held)
            self._held = b""
        if exc is not None:
            self.lost = exc
        if not self.pid.done():
            self.pid.set_exception(exc or EOFError("the session closed before it started"))
            self.pid.exception()
        if not self.done.done():
            self.done.set_result(None)

    @property
    def trailer_status(self) -> int | None:
        """The command's exit status as the trailer reported it (None: no trailer)."""
        if self._outputs is None:
            return None
        words = self._status_words()
        try:
            return int(words[0]) if words else None
        except ValueError:
            return None

    @property
    def trailer_left(self) -> int:
        """How many processes the command left in its group, which the script
        then ended (0: none, or no trailer, or the host could not say)."""
        words = self._status_words()
        try:
            return max(0, int(words[1])) if len(words) > 1 else 0
        except ValueError:
            return 0

    def _status_words(self) -> list[bytes]:
        """The trailer's status line, split (``[]``: no whole line yet)."""
        if self._outputs is None:
            return []
        head, nl, _ = bytes(self._outputs[:_STATUS_LINE]).partition(b"\n")
        return head.split() if nl else []

    @property
    def outputs(self) -> bytes | None:
        """The published outputs as sent, at most ``MAX_OUTPUTS_BYTES + 1`` bytes
        (None: none were sent)."""
        if self._outputs is None:
            return None
        _, _, rest = bytes(self._outputs).partition(b"\n")
        return rest or None
