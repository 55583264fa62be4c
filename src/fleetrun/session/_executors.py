"""Which executor runs each ``runs_on`` kind, and who finds its orphans.

A run creates only the executors its tasks use (a plan of local tasks never
starts a compute cluster), and closes every one of them when it ends
(``Executor.aclose``: SSH connections, a local Dask cluster, loop registrations).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from fleetrun.executors import Executor, LocalExecutor, LocalOrphanFinder, OrphanFinder
from fleetrun.plan import Plan

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ExecutorContext:
    """What an executor factory knows of the run: its grace period (seconds), its
    plan, and the compute cluster named on the command line (``--cluster``)."""

    grace: float
    plan: Plan
    cluster: str | None = None


ExecutorFactory = Callable[[ExecutorContext], Executor]
"""Builds an executor for one run."""


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

    def create(self, kinds: Iterable[str], context: ExecutorContext) -> dict[str, Executor]:
        """One executor per kind in ``kinds`` (kinds without a factory are left out;
        the engine refuses a task whose kind has none)."""
        return {k: self.executors[k](context) for k in sorted(set(kinds)) if k in self.executors}

    def orphan_finders(self, kinds: Iterable[str], plan: Plan) -> dict[str, OrphanFinder]:
        """One finder per kind in ``kinds`` that has one (``plan`` tells where targets are)."""
        return {k: self.finders[k](plan) for k in sorted(set(kinds)) if k in self.finders}

    @staticmethod
    async def close(executors: Mapping[str, Executor]) -> None:
        """``aclose()`` every executor; one that fails does not keep the others open
        (the first failure is raised once all were tried)."""
        failed: list[Exception] = []
        for kind, ex in executors.items():
            try:
                await ex.aclose()
            except Exception as e:  # every executor is closed; the first failure is raised
                log.warning("closing the %s executor failed: %s: %s", kind, type(e).__name__, e)
                failed.append(e)
        if failed:
            raise failed[0]


def _local_finder(_plan: Plan) -> OrphanFinder:
    return LocalOrphanFinder()


def _ssh_executor(c: ExecutorContext) -> Executor:
    from fleetrun.executors import SSHExecutor  # loaded only by plans that use SSH

    return SSHExecutor(grace=c.grace)


def _ssh_finder(plan: Plan) -> OrphanFinder:
    from fleetrun.executors import SSHOrphanFinder

    return SSHOrphanFinder(
        targets={name: t.attributes().get("ssh") for name, t in plan.targets.items()}
    )


def default_registry() -> ExecutorRegistry:
    """The executors fleetrun ships: ``local``, ``ssh`` and ``cluster``."""
    reg = ExecutorRegistry()
    reg.register("local", lambda c: LocalExecutor(grace=c.grace), lambda _plan: LocalOrphanFinder())
    reg.register("ssh", _ssh_executor, _ssh_finder)
    reg.register("cluster", _cluster_executor, _cluster_finder)
    return reg


def _cluster_executor(c: ExecutorContext) -> Executor:
    # Loaded here, not at import: plans without cluster tasks never pay for Dask.
    # The scheduler: --cluster, else FLEETRUN_CLUSTER, else the plan's
    # `cluster.address`; none of them: an embedded local cluster for the run.
    from fleetrun.executors import ClusterExecutor, resolve_address

    section = c.plan.cluster
    return ClusterExecutor(resolve_address(c.cluster, section.address), workers=section.workers)


def _cluster_finder(_plan: Plan) -> OrphanFinder:
    from fleetrun.executors import ClusterOrphanFinder

    return ClusterOrphanFinder()
