"""Starting real ``fleetrun`` processes (apply, ui) and talking HTTP to the ui."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def env(**extra: str) -> dict[str, str]:
    """This process's environment with fleetrun importable, plus ``extra``."""
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT / "src")
    e.update(extra)
    return e


def fleetrun(*args: str, timeout: float = 60, **extra: str) -> subprocess.CompletedProcess[str]:
    """``python -m fleetrun ARGS`` to its end."""
    return subprocess.run(
        [sys.executable, "-m", "fleetrun", *args],
        env=env(**extra), capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


@dataclass
class Ui:
    """A running ``fleetrun ui``: its base URL, token and process."""

    base: str
    token: str
    proc: subprocess.Popen[bytes]

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """``GET path``: status and body (errors included)."""
        return request(self.base + path, headers=headers)

    def json(self, path: str) -> Any:
        """``GET path`` as JSON (must answer 200)."""
        status, body = self.get(path)
        assert status == 200, (path, status, body[:300])
        return json.loads(body)

    def post(self, path: str, token: str | None = None) -> tuple[int, Any]:
        """``POST path`` with the token header when given: status and JSON body."""
        headers = {"X-Fleetrun-Token": token} if token is not None else {}
        status, body = request(self.base + path, method="POST", headers=headers)
        return status, json.loads(body)


def request(
    url: str, method: str = "GET", headers: dict[str, str] | None = None, timeout: float = 30
) -> tuple[int, bytes]:
    """One HTTP request without following redirects: status and body."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    req = urllib.request.Request(
        url, method=method, headers=headers or {}, data=b"" if method == "POST" else None
    )
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@contextmanager
def serving(*args: str) -> Iterator[Ui]:
    """``fleetrun ui --port 0 ARGS`` for the block; stopped (SIGTERM) and reaped after."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleetrun", "ui", "--port", "0", *args],
        env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        line = _first_line(proc, "fleetrun ui: ")
        m = re.match(r"fleetrun ui: (http://[^/]+)/\?token=(\S+)", line)
        assert m is not None, line
        yield Ui(m[1], m[2], proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def _first_line(proc: subprocess.Popen[bytes], prefix: str, timeout: float = 30) -> str:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
            for line in buf.decode(errors="replace").splitlines():
                if line.startswith(prefix):
                    return line
        elif proc.poll() is not None:
            break
    raise AssertionError(f"fleetrun ui did not start: {buf.decode(errors='replace')}")


def wait_for(what: str, check: Any, timeout: float = 30, every: float = 0.05) -> Any:
    """Poll ``check()`` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def journal_rows(state: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of a read-only query on the journal (none while it does not exist)."""
    if not (state / "state.db").exists():
        return []
    conn = sqlite3.connect(f"file:{state / 'state.db'}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):  # created, not yet set up
            return []
        raise
    finally:
        conn.close()
