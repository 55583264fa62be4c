"""``fleetrun promote`` opens the next wave of a live run whose rollout pauses."""

from __future__ import annotations

import time
from pathlib import Path

from ._helpers import fleetrun, show_json, spawn

PLAN = """\
name: waves
targets: {a: {}, b: {}, c: {}, d: {}}
rollout: {waves: [1, "100%"], pause: true}
tasks:
  deploy: {for_each: all, run: "true"}
"""


def test_promote_opens_the_next_wave_of_a_paused_rollout(tmp_path: Path) -> None:
    plan = tmp_path / "p.yaml"
    plan.write_text(PLAN)
    run = spawn("apply", str(plan), "--plain")
    try:
        state = tmp_path / ".fleetrun"
        deadline = time.monotonic() + 30
        first: list[str] = []
        while time.monotonic() < deadline:
            if (state / "state.db").exists():
                shown = show_json(state)
                first = [i["key"] for i in shown["instances"] if i["status"] == "succeeded"]
                if first:
                    break
            time.sleep(0.2)
        assert first == ["deploy@a"]  # the first wave, and nothing more: it waits
        time.sleep(0.5)
        waiting = show_json(state)
        assert [i["key"] for i in waiting["instances"] if i["status"] == "succeeded"] == first
        assert run.poll() is None
        promoted = fleetrun("promote", "--plan", str(plan))
        assert promoted.returncode == 0, promoted.stderr
        assert "promoted run " in promoted.stdout
        out, _ = run.communicate(timeout=30)
        assert run.returncode == 0, out
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    done = show_json(tmp_path / ".fleetrun")
    assert {i["status"] for i in done["instances"]} == {"succeeded"}
    nothing = fleetrun("promote", "--plan", str(plan))
    assert nothing.returncode != 0
    assert "no run is live" in nothing.stderr
