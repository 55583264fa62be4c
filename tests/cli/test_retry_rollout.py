"""``fleetrun retry`` continues a rollout where its run stopped; ``--rollout`` replays it.

The chain138 example rolls out in three waves: the canary (northeurope,
uksouth), 8 regions (ukwest among them), then the rest (japaneast among them);
the canary may lose no region, the later waves a quarter of theirs. Orders are
read from the journal's attempt times.
"""

from __future__ import annotations

from pathlib import Path

from fleetrun.plan import load_plan, wave_targets
from fleetrun.state import AttemptRecord, JournalReader

from ._helpers import CHAIN138, fleetrun

SCALE = "0.05"
CANARY = ("northeurope", "uksouth")


def _retry_run(state: Path) -> tuple[str, dict[str, object], list[AttemptRecord]]:
    """The latest run: its id, its recorded options, its attempts."""
    with JournalReader(state) as r:
        run = r.run()
        return run.id, dict(run.options), r.attempts(run.id)


def _span(attempts: list[AttemptRecord], target: str) -> tuple[float, float]:
    """When the first attempt of ``target``'s instances started and the last ended."""
    mine = [a for a in attempts if a.key.endswith("@" + target)]
    assert mine, f"no attempt of {target}"
    ends = [a.ended_at for a in mine]
    assert None not in ends
    return min(a.started_at for a in mine), max(e for e in ends if e is not None)


def _apply(state: Path, fail: str) -> None:
    res = fleetrun("apply", str(CHAIN138), "--state-dir", str(state), "--plain",
                   extra_env={"CHAIN138_SCALE": SCALE, "FAIL_REGIONS": fail})  # fmt: skip
    assert res.returncode == 1, res.stdout + res.stderr


def test_the_plan_rolls_out_as_these_tests_assume() -> None:
    waves = wave_targets(load_plan(CHAIN138))
    assert len(waves) == 3
    assert waves[0] == CANARY
    assert "japaneast" in waves[2]


def test_retry_runs_the_opened_waves_failed_regions_at_once(tmp_path: Path) -> None:
    state = tmp_path / "st"
    _apply(state, "ukwest,japaneast")  # one region of waves 2 and 3: within max_failed
    res = fleetrun("retry", "--state-dir", str(state), "--plain",
                   extra_env={"CHAIN138_SCALE": SCALE})  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    run_id, options, attempts = _retry_run(state)
    assert options["waves_opened"] == 3  # every wave had opened in the run retried
    uk, jp = _span(attempts, "ukwest"), _span(attempts, "japaneast")
    # The two regions' pipelines ran at the same time, not one after the other.
    assert uk[0] < jp[1], (uk, jp)
    assert jp[0] < uk[1], (uk, jp)
    with JournalReader(state) as r:
        opened = [e for e in r.event_data(run_id, "WaveChanged") if e["state"] == "open"]
    assert len(opened) == 1
    assert set(opened[0]["targets"]) >= {"uksouth", "japaneast", "ukwest"}


def test_a_wave_that_never_opened_stays_behind_the_canary(tmp_path: Path) -> None:
    state = tmp_path / "st"
    _apply(state, ",".join(CANARY))  # the whole canary failed: the rollout halted
    # Still failing: the retry halts at the canary again; no other region is touched.
    still = {"CHAIN138_SCALE": SCALE, "FAIL_REGIONS": ",".join(CANARY)}
    res = fleetrun("retry", "--state-dir", str(state), "--plain", extra_env=still)
    assert res.returncode == 1, res.stdout + res.stderr
    run_id, options, attempts = _retry_run(state)
    assert options["waves_opened"] == 1
    assert {a.key.split("@")[1] for a in attempts if "@" in a.key} == set(CANARY)
    with JournalReader(state) as r:
        states = {i.key: i.status for i in r.instances(run_id)}
    assert states["infra@ukwest"] == "skipped"
    assert states["infra@japaneast"] == "skipped"
    # Fixed: the canary goes first again, and the next wave opens only after it.
    res = fleetrun("retry", "--state-dir", str(state), "--plain",
                   extra_env={"CHAIN138_SCALE": SCALE})  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    run_id, options, attempts = _retry_run(state)
    assert options["waves_opened"] == 1
    canary_besu_end = max(
        a.ended_at or 0.0 for a in attempts if a.key in ("besu@northeurope", "besu@uksouth")
    )
    later = [a for a in attempts if "@" in a.key and a.key.split("@")[1] not in CANARY]
    assert later
    assert min(a.started_at for a in later) >= canary_besu_end


def test_retry_rollout_replays_every_wave(tmp_path: Path) -> None:
    state = tmp_path / "st"
    _apply(state, "ukwest,japaneast")
    res = fleetrun("retry", "--rollout", "--state-dir", str(state), "--plain",
                   extra_env={"CHAIN138_SCALE": SCALE})  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    run_id, options, attempts = _retry_run(state)
    assert options["waves_opened"] == 0
    # japaneast (third wave) waits until ukwest (second wave) has rolled out.
    uk_besu = [a for a in attempts if a.key == "besu@ukwest"]
    assert uk_besu
    assert uk_besu[-1].ended_at is not None
    assert _span(attempts, "japaneast")[0] >= uk_besu[-1].ended_at
    with JournalReader(state) as r:
        opened = [e for e in r.event_data(run_id, "WaveChanged") if e["state"] == "open"]
    assert [e["wave"] for e in opened] == [1, 2, 3]
