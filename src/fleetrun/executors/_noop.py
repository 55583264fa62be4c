"""``NoopExecutor``: completes every attempt at once, in-process.

Used only to measure the engine's own overhead (``bench/bench_overhead.py``):
no process, no file, no await that yields.
"""

from __future__ import annotations

from fleetrun.engine._executor import AttemptResult, AttemptSpec

_OK = AttemptResult(exit_code=0, outputs={})


class NoopExecutor:
    """An executor whose attempts succeed instantly without running anything."""

    __slots__ = ()

    async def run(self, spec: AttemptSpec) -> AttemptResult:
        """Report success (calls ``on_started`` with pid 0 so events stay complete)."""
        spec.on_started(0, 0)
        return _OK

    def kill_now(self) -> None:
        """Nothing is ever running."""
