"""On a full disk the console says only what the record holds: a state it shows
for an instance is the state ``show`` gives it, and what the journal could not
record is named as such (``not on record: ...``), never shown as if it were.

The full disk is a real 2 MB tmpfs mounted for the test (see
``test_record_disk``; skipped where mounting is not allowed). The unit tests
below drive ``RecordFirst`` (the relay between the journal's writer and the
console) directly with batches committed or not.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from fleetrun.engine import AttemptEnded, AttemptOutput, AttemptStarted, Event, InstanceSettled
from fleetrun.engine import RunEnded as RunEndedEvent
from fleetrun.state._relay import RecordFirst

from ._helpers import fleetrun
from .test_record_disk import BIG, _grow, _tmpfs

_LINE = re.compile(r"^\d\d:\d\d:\d\d (succeeded|failed|skipped|cancelled) +(\S+)")


def test_the_console_and_the_record_agree_on_a_full_disk(tmp_path: Path) -> None:
    plan = tmp_path / "big.yaml"
    plan.write_text(BIG)
    with _tmpfs(tmp_path / "st", "2m") as state:
        res = fleetrun("apply", str(plan), "--state-dir", str(state), "--plain",
                       extra_env={"FLEETRUN_MIN_FREE_MB": "0"})  # fmt: skip
        assert res.returncode == 1, res.stdout + res.stderr
        assert "database or disk is full" in res.stderr
        _grow(state, "32m")
        shown = fleetrun("show", "--state-dir", str(state), "--format", "json")
        assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    record = {i["key"]: i["status"] for i in data["instances"]}
    assert data["run"]["status"] == "interrupted"
    told = {}
    missing: list[str] = []
    for line in res.stdout.splitlines():
        m = _LINE.match(line)
        if m:
            told[m[2]] = m[1]
        elif line.startswith("not on record: "):
            body = line.split(": ", 1)[1].rsplit(" (the journal could not be written", 1)[0]
            missing += re.findall(r"(?:^|, )(\S+) [a-z_]+", body)
        elif re.match(r"^\d\d:\d\d:\d\d run \S+ (succeeded|failed|interrupted)$", line):
            assert line.endswith(" interrupted"), res.stdout
    # Every state the console gave is the record's; what it could not give is
    # on record as interrupted or not started.
    assert {k: record[k] for k in told} == told, (res.stdout, record)
    assert all(record[k] in ("interrupted", "not_started") for k in missing), (res.stdout, record)
    # Every instance the journal lost is accounted for on the console.
    lost = {k for k, s in record.items() if s in ("interrupted", "not_started")}
    assert lost <= set(missing) | {k for k in record if k not in told}


# -- the relay, unit by unit -------------------------------------------------------


def _ended(
    key: str, node: int, outcome: str = "succeeded", exit_code: int | None = 0, **more: object
) -> AttemptEnded:
    fields: dict[str, object] = {"signal": None, "timed_out": False, **more}
    return AttemptEnded(
        at=1.0, node=node, key=key, attempt=1, started_at=0.5, exit_code=exit_code,
        outcome=outcome, **fields,  # type: ignore[arg-type]
    )  # fmt: skip


def _settled(key: str, node: int, state: str = "succeeded") -> InstanceSettled:
    return InstanceSettled(
        at=1.0, node=node, key=key, state=state,  # type: ignore[arg-type]
        reason="", attempts=1,
    )  # fmt: skip


def _relay(batches: list[tuple[list[Event], bool]]) -> tuple[list[Event], list[str]]:
    told: list[Event] = []
    said: list[str] = []

    async def main() -> None:
        relay = RecordFirst([told.append], asyncio.get_running_loop(), said.append)
        for events, recorded in batches:
            relay.add(events, recorded)
        await asyncio.sleep(0)
        relay.flush()

    asyncio.run(main())
    return told, said


def test_events_on_record_reach_the_console_in_order() -> None:
    started = AttemptStarted(at=0.5, node=0, key="a", attempt=1, command="x", pid=1, pgid=1,
                             log_path="l")  # fmt: skip
    out = AttemptOutput(at=0.6, node=0, key="a", attempt=1, text="hi")
    events: list[Event] = [started, out, _ended("a", 0), _settled("a", 0)]
    told, said = _relay([(events[:2], True), (events[2:], True)])
    assert told == events
    assert said == []


def test_an_end_whose_instance_was_not_recorded_is_not_shown() -> None:
    # The attempt's end made it into one batch, its instance's settling did
    # not: the record has the instance interrupted, so neither is shown.
    run_end = RunEndedEvent(at=2.0, run_id="r", status="failed", counts={"failed": 1})
    told, said = _relay(
        [([_ended("a", 0)], True), ([_settled("a", 0), _ended("b", 1, "cancelled")], False),
         ([run_end], False)]
    )  # fmt: skip
    assert [type(e).__name__ for e in told] == ["RunEnded"]
    assert isinstance(told[0], RunEndedEvent)
    assert told[0].status == "interrupted"
    assert said == [
        "not on record: a succeeded, b cancelled (the journal could not be written; "
        "`fleetrun show` has them as interrupted or not started)"
    ]


def test_output_and_starts_are_shown_even_off_record() -> None:
    started = AttemptStarted(at=0.5, node=0, key="a", attempt=1, command="x", pid=1, pgid=1,
                             log_path="l")  # fmt: skip
    out = AttemptOutput(at=0.6, node=0, key="a", attempt=1, text="hi")
    told, said = _relay([([started, out, _ended("a", 0, "failed", 3), _settled("a", 0)], False)])
    assert told == [started, out]
    assert said == [
        "not on record: a failed (exit 3) (the journal could not be written; "
        "`fleetrun show` has them as interrupted or not started)"
    ]


def test_a_failure_off_record_says_its_cause_once() -> None:
    # The line is the only place such a failure is said: it names the cause
    # in words, also for an ending without an exit code.
    ends = [
        _ended("a", 0, "failed", None, signal=9),
        _ended("b", 1, "failed", None, timed_out=True),
        _ended("c", 2, "retrying", None, reason="c: 127.0.0.1:1: connection refused"),
        _ended("d", 3, "failed", None),
        _ended("e", 4, "cancelled", None),
    ]
    told, said = _relay([(ends, False)])
    assert told == []
    assert said == [
        "not on record: a failed (killed by signal 9 (SIGKILL)), b failed (timed out), "
        "c retrying (c: 127.0.0.1:1: connection refused), "
        "d failed (ended without an exit code), e cancelled "
        "(the journal could not be written; `fleetrun show` has them as interrupted or not started)"
    ]


def test_a_follower_that_raises_is_raised_again_after_the_run() -> None:
    told: list[Event] = []

    def broken(ev: Event) -> None:
        raise ValueError("console bug")

    async def main() -> None:
        relay = RecordFirst([broken, told.append], asyncio.get_running_loop(), print)
        relay.add([_ended("a", 0), _settled("a", 0), _ended("b", 1), _settled("b", 1)], True)
        await asyncio.sleep(0)
        with pytest.raises(ValueError, match="console bug"):
            relay.flush()

    asyncio.run(main())
    assert [e.key for e in told if isinstance(e, AttemptEnded)] == ["a", "b"]
