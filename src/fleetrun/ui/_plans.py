"""What the pages need from a run's plan: the plan itself (pools, rollout,
tasks) and the redactor of its secret values.

The plan comes from ``report.load_run_plan`` (the unchanged plan file, else
the journal's snapshot), remembered per plan file and version, so the two
hundred runs of one plan load it once. It is never expanded: no page needs the
graph, and a plan of 50,000 instances expands ten times slower than it loads.
Every text the pages show passes the run's redactor, on top of the redaction
done when the record was written.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from fleetrun.plan import Plan
from fleetrun.redact import Redactor
from fleetrun.report import load_run_plan
from fleetrun.state import RunRecord

PLANS_KEPT = 16
"""Plan versions kept in memory."""


@dataclass(frozen=True, slots=True)
class RunPlan:
    """A run's plan (None when it cannot be loaded), where it came from, and its redactor."""

    plan: Plan | None
    notes: tuple[str, ...] = ()
    redactor: Redactor = field(default_factory=Redactor)

    def pools_of(self, task: str) -> tuple[str, ...]:
        """The pools ``task`` draws on (none when the plan is unknown)."""
        if self.plan is None:
            return ()
        t = self.plan.tasks.get(task)
        return () if t is None else t.pools


class Plans:
    """``RunPlan`` per plan file and version, loaded on first use."""

    def __init__(self) -> None:
        self._kept: OrderedDict[tuple[str, str], RunPlan] = OrderedDict()
        self._lock = threading.Lock()

    def of(self, run: RunRecord) -> RunPlan:
        """The plan ``run`` ran."""
        key = (run.plan_path, run.plan_hash)
        with self._lock:
            found = self._kept.get(key)
            if found is not None:
                self._kept.move_to_end(key)
                return found
        plan, notes = load_run_plan(run)
        secrets = plan.secret_values if plan is not None else frozenset()
        made = RunPlan(plan, tuple(notes), Redactor(secrets))
        with self._lock:
            self._kept[key] = made
            while len(self._kept) > PLANS_KEPT:
                self._kept.popitem(last=False)
        return made
