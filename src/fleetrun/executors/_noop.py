"""``NoopExecutor``: completes every attempt at once, in-process.

Used only to measure the engine's own overhead (``bench/bench_overhead.py``):
no process, no file, no await that yields.
"""

from __future__ import annotations

from fleetrun.executors._contract import Attempt, AttemptResult, Handle

_OK = AttemptResult(exit_code=0, outputs={})
_HANDLE = Handle("local", "", 0, 0)


class NoopExecutor:
    """An executor whose attempts succeed instantly without running anything."""

    __slots__ = ()
    kind = "local"
    queue_reason: str | None = None

    async def run(self, spec: Attempt) -> AttemptResult:
        """Report success (calls ``on_started`` with pid 0 so events stay complete)."""
        spec.on_started(_HANDLE)
        return _OK

    def kill_now(self) -> None:
        """Nothing is ever running."""

    async def aclose(self) -> None:
        """Nothing is held."""
