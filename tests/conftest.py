"""Every test: no process that a test's fleetrun run started may outlive the test.

Every attempt's processes carry ``FLEETRUN_ATTEMPT_ID`` in their environment,
and everything started from this test session carries ``FLEETRUN_TEST_SESSION``
(set here, inherited by runs in-process and by ``python -m fleetrun``
subprocesses). After each test, processes carrying both (and still running)
are a failure: they are killed, and the test that left them fails. Other
sessions' processes (other test runs on the machine) are not looked at.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SESSION = uuid.uuid4().hex
os.environ["FLEETRUN_TEST_SESSION"] = SESSION


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.path.exists("/usr/bin/chromium"):
        found = "/usr/bin/chromium"
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (CI installs Debian's chromium package)")
        pytest.skip("chromium is not installed")
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium driven by playwright (the system browser, nothing
    downloaded), one per test module. Without it the test is skipped, except
    under CI (``CI`` set), where a missing browser fails it."""
    path = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("playwright is not installed (it is in the test extra)")
        pytest.skip("playwright is not installed")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=["--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(autouse=True)
def _own_shared_pools(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Each test's shared pools (``pools.X.shared``) in a directory of its own,
    inherited by the fleetrun processes it starts: tests never meet the user's
    pools, nor each other's."""
    monkeypatch.setenv("FLEETRUN_POOLS_DIR", str(tmp_path_factory.mktemp("pools")))


# Hundreds of tests start `python -m fleetrun`. Where the environment turns off
# writing bytecode, each of those would compile every fleetrun module again:
# the child Pythons keep their bytecode in one cache outside the source tree.
if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
    _PYCACHE = Path(__file__).resolve().parents[1] / ".pytest_cache" / "pycache"
    os.environ.setdefault("PYTHONPYCACHEPREFIX", str(_PYCACHE))
_MARK = f"FLEETRUN_TEST_SESSION={SESSION}".encode()


_UNMARKED: set[tuple[int, int]] = set()
"""``(pid, inode of /proc/PID)`` of processes found not to be this session's
attempts at two looks, after two tests: their environment is their exec's and
no longer changes, so they are not read again. Pids are reused; procfs gives
each process's directory an inode number of its own, so a reused pid reads as
new. (One look is not enough: a child between its fork and its exec still has
its parent's environment.)"""
_UNMARKED_AFTER: dict[tuple[int, int], int] = {}
"""The same, seen at one look: after which test."""
_TESTS_ENDED = 0


def leftover_processes() -> list[tuple[int, str]]:
    """``(pid, command)`` of running processes an attempt of this session started."""
    out = []
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            seen = (int(name), os.stat(f"/proc/{name}").st_ino)
            if seen in _UNMARKED:
                continue
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        if _MARK not in env or not any(e.startswith(b"FLEETRUN_ATTEMPT_ID=") for e in env):
            # An empty environment: a zombie, or one not readable yet; looked at again.
            if env != [b""] and _UNMARKED_AFTER.setdefault(seen, _TESTS_ENDED) < _TESTS_ENDED:
                _UNMARKED.add(seen)
                del _UNMARKED_AFTER[seen]
            continue
        if stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] in (b"Z", b"X"):
            continue
        out.append((int(name), stat[stat.find(b"(") + 1 : stat.rfind(b")")].decode()))
    return out


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test() -> Iterator[None]:
    global _TESTS_ENDED
    yield
    _TESTS_ENDED += 1
    left = leftover_processes()
    deadline = time.monotonic() + 2.0
    while left and time.monotonic() < deadline:
        time.sleep(0.05)  # a process being ended right now
        left = leftover_processes()
    for pid, _ in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes started by this test outlived it: {left}"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: takes several seconds; run first, so the workers finish together"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` first, spread over the workers, the rest in their order.

    A long test handed out last would keep one worker busy while the others
    have nothing left to run. pytest-xdist (``--dist load``) hands each of its
    N workers a first chunk of consecutive tests, a quarter of its share
    (``len(items) // N // 4``), and the rest a few at a time as workers free up.
    With the slow tests all at the front they would all be in the first
    worker's chunk, run one after another by that worker alone: each chunk
    starts with its own share of them instead.
    """
    slow = [item for item in items if item.get_closest_marker("slow") is not None]
    rest = [item for item in items if item.get_closest_marker("slow") is None]
    workers = int(getattr(config, "workerinput", {}).get("workercount", 1))
    chunk = max(len(items) // workers // 4, 2)
    ordered: list[pytest.Item] = []
    for w in range(workers):
        mine = slow[w::workers]
        ordered += mine
        take = max(chunk - len(mine), 0) if w < workers - 1 else 0
        ordered += rest[:take]
        del rest[:take]
    items[:] = ordered + rest
