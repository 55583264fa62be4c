"""``fleetrun ui``: serve the web application over the record; and ``apply --ui``,
which starts it beside a run."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
import time
import webbrowser
from collections.abc import Iterator
from pathlib import Path

import click

from fleetrun.errors import RunNotFoundError, StateDirError, UsageError
from fleetrun.layout import DB_NAME
from fleetrun.session import find_state_dir

UI_START_TIMEOUT = 30.0
"""Seconds ``apply --ui`` waits for the server to say where it listens."""

UI_STOP_GRACE = 5.0
"""Seconds the server beside a run gets to stop before it is killed."""

_URL_PREFIX = "fleetrun ui: "


@click.command("ui")
@click.option(
    "--state-dir",
    "state_dirs",
    multiple=True,
    type=click.Path(file_okay=False),
    help="A state directory to serve (repeatable; default: ./.fleetrun).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="The port (0: any free port).",
)
@click.option(
    "--token",
    default=None,
    envvar="FLEETRUN_UI_TOKEN",
    show_envvar=True,
    help="The session token (default: a new one, printed). Actions always need it; "
    "on an address other than loopback every request does.",
)
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a browser.")
@click.option("--beside", type=int, default=None, hidden=True)
def ui(
    state_dirs: tuple[str, ...],
    host: str,
    port: int,
    token: str | None,
    open_browser: bool,
    beside: int | None,
) -> None:
    """Serve a local web application over the record, live: runs, each run's
    grid, timeline, waves, pools, outputs and logs, trends, and /metrics for
    Prometheus. It follows runs started by any fleetrun process.

    \b
    Retry, cancel and promote from the page need the token printed at start.
    Exit codes: 0 stopped (Ctrl-C), 2 a state directory that does not exist,
    has no journal or a journal that cannot be read, or a port that cannot be had.
    """
    from fleetrun.ui import UiConfig, check_journal, new_token, serve

    dirs = tuple(Path(d).resolve() for d in state_dirs) or (find_state_dir(None, None),)
    if beside is None:
        for d in dirs:
            if not d.is_dir():
                raise StateDirError(
                    f"the state directory {d} does not exist; "
                    "name the state directory with --state-dir"
                )
            if not (d / DB_NAME).is_file():
                raise RunNotFoundError(
                    f"no journal in {d}: no run has been recorded there; "
                    "name the state directory with --state-dir"
                )
            check_journal(d)
    if token is not None and not token.strip():
        raise UsageError("--token must not be empty")
    config = UiConfig(dirs, host, port, token or new_token(), beside)

    def ready(url: str, access: object) -> None:
        reads = getattr(access, "reads_need_token", False)
        click.echo(f"{_URL_PREFIX}{url}/?token={config.token}")
        needs = "actions, and every request here" if reads else "actions"
        click.echo(f"  token ({needs}): {config.token}")
        click.echo(f"  serving {', '.join(str(d) for d in dirs)}; Ctrl-C stops it")
        sys.stdout.flush()
        if open_browser:
            webbrowser.open(f"{url}/?token={config.token}")

    serve(config, ready)


@contextlib.contextmanager
def ui_beside(state_dir: Path) -> Iterator[str]:
    """Run ``fleetrun ui`` for ``state_dir`` in a child process while the block
    runs; yield its URL (with the token). The child stops when the block ends
    (SIGTERM, then SIGKILL after ``UI_STOP_GRACE`` s), and by itself if this
    process dies first."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleetrun", "ui", "--state-dir", str(state_dir),
         "--port", "0", "--beside", str(os.getpid())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C stops the run first; the page stays to the end
        # Its diagnostics would only be drained below (``fleetrun -v ui`` shows them).
        env={k: v for k, v in os.environ.items() if k != "FLEETRUN_LOG"},
    )  # fmt: skip
    try:
        url = _read_url(proc)
        # Keep reading (and dropping) what it prints, so a full pipe never stalls it.
        threading.Thread(target=_drain, args=(proc,), daemon=True).start()
        yield url
    finally:
        _stop(proc)


def _read_url(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + UI_START_TIMEOUT
    said: list[str] = []
    fd = proc.stdout.fileno()
    buf = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            raw, buf = buf.split(b"\n", 1)
            line = raw.decode("utf-8", "replace")
            if line.startswith(_URL_PREFIX):
                return line[len(_URL_PREFIX) :]
            said.append(line)
    _stop(proc)
    why = said[-1].removeprefix("error: ") if said else "it did not start in time"
    raise UsageError(f"--ui: the web application did not start: {why}")


def _drain(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdout is not None
    with contextlib.suppress(OSError, ValueError):
        while proc.stdout.read(4096):
            pass


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(UI_STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        with contextlib.suppress(OSError):
            proc.stdout.close()
