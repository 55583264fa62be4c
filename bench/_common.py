"""Small helpers shared by the engine benchmarks (timing, RSS, output)."""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """Seconds ``fn()`` took (wall clock), and its result."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    """One line about where the numbers were measured."""
    return (
        f"python {sys.version.split()[0]}, {os.cpu_count()} cpu(s), load {os.getloadavg()[0]:.2f}"
    )


def load() -> str:
    """The 1-, 5- and 15-minute load averages, as ``a/b/c``."""
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


_RUNS = [0]


def fresh_dir(parent: Path, name: str) -> Path:
    """A new, empty directory under ``parent`` for one run; nothing is deleted between runs.

    Deleting files makes the next file creations slow on some filesystems, so
    no timed run may follow a deletion: ext4 without a journal (this
    development machine's disk) skips every inode freed in the last 5 to 35
    seconds when it allocates one, reading the inode table for each. After
    5,000 deletions, creating a log file cost more than spawning the process
    that writes it (``bench/README.md``).
    """
    _RUNS[0] += 1
    d = parent / f"{name}-{_RUNS[0]}"
    d.mkdir(parents=True)
    return d


SETTLE_SECONDS = 6.0


def settle_deletions() -> None:
    """Before the first timed run: let files deleted just before (an earlier
    benchmark's clean-up) stop slowing file creation (see ``fresh_dir``).

    Once written back, a freed inode is skipped for 5 seconds.
    """
    print(f"  settling {SETTLE_SECONDS:g} s: files deleted just before slow down file creation")
    os.sync()
    time.sleep(SETTLE_SECONDS)


def median(xs: list[float]) -> float:
    """The median of a non-empty list."""
    s = sorted(xs)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def verdict(ok: bool) -> str:
    """``PASS``/``MISS`` for a target line."""
    return "PASS" if ok else "MISS"


def row(name: str, value: str, note: str = "") -> None:
    """Print one aligned result line."""
    print(f"  {name:<34} {value:>14}  {note}")
