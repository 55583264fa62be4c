"""The plan side of SSH targets: ``ssh`` attributes, ``ssh:`` defaults, ``script:``, retry."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from fleetrun.errors import PlanError
from fleetrun.executors import SSHSpec
from fleetrun.plan import load_plan
from fleetrun.runs_on import SSHOptions


def _plan(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "plan.yaml"
    p.write_text(text)
    return p


def test_ssh_attribute_forms_and_defaults(tmp_path: Path) -> None:
    plan = load_plan(
        _plan(
            tmp_path,
            """
ssh: {user: ops, identity_file: keys/id_ops, known_hosts: accept-new, connect_timeout: 5s}
targets:
  web1: {ssh: "deploy@10.0.0.1:2222", role: web}
  web2: {ssh: {host: web2.example.com, jump: "bastion:22", known_hosts: kh}}
  web3: {role: web}
tasks:
  status: {for_each: all, runs_on: ssh, run: "systemctl is-active app",
           retry: {attempts: 3, on: {connect: true}}}
""",
        )
    )
    t = plan.targets
    assert t["web1"].ssh == {
        "user": "deploy",
        "identity_file": str(tmp_path / "keys/id_ops"),
        "known_hosts": "accept-new",
        "connect_timeout": 5.0,
        "host": "10.0.0.1",
        "port": 2222,
    }
    assert t["web1"].attrs == {"role": "web"}
    assert t["web1"].attributes()["ssh"]["host"] == "10.0.0.1"
    assert t["web2"].ssh is not None
    assert t["web2"].ssh["known_hosts"] == str(tmp_path / "kh")
    assert t["web2"].ssh["user"] == "ops"
    # No own ssh: the defaults, reached at the target's name.
    assert t["web3"].ssh is not None
    assert "host" not in t["web3"].ssh
    spec = SSHSpec.from_attribute(t["web3"].ssh, "web3")
    assert (spec.host, spec.user, spec.accept_new, spec.connect_timeout) == (
        "web3",
        "ops",
        True,
        5.0,
    )
    spec = SSHSpec.from_attribute(t["web1"].ssh, "web1")
    assert spec.destination == "deploy@10.0.0.1:2222"
    task = plan.tasks["status"]
    assert task.runs_on == "ssh"
    assert task.retry.on_connect
    assert not task.retry.any_failure


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("targets: {a: {ssh: 'x@@y'}}\n", "cannot read the SSH destination"),
        ("targets: {a: {ssh: {host: h, port: 70000}}}\n", "port 70000 is out of range"),
        ("targets: {a: {ssh: {hots: h}}}\n", "hots"),
        ("ssh: 'root@h'\ntargets: {a: {}}\n", "a mapping of SSH settings"),
    ],
)
def test_bad_ssh_settings(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(PlanError) as err:
        load_plan(_plan(tmp_path, text + "tasks: {t: {run: 'true'}}\n"))
    assert message in str(err.value)


def test_runs_on_ssh_needs_targets(tmp_path: Path) -> None:
    with pytest.raises(PlanError) as err:
        load_plan(_plan(tmp_path, "tasks: {t: {run: 'true', runs_on: ssh}}\n"))
    assert "has no for_each" in str(err.value)


def test_script_task(tmp_path: Path) -> None:
    (tmp_path / "checks").mkdir()
    (tmp_path / "checks" / "health.sh").write_text('#!/bin/sh\necho "health of $1"\n')
    plan = load_plan(
        _plan(
            tmp_path,
            """
targets: {"db 1": {}}
tasks:
  check: {for_each: all, runs_on: ssh, script: "checks/health.sh {{ target.name }} --fast"}
""",
        )
    )
    task = plan.tasks["check"]
    assert task.script is not None
    path = str(tmp_path / "checks" / "health.sh")
    assert task.script.path == path
    assert task.script.text.startswith("#!/bin/sh")
    assert task.executor_options == SSHOptions(script=task.script)
    rendered = task.run.render(plan.targets["db 1"], plan.vars)
    assert rendered == f"sh {shlex.quote(path)} 'db 1' --fast"


def test_script_errors(tmp_path: Path) -> None:
    with pytest.raises(PlanError) as err:
        load_plan(_plan(tmp_path, "tasks: {t: {script: missing.sh}}\n"))
    assert "cannot read the script" in str(err.value)
    (tmp_path / "s.sh").write_text("true\n")
    with pytest.raises(PlanError) as err:
        load_plan(_plan(tmp_path, "tasks: {t: {script: s.sh, run: 'true'}}\n"))
    assert "'run' or 'script', not both" in str(err.value)
