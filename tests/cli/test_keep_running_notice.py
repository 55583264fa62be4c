"""A command that leaves a service running: the processes are ended (the default,
``keep_running: false``), and the console and ``show`` say so, naming the
instance, how many were ended and the key that keeps them."""

from __future__ import annotations

from pathlib import Path

from ._helpers import fleetrun, kill_processes_with_env, show_json

PLAN = """\
name: svc
targets: {a: {}, b: {}}
tasks:
  serve:
    for_each: all
    run: nohup sleep 777 >/dev/null 2>&1 &
  kept:
    keep_running: true
    run: nohup sleep 778 >/dev/null 2>&1 &
  plain:
    run: "true"
"""

NOTE = "ended 1 process(es) it left running (`keep_running: true` keeps them)"


def test_ended_services_are_named_on_the_console_and_in_show(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)
    res = fleetrun("apply", str(plan), "--plain")
    state = tmp_path / ".fleetrun"
    data = show_json(state)
    kill_processes_with_env("FLEETRUN_RUN_ID", data["run"]["id"])  # what `kept` keeps
    assert res.returncode == 0, res.stdout + res.stderr
    # On the instance's own line: "succeeded  serve@a in 0.0s; ended 1 process(es) ...".
    notices = sorted(
        (line.split()[2], line.split("; ", 1)[1])
        for line in res.stdout.splitlines()
        if "keep_running" in line
    )
    assert notices == [(k, NOTE) for k in ("serve@a", "serve@b")], res.stdout
    assert all(f"succeeded  {k} in " in res.stdout for k in ("serve@a", "serve@b"))

    reasons = {i["key"]: (i["status"], i["reason"]) for i in data["instances"]}
    assert reasons == {
        "serve@a": ("succeeded", NOTE),
        "serve@b": ("succeeded", NOTE),
        "kept": ("succeeded", ""),
        "plain": ("succeeded", ""),
    }
    table = fleetrun("show", "--state-dir", str(state))
    assert table.returncode == 0, table.stderr
    row = next(ln for ln in table.stdout.splitlines() if ln.startswith("serve@a "))
    assert NOTE in row

    # --quiet keeps the notice (it is about the user's processes), after the run.
    quiet = fleetrun("apply", str(plan), "-q")
    kill_processes_with_env("FLEETRUN_RUN_ID", show_json(state)["run"]["id"])
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    assert quiet.stdout.count("`keep_running: true` keeps them") == 2, quiet.stdout
