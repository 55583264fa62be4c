"""``fleetrun exec`` parts that stand alone: the request -> plan, and the output view."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from _ssh_attempts import attempt

from fleetrun.errors import UsageError
from fleetrun.executors import SSHExecutor
from fleetrun.plan import EXEC_TASK, ExecRequest, exec_plan, expand, is_fleet_file
from fleetrun.report import TargetOutcome
from fleetrun.report import exec_exit_code as exit_code
from fleetrun.report import render_exec_json as render_json
from fleetrun.report import render_exec_text as render_text


def _read(path: str) -> str:
    return Path(path).read_text()


def _fleet(tmp_path: Path, sshd: Any | None = None) -> Path:
    p = tmp_path / "fleet.yaml"
    if sshd is None:
        p.write_text("web1: {role: web}\nweb2: {role: web}\ndb1: {role: db}\n")
    else:
        cfg = sshd.client_config
        p.write_text(
            "".join(
                f"{n}: {{role: {r}, ssh: {{host: {n}, config_file: {cfg}}}}}\n"
                for n, r in (("web1", "web"), ("web2", "web"), ("db1", "db"))
            )
        )
    return p


def test_fleet_file_becomes_a_one_task_plan(tmp_path: Path) -> None:
    f = _fleet(tmp_path)
    assert is_fleet_file(f.read_text())
    req = ExecRequest(str(f), ("echo", "{{ target.name }}", "is", "{{ target.role }}"))
    plan = exec_plan(req)
    assert plan.name == "fleet.exec"
    assert list(plan.tasks) == [EXEC_TASK]
    task = plan.tasks[EXEC_TASK]
    assert task.targets == ("web1", "web2", "db1")
    assert task.runs_on == "local"  # no target has ssh settings
    graph = expand(plan)
    assert [n.key for n in graph.nodes] == ["exec@web1", "exec@web2", "exec@db1"]
    assert task.run.render(plan.targets["db1"], plan.vars) == "echo db1 is db"
    # The request survives the journal.
    assert ExecRequest.from_json(json.loads(json.dumps(req.to_json()))) == req


def test_plan_file_selection_and_runs_on(tmp_path: Path) -> None:
    (tmp_path / "plan.yaml").write_text(
        "ssh: {user: ops}\n"
        "env: {GREETING: hello}\n"
        "targets: {a: {zone: x}, b: {zone: y}, c: {zone: x}}\n"
        "groups: {xs: {where: \"zone == 'x'\"}}\n"
        "tasks: {deploy: {run: 'exit 1', for_each: all}}\n"
    )
    plan = exec_plan(ExecRequest(str(tmp_path / "plan.yaml"), ("uptime",), targets=("b,xs",)))
    task = plan.tasks[EXEC_TASK]
    assert task.targets == ("a", "b", "c")
    assert task.runs_on == "ssh"  # the plan's ssh defaults reach every target
    assert plan.env == {"GREETING": "hello"}
    assert list(plan.tasks) == [EXEC_TASK]
    other = exec_plan(ExecRequest(str(tmp_path / "plan.yaml"), ("uptime",), runs_on="local"))
    assert other.tasks[EXEC_TASK].runs_on == "local"
    assert other.source_hash != plan.source_hash


@pytest.mark.parametrize(
    ("command", "targets", "message"),
    [
        (("true",), ("nope",), "unknown target or group 'nope'; known: web1,"),
        (("true",), ("web1,nope",), "unknown target or group 'nope'"),
        (("echo", "{{ target.zone }}"), None, "which target 'web1' does not have"),
        (("echo", "{{ tasks.x.outputs.y }}"), None, "cannot use task outputs"),
        ((), None, "needs a command"),
    ],
)
def test_exec_usage_errors(
    tmp_path: Path, command: tuple[str, ...], targets: tuple[str, ...] | None, message: str
) -> None:
    with pytest.raises(UsageError) as err:
        exec_plan(ExecRequest(str(_fleet(tmp_path)), command, targets=targets))
    assert message in str(err.value)


def test_view_blocks_in_fleet_order_then_table() -> None:
    outcomes = [
        TargetOutcome("web1", 0, duration=0.5, output="active\n"),
        TargetOutcome("web2", 3, duration=1.25, output="starting\ninactive\n"),
        TargetOutcome(
            "db1",
            None,
            reason="db1: connection refused (no SSH server on that port)",
            error_kind="connect",
            duration=0.01,
        ),
        TargetOutcome("db2", None, timed_out=True, signal=15, duration=30.0, output="..."),
    ]
    text = render_text(outcomes)
    blocks = [text.index(f"── {t} ──") for t in ("web1", "web2", "db1", "db2")]
    assert blocks == sorted(blocks)
    assert "── web2 ── exit 3, 1.25s" in text
    assert "! db1: connection refused" in text
    table = text[text.index("TARGET") :].splitlines()
    assert table[0].split() == ["TARGET", "EXIT", "DURATION", "LAST", "LINE"]
    assert table[1].split() == ["web1", "0", "0.50s", "active"]
    assert table[2].split() == ["web2", "3", "1.25s", "inactive"]
    assert table[3].split()[:3] == ["db1", "connect", "0.01s"]
    assert table[4].split() == ["db2", "timeout", "30.0s", "..."]
    assert table[5] == "1 succeeded, 3 failed"
    data = json.loads(render_json(outcomes))
    assert [d["target"] for d in data] == ["web1", "web2", "db1", "db2"]
    assert data[1]["exit_code"] == 3
    assert data[1]["last_line"] == "inactive"
    assert data[2]["error_kind"] == "connect"
    assert exit_code(outcomes) == 1
    assert exit_code(outcomes[:1]) == 0


def test_exec_over_ssh_end_to_end(sshd: Any, tmp_path: Path) -> None:
    """The exec plan's instances, run by the SSH executor, rendered by the view
    (what the session does for ``fleetrun exec``)."""
    plan = exec_plan(
        ExecRequest(
            str(_fleet(tmp_path, sshd)), ("echo", "{{ target.role }}", "on", "$FLEETRUN_TARGET")
        )
    )
    task = plan.tasks[EXEC_TASK]
    assert task.runs_on == "ssh"
    graph = expand(plan)

    async def go() -> list[TargetOutcome]:
        ex = SSHExecutor()
        try:

            async def one(target: str) -> TargetOutcome:
                t = plan.targets[target]
                a = attempt(
                    tmp_path,
                    target,
                    task.run.render(t, plan.vars),
                    t.attributes()["ssh"],
                    task=EXEC_TASK,
                )
                t0 = time.monotonic()
                r = await ex.run(a)
                return TargetOutcome(
                    target,
                    r.exit_code,
                    r.signal,
                    r.timed_out,
                    r.reason,
                    r.error_kind,
                    time.monotonic() - t0,
                    _read(a.log_path),
                )

            return list(await asyncio.gather(*(one(n.target or "") for n in graph.nodes)))
        finally:
            await ex.aclose()

    outcomes = asyncio.run(go())
    assert [o.output for o in outcomes] == ["web on web1\n", "web on web2\n", "db on db1\n"]
    text = render_text(outcomes)
    assert text.endswith("3 succeeded, 0 failed\n")
