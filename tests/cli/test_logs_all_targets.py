"""``fleetrun logs TASK`` of a fanned-out task: every target's log, in fleet order.

Each log comes under a header naming the instance, how it ended and the attempt
shown; an instance reused by a retry shows the log of the run that ran it, one
that never ran shows its reason. ``TASK@TARGET`` and unfanned tasks are as before.
"""

from __future__ import annotations

import json
from pathlib import Path

from ._helpers import fleetrun


def _plan(tmp_path: Path) -> Path:
    flag = tmp_path / "fail-c"
    flag.write_text("")
    plan = tmp_path / "plan.yaml"
    # Fleet order b, a, c (not sorted); c fails while its flag file exists.
    plan.write_text(
        "targets: {b: {}, a: {}, c: {}}\n"
        "tasks:\n"
        "  hello: {for_each: all, run: 'echo hello from {{ target.name }}; "
        f"test ! -e {tmp_path}/fail-{{{{ target.name }}}}'}}\n"
        "  after: {for_each: all, needs: [hello], run: 'echo after {{ target.name }}'}\n"
        "  once: {run: 'echo just once'}\n"
    )
    return plan


def _headers(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("── ")]


def test_every_targets_log_in_fleet_order_under_a_header(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    state = ("--state-dir", str(tmp_path / "st"))
    assert fleetrun("apply", str(plan), *state, "--plain").returncode == 1
    res = fleetrun("logs", "hello", *state)
    assert res.returncode == 0, res.stderr
    heads = _headers(res.stdout)
    assert [h.split()[1] for h in heads] == ["hello@b", "hello@a", "hello@c"]
    assert "succeeded, attempt 1, exit 0" in heads[0]
    assert "failed, attempt 1, exit 1" in heads[2]
    body = res.stdout.splitlines()
    for target in ("b", "a", "c"):
        at = body.index(next(h for h in heads if f"hello@{target} " in h))
        assert body[at + 1] == f"hello from {target}"
    # Never ran: the header says why, and no body follows.
    after = fleetrun("logs", "after", *state)
    heads = _headers(after.stdout)
    assert heads[2].startswith("── after@c ── skipped: needs hello@c, which failed")
    assert after.stdout.count("after ") == 2
    # One instance, and an unfanned task, as before.
    one = fleetrun("logs", "hello@a", *state)
    assert one.stdout == "hello from a\n"
    assert fleetrun("logs", "once", *state).stdout == "just once\n"
    follow = fleetrun("logs", "hello", "-f", *state)
    assert follow.returncode == 2
    assert "name it TASK@TARGET" in follow.stderr


def test_after_a_retry_reused_targets_show_the_run_that_ran_them(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    state = ("--state-dir", str(tmp_path / "st"))
    assert fleetrun("apply", str(plan), *state, "--plain").returncode == 1
    first = json.loads(fleetrun("logs", "hello", *state, "--format", "json").stdout)
    (tmp_path / "fail-c").unlink()
    assert fleetrun("retry", *state, "--plain").returncode == 0
    res = fleetrun("logs", "hello", *state, "--format", "json")
    assert res.returncode == 0, res.stderr
    logs = json.loads(res.stdout)
    assert [entry["key"] for entry in logs] == ["hello@b", "hello@a", "hello@c"]
    assert [entry["text"] for entry in logs] == [f"hello from {t}\n" for t in "bac"]
    first_run = first[0]["run"]
    assert [entry["run"] == first_run for entry in logs] == [True, True, False]
    text = fleetrun("logs", "hello", *state).stdout
    assert f"in run {first_run}" in _headers(text)[0]
