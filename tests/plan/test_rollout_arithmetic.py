"""Rollout arithmetic is exact: wave sizes and max_failed thresholds, read from
the plan's text, equal the integer formulas of Ansible's ``serial`` and
``max_fail_percentage`` for every fleet size from 1 to 200."""

from __future__ import annotations

from fractions import Fraction

import pytest

from fleetrun.engine.testing import plan, task
from fleetrun.errors import PlanError
from fleetrun.plan import Rollout, allowed_failures, load_plan_text, wave_targets

FLEET = [f"t{i:03d}" for i in range(200)]

# Whole percentages, and decimals whose float products land just under an integer.
PERCENTS = [str(p) for p in range(1, 101)] + ["0.5", "12.5", "14.3", "28.6", "33.3", "57.1"]


def _hundredths(text: str) -> Fraction:
    """``text`` percent as an exact fraction of 1, from its digits."""
    whole, _, frac = text.partition(".")
    return Fraction(int(whole + frac), 100 * 10 ** len(frac))


def _rollout(waves: str, max_failed: str = "0") -> Rollout:
    """The plan loader's reading of ``rollout`` (as a user writes it)."""
    p = load_plan_text(
        "targets: {a: {}}\n"
        f"rollout: {{waves: [{waves}], max_failed: {max_failed}}}\n"
        "tasks: {t: {run: x, for_each: all}}\n"
    )
    assert p.rollout is not None
    return p.rollout


@pytest.fixture(scope="module")
def fleets() -> dict[int, object]:
    return {n: plan([task("t", "x", targets=FLEET[:n])], targets=FLEET[:n]) for n in range(1, 201)}


@pytest.mark.parametrize("pct", PERCENTS)
def test_a_percentage_wave_is_the_truncated_share_of_the_fleet_at_least_one(
    pct: str, fleets: dict[int, object]
) -> None:
    rollout = _rollout(f"'{pct}%'")
    share = _hundredths(pct)
    wrong = []
    for n, p in fleets.items():
        size = max(1, share.numerator * n // share.denominator)
        waves = wave_targets(p, rollout)  # type: ignore[arg-type]
        expected = [size] * (n // size) + ([n % size] if n % size else [])
        if [len(w) for w in waves] != expected:
            wrong.append((n, [len(w) for w in waves][:3], expected[:3]))
        assert [t for w in waves for t in w] == FLEET[:n]  # every target once, in order
    assert wrong == [], f"{pct}% of n targets"


@pytest.mark.parametrize("pct", PERCENTS)
def test_max_failed_halts_on_more_than_the_percentage_never_on_exactly_it(pct: str) -> None:
    rollout = _rollout("1", f"'{pct}%'")
    share = _hundredths(pct)
    wrong = []
    for size in range(1, 201):
        allowed = allowed_failures(rollout, size)
        # "More than p% failed": failed / size > p / 100, in integers.
        for failed in range(size + 1):
            halts = failed > allowed
            if halts != (failed * share.denominator > share.numerator * size):
                wrong.append((size, failed, allowed))
                break
    assert wrong == [], f"max_failed {pct}%"


def test_a_count_of_max_failed_allows_exactly_that_many() -> None:
    rollout = _rollout("1", "3")
    assert rollout.max_failed == 3
    assert [allowed_failures(rollout, size) for size in (1, 4, 100)] == [3, 3, 3]


@pytest.mark.parametrize("text", ["'1/4%'", "'1e1%'", "'-5%'", "'0%'", "'100.5%'", "'%'"])
def test_a_percentage_is_a_plain_decimal_in_range(text: str) -> None:
    with pytest.raises(PlanError) as err:
        _rollout(text)
    assert "<string>:2:" in str(err.value)
    assert "is not a wave size" in str(err.value)
