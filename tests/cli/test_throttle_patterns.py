"""A plan's throttle patterns run on task output the plan does not control: a
pattern that backtracks for ever must not hang the run (real ``fleetrun apply``)."""

from __future__ import annotations

from pathlib import Path

from ._helpers import fleetrun

PLAN = """\
name: slow-pattern
targets:
  a: {}
  b: {}
pools:
  api:
    rate: 10/s
    adaptive: true
    throttle:
      exit: [75]
      output: ['(a|aa)+$']
tasks:
  call:
    for_each: all
    pools: [api]
    run: python3 -c "print('a' * 60 + '!')"; exit 3
"""


def test_a_pattern_that_backtracks_for_ever_is_said_and_the_run_ends(tmp_path: Path) -> None:
    """``(a|aa)+$`` on 60 a's and a '!' takes hours with stdlib ``re``: the run
    printed ``started`` and spun, deaf to SIGTERM and SIGINT. Each search now
    stops at its time bound: no match, said once for the pool, the pattern is
    not searched again, and the run ends with the task's own failure."""
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN, encoding="utf-8")
    res = fleetrun("apply", str(plan), "--plain", timeout=90)
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    said = "throttle.output '(a|aa)+$' took over 2s on an attempt's output: no match, and not"
    assert out.count(said) == 1, out
    assert "Traceback" not in out
    assert "2 failed" in out, out
