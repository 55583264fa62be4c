"""The reference example deploys safely: its canary allows no failed region.

chain138 rolls out in three waves (the canary northeurope and uksouth, 8
regions, the rest). One failed canary region must halt the rollout: no region
outside the canary is touched, while the later, larger waves still tolerate a
failed region or two.
"""

from __future__ import annotations

from pathlib import Path

from fleetrun.plan import allowed_failures, load_plan, wave_targets
from fleetrun.state import JournalReader

from ._helpers import CHAIN138, fleetrun

CANARY = ("northeurope", "uksouth")


def test_the_canary_allows_no_failure_and_later_waves_some() -> None:
    plan = load_plan(CHAIN138)
    assert plan.rollout is not None
    waves = wave_targets(plan)
    assert waves[0] == CANARY
    allowed = [allowed_failures(plan.rollout, len(w)) for w in waves]
    assert allowed[0] == 0
    assert all(a >= 1 for a in allowed[1:]), allowed


def test_one_failed_canary_region_halts_the_rollout(tmp_path: Path) -> None:
    state = tmp_path / "st"
    res = fleetrun("apply", str(CHAIN138), "--state-dir", str(state), "--plain",
                   extra_env={"CHAIN138_SCALE": "0.05", "FAIL_REGIONS": "uksouth"})  # fmt: skip
    assert res.returncode == 1, res.stdout + res.stderr
    with JournalReader(state) as r:
        run = r.run()
        attempts = r.attempts(run.id)
        states = {i.key: i.status for i in r.instances(run.id)}
    ran = {a.key.split("@")[1] for a in attempts if "@" in a.key}
    assert ran <= set(CANARY), ran
    assert states["infra@uksouth"] == "failed"
    assert states["infra@ukwest"] == "skipped"
    assert states["infra@japaneast"] == "skipped"
    assert "rollout halted: wave 1 had 1 failed target(s)" in res.stdout
