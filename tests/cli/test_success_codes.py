"""``success:``: which exit codes count as success and which output means failure.

A status check whose "stopped" is exit 3 succeeds with ``success: {exit: [0, 3]}``
and is recorded as it is (exit 3, ``exit 3 accepted``); ``fail_on_output`` fails
an attempt whose output holds a text, whatever its exit code. The verdict is
the engine's, so local, SSH and cluster attempts are judged alike: each case
runs the real CLI against real processes (a loopback sshd, a local Dask cluster).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetrun.executors.testing import LoopbackSshd, available

from ._helpers import fleetrun, show_json

# a: stopped (exit 3, accepted); b: running (exit 0); c: stopped, but says ERROR.
CHECK = (
    "echo checking {{ target.name }}; "
    'if [ {{ target.name }} = c ]; then echo "ERROR: no pid file"; fi; '
    "[ {{ target.name }} = b ] || exit 3"
)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackSshd]:
    """A real OpenSSH server on 127.0.0.1 for this module."""
    if not available():
        pytest.skip("openssh-server is not installed")
    server = LoopbackSshd.start(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()


def _targets(kind: str, request: pytest.FixtureRequest) -> str:
    if kind != "ssh":
        return "targets: {a: {}, b: {}, c: {}}\n"
    server: LoopbackSshd = request.getfixturevalue("sshd")
    cfg = json.dumps(str(server.client_config))
    return "targets:\n" + "".join(
        f"  {t}: {{ssh: {{host: node-00{i}, config_file: {cfg}}}}}\n" for i, t in enumerate("abc")
    )


def _states(state: Path) -> dict[str, tuple[str, int | None, str]]:
    return {
        i["key"]: (i["status"], i["exit_code"], i["reason"]) for i in show_json(state)["instances"]
    }


@pytest.mark.parametrize("kind", ["local", "ssh", "cluster"])
def test_accepted_codes_and_failing_output_on_every_executor(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "name: status\n"
        + _targets(kind, request)
        + ("cluster: {workers: 1}\n" if kind == "cluster" else "")
        + "defaults:\n  success: {exit: [0, 3], fail_on_output: ['ERROR']}\n"
        + f"tasks:\n  status: {{for_each: all, runs_on: {kind}, run: {json.dumps(CHECK)}}}\n"
    )
    state = tmp_path / "st"
    res = fleetrun("apply", str(plan), "--state-dir", str(state), "--plain")
    assert res.returncode == 1, res.stdout + res.stderr
    states = _states(state)
    assert states["status@a"] == ("succeeded", 3, "exit 3 accepted")
    assert states["status@b"] == ("succeeded", 0, "")
    status, code, reason = states["status@c"]
    assert (status, code) == ("failed", 3)
    assert reason == "exit 3, but the output has 'ERROR' (success.fail_on_output)"
    assert "succeeded  status@a" in res.stdout
    assert "(exit 3 accepted)" in res.stdout
    assert "2 succeeded, 1 failed" in res.stdout


def test_a_status_check_that_answers_stopped_succeeds(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "targets: {a: {}, b: {}}\n"
        "tasks:\n"
        "  status: {for_each: all, run: 'exit 3', success: {exit: [0, 3]}}\n"
        "  strict: {run: 'exit 3', needs: [status]}\n"
    )
    state = tmp_path / "st"
    res = fleetrun("apply", str(plan), "--state-dir", str(state), "--plain")
    assert res.returncode == 1, res.stdout + res.stderr
    states = _states(state)
    assert states["status@a"] == ("succeeded", 3, "exit 3 accepted")
    assert states["status@b"] == ("succeeded", 3, "exit 3 accepted")
    # A task without the rule keeps the default: exit 3 fails it, and only it is retried.
    assert states["strict"][:2] == ("failed", 3)
    assert "re-runs the 1 that did not succeed" in res.stdout
    text = fleetrun("show", "--state-dir", str(state)).stdout
    row = next(line.split() for line in text.splitlines() if line.startswith("status@a"))
    assert row[1] == "succeeded"
    assert row[4:] == ["3", "exit", "3", "accepted"]


def test_task_keys_override_defaults_and_exit_zero_may_fail(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "defaults:\n  success: {exit: [0, 3], fail_on_output: ERROR}\n"
        "tasks:\n"
        # Only exit 4 counts here; the output rule comes from the defaults.
        "  only4: {run: 'echo fine', success: {exit: 4}, retry: 2}\n"
        "  clean: {run: 'echo ERROR; exit 4', success: {exit: 4, fail_on_output: []}}\n"
        "  three: {run: 'echo ERROR; exit 3'}\n"
    )
    state = tmp_path / "st"
    res = fleetrun("apply", str(plan), "--state-dir", str(state), "--plain")
    assert res.returncode == 1, res.stdout + res.stderr
    states = _states(state)
    why = "exit 0, not a success code here (success.exit: 4)"
    assert states["only4"] == ("failed", 0, why)
    assert states["clean"] == ("succeeded", 4, "exit 4 accepted")
    assert states["three"][:2] == ("failed", 3)
    # The failure the rule made is retried as retry says, in the rule's words.
    assert "retrying   only4 in" in res.stdout
    assert f"({why})" in res.stdout


def test_outputs_of_a_failed_exit_zero_are_not_passed_on(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "tasks:\n"
        "  make: {run: 'echo addr=1 >> \"$FLEETRUN_OUTPUT\"; echo ERROR',"
        " success: {fail_on_output: ERROR}}\n"
        "  use: {needs: [make], run: 'echo {{ tasks.make.outputs.addr }}'}\n"
    )
    state = tmp_path / "st"
    res = fleetrun("apply", str(plan), "--state-dir", str(state), "--plain")
    assert res.returncode == 1, res.stdout + res.stderr
    data: dict[str, Any] = show_json(state)
    by_key = {i["key"]: i for i in data["instances"]}
    assert by_key["make"]["status"] == "failed"
    assert by_key["make"]["outputs"] == {}
    assert by_key["use"]["status"] == "skipped"
