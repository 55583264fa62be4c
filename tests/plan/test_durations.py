"""One duration rule: the plan loader, the plan's JSON Schema, ``exec --timeout``,
``prune --older-than`` and every view read and write durations the same way."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
from click.testing import CliRunner

from fleetrun import durations, plan, report
from fleetrun.cli import cli
from fleetrun.cli._admin_cmds import parse_age
from fleetrun.durations import DURATION_PATTERN, format_duration, parse_duration
from fleetrun.errors import PlanError, UsageError

# text -> seconds (None: not a duration)
CASES: list[tuple[str, float | None]] = [
    ("30s", 30.0),
    ("5m", 300.0),
    ("1h30m", 5400.0),
    ("1h 30m", 5400.0),
    ("250ms", 0.25),
    ("2d", 172800.0),
    ("1w", 604800.0),
    ("1d12h", 129600.0),
    ("0.5s", 0.5),
    ("7", 7.0),
    ("2.5", 2.5),
    ("5x", None),
    ("m", None),
    ("1m5", None),
    ("-5s", None),
    ("-5", None),
    ("1e3", None),
    ("", None),
]


def _timeout_plan(value: object) -> str:
    return json.dumps({"name": "d", "tasks": {"t": {"run": "true", "timeout": value}}})


@pytest.mark.parametrize(("text", "seconds"), CASES)
def test_the_parser_the_loader_and_the_schema_agree(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == seconds
    assert plan.parse_duration(text) == seconds  # the plan's name is the same function
    schema_ok = jsonschema.Draft202012Validator(plan.plan_json_schema()).is_valid(
        json.loads(_timeout_plan(text))
    )
    assert schema_ok == (seconds is not None)
    if seconds is None:
        with pytest.raises(PlanError, match=r"is not a duration|is below zero"):
            plan.load_plan_text(_timeout_plan(text))
    else:
        assert plan.load_plan_text(_timeout_plan(text)).tasks["t"].timeout == seconds


def test_the_schema_holds_the_parsers_own_pattern() -> None:
    text = json.dumps(plan.plan_json_schema())
    assert json.dumps(DURATION_PATTERN) in text
    assert re.fullmatch(DURATION_PATTERN, " 1h 30m ") is not None


@pytest.mark.parametrize(
    ("text", "seconds"), [c for c in CASES if not durations.is_plain_number(c[0])]
)
def test_prune_ages_are_plan_durations(text: str, seconds: float | None) -> None:
    if seconds is None:
        with pytest.raises(UsageError, match="--older-than"):
            parse_age(text)
    else:
        assert parse_age(text) == seconds


@pytest.mark.parametrize("bare", ["7", "30", " 2.5 "])
def test_a_plain_number_is_refused_by_prune_naming_the_units(bare: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_age(bare)
    shown = bare.strip()
    assert str(e.value) == (
        f"--older-than {shown}: give a unit, e.g. {shown}d (units: ms, s, m, h, d, w)"
    )
    assert parse_duration(bare, unitless=False) is None
    assert parse_duration(bare) == float(bare)  # seconds where a plain number is taken


def test_prune_refuses_a_plain_number_with_exit_2_and_one_line(tmp_path: object) -> None:
    res = CliRunner().invoke(cli, ["prune", "--older-than", "7", "--state-dir", str(tmp_path)])
    assert res.exit_code == 2
    assert res.output == (
        "error: --older-than 7: give a unit, e.g. 7d (units: ms, s, m, h, d, w)\n"
    )


@pytest.mark.parametrize(
    ("seconds", "clock", "fine", "compact"),
    [
        (0.0, "0.0s", "0.00s", "0s"),
        (0.4, "0.4s", "0.40s", "0.4s"),
        (2.5, "2.5s", "2.50s", "2.5s"),
        (9.994, "10.0s", "9.99s", "9.99s"),
        (12.34, "12.3s", "12.3s", "12s"),
        (45.0, "45.0s", "45.0s", "45s"),
        (245.0, "4m05s", "4m05s", "4m 5s"),
        (300.0, "5m00s", "5m00s", "5m"),
        (3725.0, "1h02m", "1h02m", "1h 2m"),
        (7200.0, "2h00m", "2h00m", "2h"),
        (None, "-", "-", "-"),
    ],
)
def test_one_formatter_in_three_shapes(
    seconds: float | None, clock: str, fine: str, compact: str
) -> None:
    assert format_duration(seconds) == clock
    assert format_duration(seconds, fine=True) == fine
    assert format_duration(seconds, compact=True) == compact


@pytest.mark.parametrize("seconds", [0.25, 2.5, 45.0, 90.0, 750.0, 3600.0, 5400.0, 86400.0])
def test_what_is_written_reads_back(seconds: float) -> None:
    # Every shape is itself a duration the parser takes, and reads back as the
    # value to the shape's precision.
    for shape, tolerance in (({}, 60.0), ({"fine": True}, 60.0), ({"compact": True}, 1.0)):
        text = format_duration(seconds, **shape)  # type: ignore[arg-type]
        back = parse_duration(text)
        assert back is not None, text
        assert abs(back - seconds) <= tolerance, (shape, text)


def test_the_views_use_the_one_formatter() -> None:
    assert report.format_duration is format_duration
    g = plan.expand(plan.load_plan_text(
        "name: v\ntasks:\n  a: {run: 'true', estimate: 750}\n  b: {run: 'true', needs: [a], "
        "estimate: 1h30m}\n"
    ))  # fmt: skip
    text = plan.render_text(g, None)
    assert f"critical path ({format_duration(6150.0, compact=True)})" in text
    assert "critical path (1h 42m)" in text


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        (365 * 86400, True),
        (365 * 86400 + 1, False),
        ("365d", True),
        ("366d", False),
        ("53w", False),
    ],
)
def test_a_plan_takes_durations_up_to_a_year(value: object, accepted: bool) -> None:
    schema_ok = jsonschema.Draft202012Validator(plan.plan_json_schema()).is_valid(
        json.loads(_timeout_plan(value))
    )
    if isinstance(value, int):  # the schema can bound numbers, not the text of durations
        assert schema_ok == accepted
    if accepted:
        assert plan.load_plan_text(_timeout_plan(value)).tasks["t"].timeout == 365 * 86400
    else:
        with pytest.raises(PlanError, match=r"is over a year, the longest duration a plan takes"):
            plan.load_plan_text(_timeout_plan(value))
