"""The engine's notion of time, passed in so tests of backoff and rates do not sleep.

Only waits that are policy (retry backoff, rate-limit pacing) go through the
clock. Process timeouts and grace periods are real time: a child process does
not run faster because a test uses a fake clock.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic time in seconds and a way to wait for it to pass."""

    def now(self) -> float:
        """Current monotonic time in seconds."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (cancellable)."""
        ...


class RealClock:
    """The real monotonic clock and ``asyncio.sleep``."""

    __slots__ = ()

    def now(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """``asyncio.sleep(seconds)``."""
        await asyncio.sleep(seconds)
