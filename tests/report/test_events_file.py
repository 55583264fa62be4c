"""``EventsFile`` on a real run: one JSON object per line, in order, redacted."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from fleetrun.engine import (
    AttemptStarted,
    Event,
    InstanceSettled,
    RunEnded,
    RunOptions,
    RunResult,
    RunStarted,
    run_graph,
)
from fleetrun.engine.testing import graph, task
from fleetrun.errors import FleetrunError, UsageError
from fleetrun.executors import LocalExecutor
from fleetrun.plan._model import RetryPolicy
from fleetrun.redact import Redactor
from fleetrun.report._events_file import EventsFile, event_fields

PY = sys.executable
SECRET = "hunter2-s3cr3t"
ODD_SECRET = 'pa"ss\\wörd-42'  # a quote, a backslash and non-ASCII: escaped in JSON

FIELDS = {
    "RunStarted": ["run_id", "plan_name", "mode", "parallelism", "nodes"],
    "InstanceReused": ["node", "key", "outputs"],
    "AttemptStarted": [
        "node", "key", "attempt", "command", "pid", "pgid", "log_path", "executor", "host", "job",
        "ready_at", "queued_reason",
    ],
    "AttemptOutput": ["node", "key", "attempt", "text"],
    "AttemptEnded": [
        "node", "key", "attempt", "started_at", "exit_code", "signal", "timed_out", "outcome",
        "retry_reason", "retry_delay", "tail", "throttled", "error_kind", "left_running",
        "reason", "remote",
    ],
    "InstanceSettled": ["node", "key", "state", "reason", "attempts", "outputs"],
    "PoolChanged": ["pool", "rate", "reason", "concurrency", "paused"],
    "RunEnded": ["run_id", "status", "counts"],
}  # fmt: skip
"""The documented line format: keys after ``type`` and ``at``, in order."""


def _run(tmp_path: Path, path: Path, hook: Any = None) -> tuple[RunResult, list[Event]]:
    # A secret split across two writes, in a failing task's tail and its command;
    # an odd secret in a published output; a retry; a skipped dependent.
    split = (
        f"{PY} -c \"import sys, time; s = {SECRET!r}; print('a', s[:5], end='', flush=True); "
        "time.sleep(0.2); print(s[5:] + ' b', flush=True); sys.exit(2)\""
    )
    publish = tmp_path / "publish.py"
    publish.write_text(
        f"import os\nopen(os.environ['FLEETRUN_OUTPUT'], 'w').write({f'v=x {ODD_SECRET} y'!r})\n"
    )
    g = graph(
        [
            task("leaky", f"{split} # {SECRET}"),
            task("after", "echo never", needs=["leaky"]),
            task("publish", f"{PY} {publish}"),
            task("fan", "echo fan $FLEETRUN_TARGET", targets=["a", "b", "c"]),
            task(
                "flaky",
                'test "$FLEETRUN_ATTEMPT" = 2',
                retry=RetryPolicy(attempts=2, backoff=0.0),
            ),
        ]
    )
    events: list[Event] = []
    ef = EventsFile(path, Redactor([SECRET, ODD_SECRET]))

    def collect(ev: Event) -> None:
        events.append(ev)
        if hook is not None:
            hook(ev)

    options = RunOptions(
        run_id="ev-run",
        run_dir=tmp_path / "run",
        grace=2.0,
        output="stream",
        redactor=Redactor([SECRET, ODD_SECRET]),
        seed=1,
    )

    async def main() -> RunResult:
        return await run_graph(g, options, LocalExecutor(), [collect, ef])

    try:
        result = asyncio.run(main())
    finally:
        ef.close()
    return result, events


def test_every_event_is_one_json_line_in_order(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    seen_on_disk: dict[str, bool] = {}

    def hook(ev: Event) -> None:
        # When an instance settles, its attempt's start (an earlier loop turn)
        # is already on disk for a follower to see.
        if isinstance(ev, InstanceSettled) and ev.attempts:
            seen_on_disk[ev.key] = f'"key":"{ev.key}","attempt":1,' in path.read_text()

    result, events = _run(tmp_path, path, hook)
    assert result.status == "failed"
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    lines = [json.loads(line) for line in raw.decode().split("\n")[:-1]]
    assert all(isinstance(x, dict) for x in lines)
    # The same events, in the same order, with the documented keys in order.
    assert [x["type"] for x in lines] == [type(e).__name__ for e in events]
    for x, e in zip(lines, events, strict=True):
        assert list(x) == ["type", "at", *FIELDS[x["type"]]]
        assert x["at"] == e.at
    assert lines[0]["type"] == "RunStarted"
    assert lines[-1]["type"] == "RunEnded"
    assert lines[0]["nodes"] == 7
    # Every attempt that started ended, after it started.
    started = {
        (x["key"], x["attempt"]): i for i, x in enumerate(lines) if x["type"] == "AttemptStarted"
    }
    ended = {
        (x["key"], x["attempt"]): i for i, x in enumerate(lines) if x["type"] == "AttemptEnded"
    }
    assert started.keys() == ended.keys()
    assert all(started[k] < ended[k] for k in started)
    assert len(started) == 7  # 6 instances ran, flaky twice
    # Counts agree with the run's result.
    assert lines[-1]["counts"] == result.counts == {"succeeded": 5, "failed": 1, "skipped": 1}
    settled = [x for x in lines if x["type"] == "InstanceSettled"]
    assert len(settled) == 7
    assert {x["key"]: x["state"] for x in settled} == {
        "leaky": "failed", "after": "skipped", "publish": "succeeded",
        "fan@a": "succeeded", "fan@b": "succeeded", "fan@c": "succeeded",
        "flaky": "succeeded",
    }  # fmt: skip
    outcomes = [
        (x["key"], x["attempt"], x["outcome"]) for x in lines if x["type"] == "AttemptEnded"
    ]
    assert ("flaky", 1, "retrying") in outcomes
    assert ("flaky", 2, "succeeded") in outcomes
    assert seen_on_disk == dict.fromkeys(
        ["leaky", "publish", "fan@a", "fan@b", "fan@c", "flaky"], True
    )


def test_secrets_are_redacted_and_lines_stay_valid_json(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    _, events = _run(tmp_path, path)
    raw = path.read_bytes()
    for secret in (SECRET, ODD_SECRET):
        for form in (secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)):
            assert form.encode() not in raw, form
    assert b"hunter" not in raw
    lines = [json.loads(line) for line in raw.decode().split("\n")[:-1]]
    by = {(x["type"], x.get("key")): x for x in lines}
    # Where each secret was, the mask is.
    assert by[("AttemptStarted", "leaky")]["command"].endswith("# ***")
    assert by[("AttemptEnded", "leaky")]["tail"] == ["a *** b"]
    outputs = [x["text"] for x in lines if x["type"] == "AttemptOutput" and x["key"] == "leaky"]
    assert outputs == ["a *** b"]
    assert by[("InstanceSettled", "publish")]["outputs"] == {"v": "x *** y"}
    # The engine itself still had the real output value (dependents get it).
    settled = {e.key: e for e in events if isinstance(e, InstanceSettled)}
    assert settled["publish"].outputs == {"v": f"x {ODD_SECRET} y"}


def test_numbers_are_never_masked(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    ef = EventsFile(path, Redactor(["4242", "run-1"]))
    ef(RunStarted(at=4242.5, run_id="run-1", plan_name="p", mode="dag", parallelism=4242, nodes=1))
    ef(InstanceSettled(at=1.0, node=0, key="k", state="succeeded", outputs={"run-1": "4242"}))
    ef.close()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines[0] == {
        "type": "RunStarted", "at": 4242.5, "run_id": "***", "plan_name": "p", "mode": "dag",
        "parallelism": 4242, "nodes": 1,
    }  # fmt: skip
    assert lines[1]["outputs"] == {"***": "***"}
    assert ef.count == 2


def test_event_fields_shape() -> None:
    ev = AttemptStarted(
        at=1.5, node=3, key="t@x", attempt=2, command="c", pid=10, pgid=10, log_path="/l"
    )
    assert event_fields(ev) == {
        "type": "AttemptStarted", "at": 1.5, "node": 3, "key": "t@x", "attempt": 2,
        "command": "c", "pid": 10, "pgid": 10, "log_path": "/l",
        "executor": "local", "host": "", "job": None, "ready_at": None,
        "queued_reason": None,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("name", "fix"),
    [
        ("missing/dir/events.jsonl", "create the directory"),
        (".", "not of a directory"),
    ],
)
def test_a_path_that_cannot_be_written_is_a_usage_error(
    tmp_path: Path, name: str, fix: str
) -> None:
    path = tmp_path / name
    with pytest.raises(UsageError) as info:
        EventsFile(path, Redactor())
    message = str(info.value)
    assert str(path) in message
    assert "fix: " in message
    assert fix in message
    assert info.value.exit_code == 2


def test_a_failed_write_is_reported_at_close_and_stops_writing() -> None:
    ef = EventsFile(Path("/dev/full"), Redactor())
    for _ in range(3):  # outside a loop, every event is flushed: the first one fails
        ef(RunEnded(at=1.0, run_id="r", status="succeeded", counts={}))
    assert ef.count == 1
    with pytest.raises(FleetrunError, match="writing the events file /dev/full failed"):
        ef.close()
    ef.close()  # reported once
