"""Which executor runs each ``runs_on`` kind, and who finds its orphans.

A run creates only the executors its tasks use (a plan of local tasks never
starts a compute cluster), and closes them when it ends (``aclose()`` where an
executor has one: SSH connections, a local Dask cluster).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from fleetrun.executors import (
    Executor,
    LocalExecutor,
    LocalOrphanFinder,
    OrphanFinder,
    SSHExecutor,
    SSHOrphanFinder,
)
from fleetrun.plan import Plan

ExecutorFactory = Callable[[float], Executor]
"""Builds an executor for one run, given the run's grace period (seconds)."""


@dataclass
class ExecutorRegistry:
    """Executor and orphan-finder factories by kind."""

    executors: dict[str, ExecutorFactory] = field(default_factory=dict)
    finders: dict[str, Callable[[Plan], OrphanFinder]] = field(default_factory=dict)

    def register(
        self,
        kind: str,
        factory: ExecutorFactory,
        finder: Callable[[Plan], OrphanFinder] | None = None,
    ) -> None:
        """Make ``kind`` available to ``runs_on``."""
        self.executors[kind] = factory
        if finder is not None:
            self.finders[kind] = finder

    def create(self, kinds: Iterable[str], *, grace: float) -> dict[str, Executor]:
        """One executor per kind in ``kinds`` (kinds without a factory are left out;
        the engine refuses a task whose kind has none)."""
        return {k: self.executors[k](grace) for k in sorted(set(kinds)) if k in self.executors}

    def orphan_finders(self, kinds: Iterable[str], plan: Plan) -> dict[str, OrphanFinder]:
        """One finder per kind in ``kinds`` that has one (``plan`` tells where targets are)."""
        return {k: self.finders[k](plan) for k in sorted(set(kinds)) if k in self.finders}

    @staticmethod
    async def close(executors: Mapping[str, Executor]) -> None:
        """``aclose()`` every executor that has one."""
        for ex in executors.values():
            close = getattr(ex, "aclose", None)
            if close is not None:
                result = close()
                if inspect.isawaitable(result):
                    await result


def _local_finder(_plan: Plan) -> OrphanFinder:
    return LocalOrphanFinder()


def _ssh_finder(plan: Plan) -> OrphanFinder:
    return SSHOrphanFinder(
        targets={name: t.attributes().get("ssh") for name, t in plan.targets.items()}
    )


def default_registry() -> ExecutorRegistry:
    """The executors fleetrun ships: ``local`` and ``ssh``."""
    reg = ExecutorRegistry()
    reg.register(
        "local", lambda grace: LocalExecutor(grace=grace), lambda _plan: LocalOrphanFinder()
    )
    reg.register("ssh", lambda grace: SSHExecutor(grace=grace), _ssh_finder)
    return reg
