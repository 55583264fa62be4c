"""``apply --targets``: a selection runs what it names, and of what it needs only
what has no usable record in the plan's earlier runs; the rest is reused, and
the run says from which run. What is still pulled in is listed, asked for on a
terminal (``--yes``: not asked) and refused with ``--only``."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from fleetrun.state import JournalReader

from ._helpers import CHAIN138, env, fleetrun

# infra fails where a file named fail-<target> exists beside the plan.
PLAN = """\
name: sel
targets:
  eu-west: {}
  us-east: {}
  ap-south: {}
tasks:
  infra:
    for_each: all
    run: test ! -e fail-{{ target.name }} && echo "id=net-{{ target.name }}" >> "$FLEETRUN_OUTPUT"
  contract:
    needs: [{task: infra, at_least: 2}]
    run: echo address=0xC0FFEE >> "$FLEETRUN_OUTPUT"
  verify:
    for_each: all
    needs: [infra, contract]
    run: echo {{ tasks.infra.outputs.id }} {{ tasks.contract.outputs.address }}
"""


def _plan(tmp_path: Path) -> Path:
    p = tmp_path / "plan.yaml"
    p.write_text(PLAN)
    return p


def _runs(state: Path) -> list[str]:
    """Run ids, oldest first."""
    with JournalReader(state) as j:
        return [r.id for r in j.runs()][::-1]


def _states(state: Path, run_id: str) -> dict[str, tuple[str, str]]:
    """Instance key -> (state, reason) in ``run_id``."""
    with JournalReader(state) as j:
        return {i.key: (i.status, i.reason) for i in j.instances(run_id)}


def _after_a_failed_region(tmp_path: Path) -> tuple[Path, Path, str]:
    """The plan, its state directory and the id of a first run in which
    infra@ap-south failed (the contract's quorum held; verify@ap-south skipped)."""
    plan = _plan(tmp_path)
    (tmp_path / "fail-ap-south").touch()
    first = fleetrun("apply", str(plan), "--plain")
    assert first.returncode == 1, first.stdout + first.stderr
    state = tmp_path / ".fleetrun"
    (run1,) = _runs(state)
    assert _states(state, run1)["contract"][0] == "succeeded"
    assert _states(state, run1)["verify@ap-south"][0] == "skipped"
    return plan, state, run1


def test_a_selection_reuses_what_succeeded_and_runs_what_has_no_usable_record(
    tmp_path: Path,
) -> None:
    plan, state, run1 = _after_a_failed_region(tmp_path)
    (tmp_path / "fail-ap-south").unlink()
    # A dry run says the same, and lists the commands of what would run.
    dry = fleetrun("apply", str(plan), "--dry-run", "--targets", "eu-west")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    commands = [line.split(":")[0] for line in dry.stdout.splitlines() if ": " in line]
    assert sorted(k for k in commands if not k.startswith(("reuses", " "))) == [
        "infra@ap-south", "infra@eu-west", "verify@eu-west",
    ]  # fmt: skip
    assert _runs(state) == [run1]
    events = tmp_path / "events.jsonl"
    res = fleetrun("apply", str(plan), "--plain", "--targets", "eu-west", "--events", str(events))
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout.splitlines()
    # What it reuses, from which run; what it still pulls in, and why.
    assert (
        f"reuses 2 instance(s) the selection needs that succeeded with the same command "
        f"(2 from run {run1})"
    ) in out
    at = out.index("also runs 1 instance(s) the selection needs:")
    assert out[at + 1] == (
        f"  infra@ap-south: needed by contract (quorum of infra: at least 2 of 3); "
        f"failed in run {run1}"
    )
    run2 = _runs(state)[-1]
    assert _states(state, run2) == {
        "infra@eu-west": ("succeeded", ""),
        "infra@us-east": ("reused", f"reused from run {run1}"),
        "infra@ap-south": ("succeeded", ""),
        "contract": ("reused", f"reused from run {run1}"),
        "verify@eu-west": ("succeeded", ""),
    }
    # The named instance got the reused outputs.
    with JournalReader(state) as j:
        log = Path(j.attempt(run2, "verify@eu-west").log_path).read_text()
    assert log.strip() == "net-eu-west 0xC0FFEE"
    # The event (and the console line) names the run each reused instance came from.
    reused = [
        json.loads(line) for line in events.read_text().splitlines() if '"InstanceReused"' in line
    ]
    assert sorted((e["key"], e["from_run"]) for e in reused) == [
        ("contract", run1),
        ("infra@us-east", run1),
    ]
    assert any(
        line.endswith(f"reused     2 instance(s) that succeeded before, from run {run1}: "
                      "infra@us-east, contract")
        for line in out
    ), res.stdout  # fmt: skip

    # Everything has a usable record now: a selection runs only what it names,
    # and its reuses name the run each instance succeeded in.
    again = fleetrun("apply", str(plan), "--plain", "--only", "--targets", "eu-west")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "also runs" not in again.stdout
    run3 = _runs(state)[-1]
    assert _states(state, run3) == {
        "infra@eu-west": ("succeeded", ""),
        "infra@us-east": ("reused", f"reused from run {run1}"),
        "infra@ap-south": ("reused", f"reused from run {run2}"),
        "contract": ("reused", f"reused from run {run1}"),
        "verify@eu-west": ("succeeded", ""),
    }


def test_only_refuses_what_would_still_be_pulled_in(tmp_path: Path) -> None:
    plan, state, _ = _after_a_failed_region(tmp_path)
    refused = fleetrun("apply", str(plan), "--only", "--targets", "eu-west")
    assert refused.returncode == 2
    assert (
        "--only: the selection needs 1 instance(s) it does not name (infra@ap-south)"
        in refused.stderr
    )
    assert "Traceback" not in refused.stderr
    assert len(_runs(state)) == 1


def test_a_changed_command_is_not_reused(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    assert fleetrun("apply", str(plan)).returncode == 0
    state = tmp_path / ".fleetrun"
    (run1,) = _runs(state)
    plan.write_text(PLAN.replace("address=0xC0FFEE", "address=0xBEEF"))
    res = fleetrun("apply", str(plan), "--plain", "--targets", "us-east")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"  contract: needed by verify@us-east; command changed since run {run1}" in (
        res.stdout.splitlines()
    )
    states = _states(state, _runs(state)[-1])
    assert {k for k, (s, _) in states.items() if s == "succeeded"} == {
        "infra@us-east", "contract", "verify@us-east",
    }  # fmt: skip
    assert {k for k, (s, _) in states.items() if s == "reused"} == {
        "infra@eu-west",
        "infra@ap-south",
    }


# k8s uses its region's infra outputs; the contract needs a quorum of k8s.
CHAIN = """\
name: chain
targets:
  eu-west: {}
  us-east: {}
  ap-south: {}
tasks:
  infra:
    for_each: all
    run: test ! -e fail-{{ target.name }} && echo "id=net-{{ target.name }}" >> "$FLEETRUN_OUTPUT"
  k8s:
    for_each: all
    needs: [infra]
    run: echo {{ tasks.infra.outputs.id }}
  contract:
    needs: [{task: k8s, at_least: 2}]
    run: "true"
  verify:
    for_each: all
    needs: [k8s, contract]
    run: "true"
"""


def test_what_needs_an_instance_that_failed_since_runs_again_and_a_held_quorum_is_kept(
    tmp_path: Path,
) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(CHAIN)
    state = tmp_path / ".fleetrun"
    assert fleetrun("apply", str(plan)).returncode == 0
    (tmp_path / "fail-ap-south").touch()
    assert fleetrun("apply", str(plan), "--targets", "ap-south", "--tasks", "infra").returncode == 1
    (tmp_path / "fail-ap-south").unlink()
    run1, run2 = _runs(state)
    res = fleetrun("apply", str(plan), "--plain", "--targets", "eu-west", "--tasks", "verify")
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout.splitlines()
    at = out.index("also runs 2 instance(s) the selection needs:")
    assert out[at + 1 : at + 3] == [
        f"  infra@ap-south: needed by k8s@ap-south; failed in run {run2}",
        "  k8s@ap-south: needed by contract (quorum of k8s: at least 2 of 3); "
        "it needs infra@ap-south, which has no usable record",
    ]
    states = _states(state, _runs(state)[-1])
    assert {k for k, (s, _) in states.items() if s == "succeeded"} == {
        "verify@eu-west", "infra@ap-south", "k8s@ap-south",
    }  # fmt: skip
    # The contract's quorum held without ap-south: it is kept, as a retry keeps it.
    assert states["contract"] == ("reused", f"reused from run {run1}")
    assert {k for k, (s, _) in states.items() if s == "reused"} == {
        "contract", "infra@eu-west", "infra@us-east", "k8s@eu-west", "k8s@us-east",
    }  # fmt: skip


def _on_a_terminal(args: list[str], cwd: Path, answer: bytes | None) -> tuple[int, str]:
    """Run ``fleetrun ARGS`` on a pseudo-terminal; type ``answer`` once it asks
    (None: it must not ask). Returns the exit code and what it wrote."""
    primary, secondary = pty.openpty()
    p = subprocess.Popen(
        [sys.executable, "-m", "fleetrun", *args],
        cwd=cwd,
        env=env(),
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        close_fds=True,
    )
    os.close(secondary)
    seen = b""
    asked = False
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(primary, 4096)
                except OSError:  # the other side closed: the process ended
                    break
                if not chunk:
                    break
                seen += chunk
            if not asked and b"[y/N]" in seen:
                asked = True
                assert answer is not None, seen.decode(errors="replace")
                os.write(primary, answer)
            if not ready and p.poll() is not None:
                break
        code = p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(primary)
    text = seen.decode(errors="replace").replace("\r\n", "\n")
    assert asked == (answer is not None), text
    return code, text


def test_a_terminal_is_asked_before_what_is_pulled_in_runs(tmp_path: Path) -> None:
    plan, state, _ = _after_a_failed_region(tmp_path)
    (tmp_path / "fail-ap-south").unlink()
    args = ["apply", str(plan), "--plain", "--targets", "eu-west"]
    code, text = _on_a_terminal(args, tmp_path, b"n\n")
    assert code == 1, text
    assert "  infra@ap-south: needed by contract" in text
    assert "start 1 instance(s) the selection does not name, as listed above? [y/N]" in text
    assert "not run: nothing was started" in text
    assert len(_runs(state)) == 1  # nothing journaled
    code, text = _on_a_terminal(args, tmp_path, b"y\n")
    assert code == 0, text
    assert len(_runs(state)) == 2
    # --yes: not asked.
    code, text = _on_a_terminal([*args, "--yes"], tmp_path, None)
    assert code == 0, text


@pytest.mark.slow
def test_redeploying_one_region_of_chain138_runs_only_that_region(tmp_path: Path) -> None:
    """After a successful deploy, ``apply --targets eastus`` runs eastus's four
    instances and reuses the 73 others its contracts' quorum needs."""
    state, marks = tmp_path / "st", tmp_path / "marks"
    marks.mkdir()
    stand_ins = {"CHAIN138_SCALE": "0", "CHAIN138_MARKER_DIR": str(marks)}
    base = ["--state-dir", str(state), "--plain"]
    deploy = fleetrun("apply", str(CHAIN138), *base, extra_env=stand_ins)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    res = fleetrun("apply", str(CHAIN138), *base, "--targets", "eastus", extra_env=stand_ins)
    assert res.returncode == 0, res.stdout + res.stderr
    run1, run2 = _runs(state)
    states = _states(state, run2)
    ran = sorted(k for k, (s, _) in states.items() if s == "succeeded")
    assert ran == sorted(f"{t}@eastus" for t in ("infra", "k8s", "besu", "verify-region"))
    reused = {k: r for k, (s, r) in states.items() if s == "reused"}
    assert len(reused) == 73
    assert set(reused.values()) == {f"reused from run {run1}"}
    assert len(states) == len(ran) + len(reused)
    # The stand-ins ran exactly those four in the second run.
    executed = Counter(
        p.name for p in marks.iterdir() for line in p.read_text().splitlines() if run2 in line
    )
    assert sorted(executed) == ran
    assert set(executed.values()) == {1}
    assert "also runs" not in res.stdout
    assert f"reused     73 instance(s) that succeeded before, from run {run1}: " in res.stdout
