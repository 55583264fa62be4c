"""The remote side's framing, without a server: the group id line, output, the trailer."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from fleetrun.executors._ssh_lib import asyncssh
from fleetrun.executors._ssh_remote import (
    BOOTSTRAP,
    RemoteSession,
    Sink,
    build_script,
    script_command,
)
from fleetrun.redact import Redactor


def _feed(tmp_path: Path, chunks: list[tuple[bytes, int | None]]) -> tuple[RemoteSession, str]:
    async def go() -> RemoteSession:
        fd = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        sink = Sink(fd, Redactor(["hunter2"]).stream(), None)
        s = RemoteSession(sink, "abc123")
        for data, kind in chunks:
            s.data_received(data, kind)
        s.connection_lost(None)
        sink.close()
        os.close(fd)
        return s

    s = asyncio.run(go())
    return s, (tmp_path / "log").read_text()


def test_start_up_noise_pid_output_and_trailer(tmp_path: Path) -> None:
    err = asyncssh.EXTENDED_DATA_STDERR
    s, log = _feed(
        tmp_path,
        [
            (b"motd on stderr\n", err),
            (b"Welcome to host\nfleetrun-pgid-ab", None),
            (b"c123 4242\nline one, pass=hunter", None),
            (b"2\npartial", None),
            (b" end\n", None),
            # The trailer, split anywhere, on stderr: the last line is not held back.
            (b"\nabc1", err),
            (b"23 0 2\nkey=value\n", err),
        ],
    )
    assert s.pid.result() == 4242
    assert log == "motd on stderr\nWelcome to host\nline one, pass=***\npartial end\n"
    assert (s.trailer_status, s.trailer_left) == (0, 2)
    assert s.outputs == b"key=value\n"


def test_the_last_line_is_written_before_the_trailer_comes(tmp_path: Path) -> None:
    async def go() -> str:
        fd = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        lines: list[str] = []
        sink = Sink(fd, Redactor([]).stream(), lines.append)
        s = RemoteSession(sink, "n9")
        s.data_received(b"fleetrun-pgid-n9 5\nready\n", None)
        seen = list(lines)
        s.finish()
        sink.close()
        os.close(fd)
        # Dropped: the attempt is over.
        s.data_received(b"late\n", None)
        return "|".join(seen)

    assert asyncio.run(go()) == "ready"
    assert (tmp_path / "log").read_text() == "ready\n"


def test_no_trailer_when_killed(tmp_path: Path) -> None:
    s, log = _feed(tmp_path, [(b"fleetrun-pgid-abc123 7\nworking\n", None)])
    assert s.pid.result() == 7
    assert s.trailer_status is None
    assert s.outputs is None
    assert log == "working\n"


def test_bootstrap_and_script_command_hold_no_attempt_data() -> None:
    assert BOOTSTRAP == "exec /bin/sh -s"
    script = build_script("echo hi", {"API_TOKEN": "it's"}, "/tmp/out", "n1").decode()
    assert script.startswith("echo \"fleetrun-pgid-n1 $$\"\nexport API_TOKEN='it'\"'\"'s'\n")
    assert "__fr_cmd='echo hi'" in script
    # One stream for the command, in the order written; the trailer on stderr.
    assert '( eval "$__fr_cmd" ) </dev/null 2>&1\n' in script
    assert 'printf "\\n%s %s %s\\n" n1 "$__fr_rc" "$__fr_left" >&2\n' in script
    cmd = script_command("#!/usr/bin/env python3\nprint(1)", "'a b'", "n1")
    assert (
        cmd == "python3 /dev/fd/3 'a b' 3<<'FLEETRUN_SCRIPT_n1'\n"
        "#!/usr/bin/env python3\nprint(1)\nFLEETRUN_SCRIPT_n1\n"
    )


def test_trailer_found_however_stderr_is_split(tmp_path: Path) -> None:
    err = asyncssh.EXTENDED_DATA_STDERR
    # Noise ending in a newline, then the trailer's newline alone, then the rest.
    s, log = _feed(
        tmp_path,
        [
            (b"noise\n", err),
            (b"fleetrun-pgid-abc123 3\nout\n", None),
            (b"\n", err),
            (b"abc123 4\n", err),
        ],
    )
    assert s.trailer_status == 4
    assert s.outputs is None
    # The trailer's newline was taken for the noise's: one blank line, nothing lost.
    assert log.replace("\n\n", "\n") == "noise\nout\n"
