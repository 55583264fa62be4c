"""The shared rules of the text views: durations, state order, environment names."""

from __future__ import annotations

import pytest

from fleetrun import executors, report
from fleetrun.errors import UsageError
from fleetrun.names import env_name
from fleetrun.report import STATE_ORDER, format_duration, outputs_env
from fleetrun.state import InstanceRecord


@pytest.mark.parametrize(
    ("seconds", "plain", "fine"),
    [
        (0.0, "0.0s", "0.00s"),
        (0.4, "0.4s", "0.40s"),
        (2.5, "2.5s", "2.50s"),
        (9.994, "10.0s", "9.99s"),
        (12.34, "12.3s", "12.3s"),
        (245.0, "4m05s", "4m05s"),
        (3725.0, "1h02m", "1h02m"),
    ],
)
def test_one_duration_format(seconds: float, plain: str, fine: str) -> None:
    assert format_duration(seconds) == plain
    assert format_duration(seconds, fine=True) == fine


def test_one_state_order_of_final_states() -> None:
    assert STATE_ORDER == (
        "succeeded", "reused", "failed", "skipped", "cancelled", "interrupted", "not_started",
    )  # fmt: skip
    assert report.summary_text({"not_started": 1, "interrupted": 2}, 1.0, 1.0, 3).startswith(
        "2 interrupted, 1 not started (of 3)"
    )


@pytest.mark.parametrize(
    ("parts", "name"),
    [
        (("deploy", "eu-west", "url"), "DEPLOY_EU_WEST_URL"),
        (("build", "", "version"), "BUILD_VERSION"),
        (("t", "r\u00e9gion", "k.v"), "T_R_GION_K_V"),
        (("ccip-router",), "CCIP_ROUTER"),
    ],
)
def test_one_environment_name_rule(parts: tuple[str, ...], name: str) -> None:
    assert env_name(*parts) == name
    # The variables a task receives follow the same rule, part by part.
    assert "_".join(executors.env_name(p) for p in parts if p) == name


def test_outputs_env_uses_the_rule() -> None:
    i = InstanceRecord(
        run_id="r", key="deploy@r\u00e9gion-1", node=0, task="deploy", target="r\u00e9gion-1",
        status="succeeded", command_hash=None, exit_code=0, outputs={"url": "a b"}, reason="",
        attempts=1, started_at=0.0, ended_at=1.0,
    )  # fmt: skip
    assert outputs_env([i]) == "DEPLOY_R_GION_1_URL='a b'\n"


def test_outputs_env_refuses_two_values_that_meet_on_one_name() -> None:
    def rec(target: str) -> InstanceRecord:
        return InstanceRecord(
            run_id="r", key=f"pub@{target}", node=0, task="pub", target=target,
            status="succeeded", command_hash=None, exit_code=0, outputs={"who": target},
            reason="", attempts=1, started_at=0.0, ended_at=1.0,
        )  # fmt: skip

    with pytest.raises(UsageError) as e:
        outputs_env([rec("prod/eu"), rec("prod_eu")])
    assert e.value.exit_code == 2
    assert str(e.value) == (
        "pub@prod/eu output 'who' and pub@prod_eu output 'who' would both be written as "
        "PUB_PROD_EU_WHO, and one would hide the other; use --format json, which keeps "
        "them apart"
    )
