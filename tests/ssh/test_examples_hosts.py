"""``examples/hosts`` runs against the test sshd: status, start, status, stop, status."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

from _ssh_attempts import attempt

from fleetrun.executors import SSHExecutor
from fleetrun.executors._contract import AttemptResult
from fleetrun.plan import expand, load_plan
from fleetrun.runs_on import SSHOptions

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hosts"


def _apply(plan_path: Path, tmp: Path, state_dir: Path) -> dict[str, AttemptResult]:
    """Every instance of the plan's one task, run by the SSH executor (what apply does)."""
    plan = load_plan(plan_path)
    graph = expand(plan)

    async def go() -> dict[str, AttemptResult]:
        ex = SSHExecutor()
        try:
            atts = []
            for node in graph.nodes:
                task = plan.tasks[node.task]
                assert task.runs_on == "ssh"
                target = plan.targets[node.target or ""]
                vars_ = {**plan.vars, "state_dir": str(state_dir)}
                atts.append(
                    attempt(
                        tmp,
                        target.name,
                        task.run.render(target, vars_),
                        target.attributes()["ssh"],
                        task=f"{node.task}-{plan_path.stem}",
                        options=SSHOptions.of(task.executor_options),
                    )
                )
            results = await asyncio.gather(*(ex.run(a) for a in atts))
            return {a.target or "": r for a, r in zip(atts, results, strict=True)}
        finally:
            await ex.aclose()

    return asyncio.run(go())


def test_hosts_example_start_status_stop(sshd: Any, tmp_path: Path) -> None:
    ex = tmp_path / "hosts"
    shutil.copytree(EXAMPLE, ex)
    shutil.copy(sshd.client_config, ex / "ssh_config")
    state = tmp_path / "state"
    logs = tmp_path / "logs"
    logs.mkdir()
    hosts = ["web1", "web2", "web3", "db1"]

    before = _apply(ex / "status.yaml", logs, state)
    assert {t: r.exit_code for t, r in before.items()} == dict.fromkeys(hosts, 3)

    started = _apply(ex / "start.yaml", logs, state)
    assert all(r.ok for r in started.values()), started
    pids = {t: r.outputs["pid"] for t, r in started.items() if r.outputs}
    assert sorted(pids) == sorted(hosts)

    again = _apply(ex / "start.yaml", logs, state)
    assert {t: (r.outputs or {}).get("pid") for t, r in again.items()} == pids

    running = _apply(ex / "status.yaml", logs, state)
    assert {t: (r.outputs or {}).get("state") for t, r in running.items()} == dict.fromkeys(
        hosts, "running"
    )

    stopped = _apply(ex / "stop.yaml", logs, state)
    assert all(r.ok for r in stopped.values()), stopped
    after = _apply(ex / "status.yaml", logs, state)
    assert {t: r.exit_code for t, r in after.items()} == dict.fromkeys(hosts, 3)
    for pid in pids.values():
        # Gone, or a zombie: the test process is a child subreaper (as fleetrun
        # is), so the stopped daemon may wait for it to be reaped.
        try:
            state_field = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            continue
        assert state_field == "Z", f"pid {pid} still runs"
