"""Small helpers shared by the engine benchmarks (timing, RSS, output)."""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Callable
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
