"""fleetrun's own diagnostics: ``-v``/``-vv``/``FLEETRUN_LOG`` show them on stderr,
nothing does by default, and a secret never appears in them.

The SSH target is a loopback port with nothing listening: every connect try is
refused at once, so the run is short and the same on a loaded machine.
"""

from __future__ import annotations

import io
import logging
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetrun import diagnostics

from ._helpers import fleetrun

SECRET = "hush-Zq81Kp"
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} (fleetrun|asyncssh)\S* (DEBUG|INFO|WARNING|ERROR) ")


def _closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def plan(tmp_path: Path) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(
        f"""\
vars:
  tok: {{value: "{SECRET}", secret: true}}
targets:
  web1: {{ssh: {{host: 127.0.0.1, port: {_closed_port()}, connect_timeout: 5s}}}}
tasks:
  deploy:
    for_each: all
    runs_on: ssh
    run: "echo {{{{ vars.tok }}}}"
    retry: {{attempts: 3, backoff: 0.01s, on: {{connect: true}}}}
"""
    )
    return path


def _apply(plan: Path, *flags: str, env: dict[str, str] | None = None) -> tuple[str, str]:
    res = fleetrun(
        *flags,
        "apply",
        str(plan),
        "--plain",
        "--state-dir",
        str(plan.parent / "state"),
        extra_env={"FLEETRUN_LOG": "", **(env or {})},
    )
    assert res.returncode == 1, res.stderr  # the target cannot be reached
    return res.stdout, res.stderr


def _log_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if LOG_LINE.match(line)]


def test_v_shows_the_librarys_reason_and_each_retry(plan: Path) -> None:
    _, err = _apply(plan, "-v")
    lines = _log_lines(err)
    tries = [line for line in lines if "connect try 1 failed" in line]
    # One refused connect per attempt, each in the library's own words.
    assert len(tries) == 3, err
    assert all("ConnectionRefusedError" in line and "Connect call failed" in line for line in tries)
    retries = [line for line in lines if "retrying in" in line]
    assert [re.findall(r"attempt (\d) of 3", line) for line in retries] == [["1"], ["2"]]
    assert any("attempt 3 failed (connect)" in line and "no retry" in line for line in lines)
    # fleetrun's order: the refusal is logged before the retry it leads to.
    assert lines.index(tries[0]) < lines.index(retries[0]) < lines.index(tries[1])
    # -v is info: no debug lines, and asyncssh's own info stays out.
    assert not [line for line in lines if " DEBUG " in line or line[13:].startswith("asyncssh")]
    assert SECRET not in err


def test_silent_by_default(plan: Path) -> None:
    out, err = _apply(plan)
    assert _log_lines(err) == []
    assert "fleetrun.executors" not in err + out
    assert "connection refused" in out  # the run itself still says what failed


def test_fleetrun_log_debug_shows_every_detail_and_no_secret(plan: Path) -> None:
    out, err = _apply(plan, env={"FLEETRUN_LOG": "debug"})
    lines = _log_lines(err)
    commands = [line for line in lines if "deploy@web1: attempt" in line and " on ssh: " in line]
    assert len(commands) == 3, err
    assert all(line.endswith("echo ***") for line in commands)
    assert any(line[13:].startswith("asyncssh INFO") for line in lines)  # the library's side
    assert SECRET not in err + out


def test_vv_is_debug(plan: Path) -> None:
    _, err = _apply(plan, "-vv")
    assert any(" DEBUG " in line for line in _log_lines(err))
    assert SECRET not in err


def test_unknown_fleetrun_log_value_is_one_line() -> None:
    res = fleetrun("schema", extra_env={"FLEETRUN_LOG": "loud"})
    assert res.returncode == 2
    assert res.stderr.splitlines() == [
        "error: FLEETRUN_LOG='loud': expected one of debug, info, warning, error (or unset it)"
    ]


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["apply", "-v", "x.yaml"], "-v goes before the command: fleetrun -v apply x.yaml"),
        (["apply", "x.yaml", "-vv"], "-v goes before the command: fleetrun -vv apply x.yaml"),
        (["plan", "--verbose", "my plan.yaml"],
         "--verbose goes before the command: fleetrun -v plan 'my plan.yaml'"),
        (["-v", "cluster", "status", "-v"],
         "-v goes before the command: fleetrun -vv cluster status"),
    ],
)  # fmt: skip
def test_verbose_after_the_command_says_where_it_goes(argv: list[str], said: str) -> None:
    res = fleetrun(*argv)
    assert res.returncode == 2
    assert res.stderr.splitlines() == [f"error: {said}"]
    assert res.stdout == ""


def test_another_unknown_option_keeps_clicks_message() -> None:
    res = fleetrun("apply", "--verbosity", "x.yaml")
    assert res.returncode == 2
    assert "No such option '--verbosity'" in res.stderr


# -- in process: the handler itself -------------------------------------------------------


@pytest.fixture
def enabled() -> Iterator[logging.Logger]:
    logger = logging.getLogger(diagnostics.LOGGER_NAME)
    saved = logger.level, logger.propagate
    try:
        yield logger
    finally:
        diagnostics.enable(None)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        for name in diagnostics.LIBRARIES:
            lib = logging.getLogger(name)
            lib.setLevel(logging.NOTSET)
            lib.propagate = True


def test_lines_go_to_the_current_stderr_redacted(
    enabled: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    diagnostics.enable(logging.DEBUG)
    diagnostics.note_secrets(["tok-Rr55Jw"])
    # A live display swaps sys.stderr while it runs: the line must go there.
    swapped = io.StringIO()
    monkeypatch.setattr(sys, "stderr", swapped)
    log = logging.getLogger("fleetrun.engine._driver")
    log.debug("running %s", "deploy --token tok-Rr55Jw")
    try:
        raise ValueError("bad value tok-Rr55Jw")
    except ValueError:
        log.warning("failed", exc_info=True)
    text = swapped.getvalue()
    assert "tok-Rr55Jw" not in text
    assert "running deploy --token ***" in text
    assert "ValueError: bad value ***" in text  # the traceback is redacted too
    assert LOG_LINE.match(text.splitlines()[0])


def test_disabled_warning_reaches_no_stderr(
    enabled: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    diagnostics.enable(None)
    swapped = io.StringIO()
    monkeypatch.setattr(sys, "stderr", swapped)
    logging.getLogger("fleetrun.executors._ssh_conn").warning("a warning nobody asked for")
    assert swapped.getvalue() == ""


@pytest.mark.parametrize(
    ("verbose", "env", "level"),
    [
        (0, "", None),
        (1, "", logging.INFO),
        (2, "", logging.DEBUG),
        (3, "", logging.DEBUG),
        (0, "warning", logging.WARNING),
        (0, "error", logging.ERROR),
        (0, "ERROR", logging.ERROR),
        (0, " Debug ", logging.DEBUG),
        (1, "debug", logging.DEBUG),  # the more detailed of the two
        (2, "warning", logging.DEBUG),
    ],
)
def test_level_from_flag_and_environment(verbose: int, env: str, level: int | None) -> None:
    assert diagnostics.level_from(verbose, {"FLEETRUN_LOG": env}) == level
