"""Retry decisions, backoff delays and reading an attempt's log (bounded).

Logs can be arbitrarily large, so nothing here reads a whole log into memory:
``log_contains`` streams it in fixed-size chunks (overlapping by the longest
pattern) and ``log_tail`` reads only the last few kilobytes.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from fleetrun.engine._ending import ending_text
from fleetrun.executors import AttemptResult
from fleetrun.plan import RetryPolicy

if TYPE_CHECKING:
    import regex

TAIL_LINES = 10
"""Lines of a failed attempt's log shown in its ``AttemptEnded.tail``."""

_TAIL_BYTES = 8192
_CHUNK = 1 << 20


_MAX_DOUBLINGS = 64
"""Doublings of ``backoff`` past which the ceiling stops growing: 2**64 times any
backoff exceeds every ``max_backoff`` a duration can hold, and ``2.0 ** n``
overflows past n = 1023."""


def backoff_delay(policy: RetryPolicy, attempt: int, rng: random.Random) -> float:
    """Delay before attempt ``attempt + 1``: full jitter over
    ``[0, min(max_backoff, backoff * 2**(attempt-1))]``, for any attempt number."""
    doublings = min(max(attempt - 1, 0), _MAX_DOUBLINGS)
    ceiling = min(policy.max_backoff, math.ldexp(policy.backoff, doublings))
    return rng.uniform(0.0, max(0.0, ceiling))


def log_contains(path: str, patterns: Sequence[str]) -> str | None:
    """The first of ``patterns`` found in the file at ``path`` (streamed), or None."""
    needles = [p.encode() for p in patterns if p]
    if not needles:
        return None
    overlap = max(len(n) for n in needles) - 1
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        carry = b""
        while True:
            chunk = os.read(fd, _CHUNK)
            if not chunk:
                return None
            window = carry + chunk
            for n, p in zip(needles, patterns, strict=False):
                if n in window:
                    return p
            carry = window[-overlap:] if overlap else b""
    finally:
        os.close(fd)


_MAX_LINE = 1 << 16

SEARCH_SECONDS = 2.0
"""The most one ``log_search`` may take. A plan's pattern runs on output the
plan does not control, and a pattern that backtracks (``(a|aa)+$`` on a long
run of a's) could take hours; the scheduler waits for the search, so it is
bounded (the ``regex`` module's ``timeout``, which stdlib ``re`` lacks)."""


class SearchTimeout(Exception):
    """A pattern did not finish within ``SEARCH_SECONDS`` on one log, or (``why``)
    cannot be searched at all."""

    def __init__(self, pattern: str, why: str = "") -> None:
        super().__init__(pattern)
        self.pattern = pattern
        self.why = why


def _compiled(pattern: str) -> regex.Pattern[bytes]:
    import regex  # here, not at the top: 17 ms, loaded by the first search

    try:
        return regex.compile(pattern.encode())
    except (regex.error, ValueError, TypeError, OverflowError) as e:
        # The plan check refuses these; a graph built in code may still hold one.
        raise SearchTimeout(pattern, str(getattr(e, "msg", e))) from None


def _search(
    rx: regex.Pattern[bytes],
    line: bytes,
    deadline: float,
    pattern: str,
    last: bool = False,
) -> regex.Match[bytes] | None:
    """``rx.search(line)`` (the last match with ``last``) before ``deadline``."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise SearchTimeout(pattern)
    try:
        if last:
            return next(reversed(list(rx.finditer(line, timeout=left))), None)
        return rx.search(line, timeout=left)
    except TimeoutError:
        raise SearchTimeout(pattern) from None


def log_search(path: str, patterns: Sequence[str], group: bool = False) -> str | None:
    """Search the file at ``path`` line by line (streamed) for regular expressions.

    Without ``group``: the first of ``patterns`` that matches any line, or
    None. With ``group``: the first group of the *last* match of
    ``patterns[0]`` (for a Retry-After, the provider's latest word), or None.
    Lines longer than 64 KiB are searched in 64 KiB pieces. Raises
    ``SearchTimeout`` past ``SEARCH_SECONDS``.
    """
    pairs = [(_compiled(p), p) for p in patterns if p]
    if not pairs:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    last: str | None = None
    deadline = time.monotonic() + SEARCH_SECONDS
    try:
        carry = b""
        while True:
            chunk = os.read(fd, _CHUNK)
            window = carry + chunk
            if chunk:
                cut = window.rfind(b"\n") + 1
                if cut == 0 and len(window) < _MAX_LINE:
                    carry = window
                    continue
                if cut == 0:
                    cut = len(window)
                window, carry = window[:cut], window[cut:]
            for line in window.splitlines():
                if group:
                    rx, p = pairs[0]
                    m = _search(rx, line, deadline, p, last=True)
                    if m is not None and rx.groups:
                        last = (m.group(1) or b"").decode("utf-8", "replace")
                    continue
                for rx, p in pairs:
                    if _search(rx, line, deadline, p):
                        return p
            if not chunk:
                return last
    finally:
        os.close(fd)


def log_tail(path: str, lines: int = TAIL_LINES) -> tuple[str, ...]:
    """The last ``lines`` non-empty lines of the file at ``path`` (decoded leniently)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return ()
    try:
        size = os.fstat(fd).st_size
        start = max(0, size - _TAIL_BYTES)
        data = os.pread(fd, size - start, start)
    finally:
        os.close(fd)
    text = data.decode("utf-8", "replace")
    got = [ln for ln in text.splitlines() if ln.strip()]
    if start > 0 and got:
        got = got[1:]  # the first line is probably cut
    return tuple(got[-lines:])


def retry_reason(policy: RetryPolicy, result: AttemptResult, log_path: str) -> str | None:
    """Why a failed attempt should be retried under ``policy``, or None if it should not.

    ``any_failure`` retries everything; otherwise the failure must match
    ``on_connect`` (the executor could not reach where it runs, or lost it),
    ``on_exit``, ``on_output`` (searched in the attempt's log) or ``on_timeout``.
    """
    if result.error_kind in ("connect", "lost"):
        # The place it runs could not be reached, or went away: ``on.connect``.
        if policy.any_failure or policy.on_connect:
            return f"{result.error_kind}: {result.reason}"
        return None
    if result.timed_out:
        if policy.any_failure or policy.on_timeout:
            return "timeout"
        return None
    if result.exit_code is not None and result.exit_code in policy.on_exit:
        return f"exit {result.exit_code}"
    if policy.on_output:
        found = log_contains(log_path, policy.on_output)
        if found is not None:
            return f"output matched {found!r}"
    if policy.any_failure:
        if result.exit_code is not None:
            return f"exit {result.exit_code}"
        if result.signal is not None:
            return f"signal {result.signal}"
        return ending_text(None, reason=result.reason)  # no code: its cause in words
    return None


def is_throttle(policy: RetryPolicy, reason: str) -> bool:
    """The old guess (before pools had ``throttle`` rules) at whether a retry was a
    throttle: any retry on ``on.exit``/``on.output``. Kept for reading old runs;
    the engine now marks throttles on ``AttemptEnded.throttled``."""
    if policy.any_failure:
        return False
    return reason.startswith(("exit ", "output matched"))
