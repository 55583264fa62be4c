"""Shared helpers for engine tests: run a graph for real and collect its events."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fleetrun.engine import (
    AttemptEnded,
    AttemptStarted,
    Event,
    InstanceSettled,
    RunOptions,
    RunResult,
    run_graph,
)
from fleetrun.executors import LocalExecutor
from fleetrun.plan import Graph


@dataclass
class Ran:
    result: RunResult
    events: list[Event] = field(default_factory=list)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def settled(self) -> dict[str, InstanceSettled]:
        return {e.key: e for e in self.of(InstanceSettled)}

    def intervals(self) -> list[tuple[float, float, str]]:
        """(start, end, key) of every attempt, from AttemptStarted/AttemptEnded."""
        starts = {(e.key, e.attempt): e.at for e in self.of(AttemptStarted)}
        return [
            (starts[(e.key, e.attempt)], e.at, e.key)
            for e in self.of(AttemptEnded)
            if (e.key, e.attempt) in starts
        ]


_WORKER = "-" + os.environ["PYTEST_XDIST_WORKER"] if "PYTEST_XDIST_WORKER" in os.environ else ""


@pytest.fixture
def runner(tmp_path: Path) -> Callable[..., Ran]:
    """``runner(graph, executor=None, hook=None, **options) -> Ran``."""

    def run(graph: Graph, executor: Any = None, hook: Any = None, **kw: Any) -> Ran:
        # One run id per test process: attempts are tagged with it, and the
        # portable executor finds what an attempt left by its tag.
        kw.setdefault("run_id", "test-run" + _WORKER)
        kw.setdefault("run_dir", tmp_path / "run")
        kw.setdefault("grace", 2.0)
        events: list[Event] = []
        extra = kw.pop("subscribers", ())
        clock = kw.pop("clock", None)
        control = kw.pop("control", None)
        durable = kw.pop("durable", None)

        def sub(e: Event) -> None:
            events.append(e)
            if hook is not None:
                hook(e)

        async def main() -> RunResult:
            return await run_graph(
                graph,
                RunOptions(**kw),
                executor or LocalExecutor(),
                [sub, *extra],
                control=control,
                durable=durable,
                clock=clock,
            )

        result = asyncio.run(main())
        return Ran(result, events)

    return run


PY = os.environ.get("PYTHON", "python3")
