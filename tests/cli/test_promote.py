"""``fleetrun promote`` opens the next wave of a live run whose rollout pauses."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ._helpers import fleetrun, show_json, spawn

PLAN = """\
name: waves
targets: {a: {}, b: {}, c: {}, d: {}}
rollout: {waves: [1, "100%"], pause: true}
tasks:
  deploy: {for_each: all, run: "true"}
"""


def _shown(state: Path) -> dict[str, Any]:
    """``show --format json`` of the latest run; no instances while the starting
    apply has not recorded its run yet."""
    if (state / "state.db").exists():
        res = fleetrun("show", "--state-dir", str(state), "--format", "json")
        if res.returncode == 0:
            shown: dict[str, Any] = json.loads(res.stdout)
            return shown
        # Before the run is recorded: no run yet, or not even the journal's tables.
        assert "no run is on record" in res.stderr or "no run has been recorded" in res.stderr, (
            res.stderr
        )
    return {"instances": []}


def test_promote_opens_the_next_wave_of_a_paused_rollout(tmp_path: Path) -> None:
    plan = tmp_path / "p.yaml"
    plan.write_text(PLAN)
    run = spawn("apply", str(plan), "--plain")
    try:
        state = tmp_path / ".fleetrun"
        deadline = time.monotonic() + 30
        first: list[str] = []
        while time.monotonic() < deadline:
            shown = _shown(state)
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


PLAN3 = """\
name: waves3
targets: {a: {}, b: {}, c: {}}
rollout: {waves: [1], pause: true}
tasks:
  deploy:
    for_each: all
    run: "test {{ target.name }} != b || while [ ! -e GO ]; do sleep 0.05; done"
"""


def _succeeded(state: Path) -> list[str]:
    return sorted(i["key"] for i in _shown(state)["instances"] if i["status"] == "succeeded")


def _until(state: Path, want: list[str]) -> None:
    deadline = time.monotonic() + 60
    while _succeeded(state) != want:
        assert time.monotonic() < deadline, _succeeded(state)
        time.sleep(0.1)


def test_two_promotes_for_a_waiting_wave_open_that_wave_only(tmp_path: Path) -> None:
    """An operator who runs `fleetrun promote` twice while the canary's next wave
    waits opens that one wave: the second call is refused (or, sent before the
    run recorded the opening, names the wave already open and changes nothing),
    and wave 3 waits for a promote of its own; `--early` approves it ahead."""
    plan = tmp_path / "p.yaml"
    go = tmp_path / "go"
    plan.write_text(PLAN3.replace("GO", str(go)))
    state = tmp_path / ".fleetrun"
    run = spawn("apply", str(plan), "--plain")
    try:
        _until(state, ["deploy@a"])
        first = fleetrun("promote", "--plan", str(plan))
        second = fleetrun("promote", "--plan", str(plan))
        assert first.returncode == 0, first.stderr
        assert "wave 2/3 opens" in first.stdout
        assert second.returncode in (0, 2), second.stderr
        if second.returncode == 2:
            assert "no wave of run" in second.stderr
            assert "--early" in second.stderr
        go.touch()  # wave 2 ends only after both promotes, however slow they start
        _until(state, ["deploy@a", "deploy@b"])
        time.sleep(0.5)
        assert _succeeded(state) == ["deploy@a", "deploy@b"]  # wave 3 waits
        assert run.poll() is None
        third = fleetrun("promote", "--plan", str(plan))
        assert third.returncode == 0, third.stderr
        assert "wave 3/3 opens" in third.stdout
        out, _ = run.communicate(timeout=60)
        assert run.returncode == 0, out
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert _succeeded(state) == ["deploy@a", "deploy@b", "deploy@c"]


PLAN4 = """\
name: waves4
targets: {a: {}, b: {}, c: {}, d: {}}
rollout: {waves: [1], pause: true}
tasks:
  deploy:
    for_each: all
    run: "test {{ target.name }} != b || while [ ! -e {{ env.GO }} ]; do sleep 0.05; done"
"""


def _status(state: Path, key: str) -> str:
    shown = _shown(state)
    return next((i["status"] for i in shown["instances"] if i["key"] == key), "")


def test_a_second_early_promote_says_the_next_wave_is_already_approved(tmp_path: Path) -> None:
    """`--early` while wave 2 runs approves wave 3; another `--early` says wave 3
    is already approved (exit 0, nothing sent), and wave 3 then opens without
    being announced as waiting; wave 4 waits for a promote of its own."""
    plan = tmp_path / "p.yaml"
    go = tmp_path / "go"
    plan.write_text(PLAN4.replace("{{ env.GO }}", str(go)))
    state = tmp_path / ".fleetrun"
    run = spawn("apply", str(plan), "--plain")
    try:
        _until(state, ["deploy@a"])
        assert fleetrun("promote", "--plan", str(plan)).returncode == 0
        deadline = time.monotonic() + 60
        while _status(state, "deploy@b") != "running":  # wave 2 is open and runs
            assert time.monotonic() < deadline
            time.sleep(0.1)
        early = fleetrun("promote", "--plan", str(plan), "--early")
        assert early.returncode == 0, early.stderr
        assert "wave 3/4 opens once wave 2 is done" in early.stdout
        again = fleetrun("promote", "--plan", str(plan), "--early")
        assert again.returncode == 0, again.stderr
        assert "wave 3 is already approved; it opens once wave 2 is done" in again.stdout
        go.touch()
        _until(state, ["deploy@a", "deploy@b", "deploy@c"])
        time.sleep(0.5)
        assert _succeeded(state) == ["deploy@a", "deploy@b", "deploy@c"]  # wave 4 waits
        last = fleetrun("promote", "--plan", str(plan))
        assert last.returncode == 0, last.stderr
        assert "wave 4/4 opens" in last.stdout
        out, _ = run.communicate(timeout=60)
        assert run.returncode == 0, out
    finally:
        go.touch()  # wave 2's command ends, whatever happened
        if run.poll() is None:
            run.kill()
            run.wait()
    waiting = [ln.split()[3] for ln in out.splitlines() if ln.split()[1:2] == ["waiting"]]
    assert waiting == ["2/4", "4/4"], out  # wave 3, approved ahead, opened unannounced
