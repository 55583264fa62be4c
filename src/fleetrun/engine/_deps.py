"""Requirement bookkeeping: which nodes may start, which can never start.

Each distinct ``Requirement`` object (the graph shares one object between many
nodes for all-instance fan-ins) gets one counter pair: how many of its nodes
succeeded and how many ended otherwise. It is *met* once ``ok >= at_least``
and *impossible* once ``len(nodes) - bad < at_least``; both are final, and a
requirement is never both. Work is linear in nodes + edges.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from fleetrun.plan import Graph, Requirement

_PENDING, _MET, _IMPOSSIBLE = 0, 1, 2


class Deps:
    """Tracks the requirements of the nodes taking part in a run.

    ``on_ready(j)`` is called when every requirement of node j is met;
    ``on_impossible(j, reason, stopped)`` when one of them can no longer be met. Each is
    called for nodes that may already be settled (skipped through another
    requirement): the caller ignores those.
    """

    __slots__ = (
        "_bad",
        "_graph",
        "_ok",
        "_on_impossible",
        "_on_ready",
        "_reqs",
        "_state",
        "_users",
        "_watchers",
        "unmet",
    )

    def __init__(
        self,
        graph: Graph,
        members: Iterable[int],
        on_ready: Callable[[int], None],
        on_impossible: Callable[[int, str, bool], None],
    ) -> None:
        self._graph = graph
        self._on_ready = on_ready
        self._on_impossible = on_impossible
        n = len(graph.nodes)
        self.unmet = [0] * n
        self._watchers: list[list[int] | None] = [None] * n
        self._reqs: list[Requirement] = []
        self._users: list[list[int]] = []
        index: dict[int, int] = {}
        nodes = graph.nodes
        for j in members:
            reqs = nodes[j].requires
            self.unmet[j] = len(reqs)
            for r in reqs:
                k = index.get(id(r))
                if k is None:
                    k = index[id(r)] = len(self._reqs)
                    self._reqs.append(r)
                    self._users.append([])
                    for d in set(r.nodes):
                        w = self._watchers[d]
                        if w is None:
                            self._watchers[d] = [k]
                        else:
                            w.append(k)
                self._users[k].append(j)
        self._ok = [0] * len(self._reqs)
        self._bad = [0] * len(self._reqs)
        self._state = [_PENDING] * len(self._reqs)

    def start(self) -> None:
        """Mark requirements that need nothing (``at_least == 0``) as met."""
        for k, r in enumerate(self._reqs):
            if self._state[k] == _PENDING and r.at_least <= 0:
                self._met(k)

    def is_watched(self, i: int) -> bool:
        """True when some member node requires node ``i``."""
        return self._watchers[i] is not None

    def settled(self, i: int, ok: bool, why: str, stopped: bool = False) -> None:
        """Node ``i`` reached a final state; ``why`` completes "needs X, which ...".

        ``stopped``: it did not succeed because the run was stopping (cancelled,
        not started), which ``on_impossible`` passes on.
        """
        watchers = self._watchers[i]
        if watchers is None:
            return
        for k in watchers:
            if self._state[k] != _PENDING:
                continue
            r = self._reqs[k]
            if ok:
                self._ok[k] += 1
                if self._ok[k] >= r.at_least:
                    self._met(k)
            else:
                self._bad[k] += 1
                if len(r.nodes) - self._bad[k] < r.at_least:
                    self._state[k] = _IMPOSSIBLE
                    if r.at_least == len(r.nodes):
                        reason = f"needs {self._graph.nodes[i].key}, which {why}"
                    else:
                        reason = (
                            f"needs {r.at_least} of {len(r.nodes)} {r.task} to succeed; "
                            f"{self._bad[k]} did not"
                        )
                    for j in self._users[k]:
                        self._on_impossible(j, reason, stopped)

    def _met(self, k: int) -> None:
        self._state[k] = _MET
        unmet = self.unmet
        for j in self._users[k]:
            unmet[j] -= 1
            if unmet[j] == 0:
                self._on_ready(j)
