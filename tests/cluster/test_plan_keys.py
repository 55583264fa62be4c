"""The plan's compute-cluster keys: ``runs_on: cluster``, ``resources``, ``cluster:``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fleetrun.errors import PlanError
from fleetrun.plan import load_plan_text
from fleetrun.plan._model import ClusterSection
from fleetrun.runs_on import ClusterOptions, LocalOptions


def test_cluster_section_and_task_resources() -> None:
    plan = load_plan_text(
        "cluster: {address: '10.0.0.5:50055', workers: 4}\n"
        "tasks:\n"
        "  prove: {run: prove, runs_on: cluster, resources: {GPU: 1, MEM: 0.5}}\n"
        "  here: {run: 'true'}\n"
    )
    assert plan.cluster == ClusterSection(address="tcp://10.0.0.5:50055", workers=4)
    assert plan.tasks["prove"].runs_on == "cluster"
    assert plan.tasks["prove"].executor_options == ClusterOptions(
        resources={"GPU": 1.0, "MEM": 0.5}
    )
    assert plan.tasks["here"].runs_on == "local"
    assert plan.tasks["here"].executor_options == LocalOptions()


def test_no_cluster_section_means_an_embedded_cluster_of_two() -> None:
    plan = load_plan_text("tasks:\n  a: {run: 'true', runs_on: cluster}\n")
    assert plan.cluster == ClusterSection(address=None, workers=2)


def test_bad_cluster_keys_are_reported_with_their_place() -> None:
    with pytest.raises(PlanError) as e:
        load_plan_text(
            "cluster: {adress: x, workers: 0}\n"
            "tasks:\n"
            "  a: {run: 'true', runs_on: clustre, resources: {GPU: -1, 'bad name': 1}}\n"
        )
    text = [str(d) for d in e.value.diagnostics]
    assert text == [
        "<string>:1:11: cluster.adress: unknown key 'adress' (did you mean 'address'?)\n"
        "    fix: use one of: address, workers",
        "<string>:1:31: cluster.workers: must be at least 1, got 0\n    fix: write 1 or more",
        "<string>:3:29: tasks.a.runs_on: unknown executor 'clustre' (did you mean 'cluster'?)\n"
        "    fix: use one of: local, ssh, cluster",
        "<string>:3:55: tasks.a.resources.GPU: must be a number above zero, got -1\n"
        "    fix: write e.g. 1",
        "<string>:3:59: tasks.a.resources.bad name: 'bad name' is not a resource name\n"
        "    fix: use letters, digits, '_'",
    ]


def test_a_bad_address_is_reported() -> None:
    with pytest.raises(PlanError, match="is not a scheduler address"):
        load_plan_text("cluster: {address: 'not an address'}\ntasks:\n  a: {run: 'true'}\n")


def test_where_the_cluster_is_flag_then_environment_then_plan() -> None:
    from fleetrun.cluster import resolve_address

    env = {"FLEETRUN_CLUSTER": "10.0.0.7:8786"}
    assert resolve_address("tcp://a:1", "tcp://p:3", env) == "tcp://a:1"
    assert resolve_address(None, "tcp://p:3", env) == "tcp://10.0.0.7:8786"
    assert resolve_address(None, "tcp://p:3", {}) == "tcp://p:3"
    assert resolve_address(None, None, {}) is None


def test_resources_belong_to_cluster_tasks_only() -> None:
    with pytest.raises(PlanError) as e:
        load_plan_text("tasks:\n  a: {run: 'true', resources: {GPU: 1}}\n")
    assert e.value.exit_code == 2
    assert [str(d) for d in e.value.diagnostics] == [
        "<string>:2:31: tasks.a.resources: resources is read only by runs_on: cluster; "
        "this task runs on local\n    fix: remove resources, or set runs_on: cluster"
    ]


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("foo:bar", "port 'bar' is not a number from 1 to 65535"),
        ("tcp://", "no host and port"),
        ("http://x:1", "unknown scheme http://"),
        ("tcp://127.0.0.1:99999", "port '99999' is not a number from 1 to 65535"),
        ("::::", "an IPv6 host goes in brackets, e.g. [::1]:8786"),
        ("[::1:8786", "an unclosed [ in the host"),
        ("10.0.0.5", "no host and port"),
        ("a b:1", "it holds white space"),
    ],
)
def test_a_malformed_address_is_named_with_its_problem(address: str, problem: str) -> None:
    from fleetrun.cluster import resolve_address
    from fleetrun.errors import UsageError

    with pytest.raises(UsageError) as flag:
        resolve_address(address, None, {})
    assert flag.value.exit_code == 2
    assert str(flag.value) == (
        f"--cluster: {address!r} is not a scheduler address ({problem}); "
        "give HOST:PORT or tcp://HOST:PORT, e.g. tcp://10.0.0.5:8786"
    )
    with pytest.raises(UsageError, match=r"^\$FLEETRUN_CLUSTER: "):
        resolve_address(None, None, {"FLEETRUN_CLUSTER": address})
    with pytest.raises(PlanError) as plan:
        load_plan_text(f"cluster: {{address: {address!r}}}\ntasks:\n  a: {{run: 'true'}}\n")
    assert f"is not a scheduler address ({problem})" in str(plan.value.diagnostics[0])


@pytest.mark.parametrize(
    ("address", "resolved"),
    [
        ("10.0.0.5:8786", "tcp://10.0.0.5:8786"),
        ("coordinator.example:50055", "tcp://coordinator.example:50055"),
        ("[::1]:8786", "tcp://[::1]:8786"),
        ("tls://10.0.0.5:8786", "tls://10.0.0.5:8786"),
        ("inproc://10.0.0.5/1/2", "inproc://10.0.0.5/1/2"),
    ],
)
def test_good_addresses_pass(address: str, resolved: str) -> None:
    from fleetrun.cluster import resolve_address

    assert resolve_address(address, None, {}) == resolved


def test_a_malformed_cluster_flag_is_one_line_and_exit_2(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("tasks:\n  a: {run: 'true', runs_on: cluster}\n")
    done = subprocess.run(
        [sys.executable, "-m", "fleetrun", "apply", str(plan), "--plain", "--cluster", "foo:bar"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: --cluster: 'foo:bar' is not a scheduler address (port 'bar' is not a number "
        "from 1 to 65535); give HOST:PORT or tcp://HOST:PORT, e.g. tcp://10.0.0.5:8786"
    ]
