"""``OutputPrinter`` with real processes: grouped, ordered and streamed task output.

Noisy tasks print numbered lines with small sleeps and wait at a barrier halfway,
so their output really interleaves in time; the tests parse what ``write``
received and check that every block (or tagged line) is whole, in order and
never mixed with another task's output.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fleetrun.engine import (
    AttemptEnded,
    Event,
    InstanceSettled,
    RunOptions,
    RunResult,
    RunStarted,
    run_graph,
)
from fleetrun.engine.testing import graph, max_overlap, task
from fleetrun.executors import LocalExecutor
from fleetrun.plan import Graph
from fleetrun.plan._model import RetryPolicy
from fleetrun.redact import Redactor
from fleetrun.report._output import OutputPrinter, header, log_chunks

PY = sys.executable
TARGETS = ["t0", "t1", "t2", "t3"]
LINES = 24

NOISY = textwrap.dedent(
    """\
    import os, sys, time
    n, pause = int(sys.argv[1]), float(sys.argv[2])
    opts = dict(a.split("=", 1) for a in sys.argv[3:])
    target = os.environ["FLEETRUN_TARGET"]
    key = os.environ["FLEETRUN_TASK"] + ("@" + target if target else "")
    attempt = int(os.environ["FLEETRUN_ATTEMPT"])
    for i in range(n):
        if i == n // 2 and "barrier" in opts:
            # Everyone prints its first half before anyone goes on: real interleaving.
            d, count = opts["barrier"].rsplit(",", 1)
            open(os.path.join(d, f"half-{key}-{attempt}"), "w").close()
            deadline = time.monotonic() + 30  # a broken test fails, never hangs
            while sum(f.startswith("half-") for f in os.listdir(d)) < int(count):
                assert time.monotonic() < deadline, "barrier never filled"
                time.sleep(0.005)
        if i == n // 2 and "wait" in opts:
            deadline = time.monotonic() + 30
            while not os.path.exists(os.path.join(opts["wait"], "go-" + target)):
                assert time.monotonic() < deadline, "never told to go on"
                time.sleep(0.005)
        if i == n // 2 and "long" in opts:
            print("L" * int(opts["long"]), flush=True)
        out = sys.stderr if i % 5 == 4 else sys.stdout
        print(f"{key} a{attempt} line {i:03d}", file=out, flush=True)
        time.sleep(pause)
    sys.exit(3 if "fail_first" in opts and attempt == 1 else 0)
    """
)

HEADER = re.compile(r"^── (\S+) \(attempt (\d+), (.*), ([0-9hms.]+)\) ──$")


@pytest.fixture
def noisy(tmp_path: Path) -> str:
    """The command prefix that runs the noisy script."""
    script = tmp_path / "noisy.py"
    script.write_text(NOISY)
    return f"{PY} {script}"


class Recorded:
    """One run: what ``write`` got, and events and writes on one timeline."""

    def __init__(self) -> None:
        self.writes: list[str] = []
        self.timeline: list[tuple[str, Any]] = []
        self.result: RunResult | None = None
        self.closed_at = 0

    @property
    def text(self) -> str:
        return "".join(self.writes)

    def events(self, kind: type) -> list[Any]:
        return [x for t, x in self.timeline if t == "event" and isinstance(x, kind)]

    def index(self, pred: Callable[[str, Any], bool]) -> int:
        return next(i for i, (t, x) in enumerate(self.timeline) if pred(t, x))


def run(
    g: Graph,
    tmp_path: Path,
    mode: Any,
    *,
    only: frozenset[int] | None = None,
    hook: Callable[[Event], None] | None = None,
    redactor: Redactor | None = None,
) -> Recorded:
    rec = Recorded()

    def write(text: str) -> None:
        rec.writes.append(text)
        rec.timeline.append(("write", text))

    printer = OutputPrinter(mode, g, write, only=only)

    def collect(ev: Event) -> None:
        rec.timeline.append(("event", ev))
        if hook is not None:
            hook(ev)

    options = RunOptions(
        run_id="test-run",
        run_dir=tmp_path / "run",
        grace=2.0,
        only=only,
        output="stream" if mode == "stream" else "none",
        redactor=redactor or Redactor(),
        seed=1,
    )

    async def main() -> RunResult:
        return await run_graph(g, options, LocalExecutor(), [collect, printer])

    rec.result = asyncio.run(main())
    rec.closed_at = len(rec.timeline)
    printer.close()
    return rec


def parse_blocks(text: str) -> list[tuple[str, int, str, list[str]]]:
    """(key, attempt, how, lines) per block; fails on any line outside a block."""
    blocks: list[tuple[str, int, str, list[str]]] = []
    for line in text.split("\n")[:-1]:
        m = HEADER.match(line)
        if m:
            blocks.append((m.group(1), int(m.group(2)), m.group(3), []))
        else:
            assert blocks, f"a line before any block header: {line!r}"
            blocks[-1][3].append(line)
    return blocks


def expected_lines(key: str, attempt: int, n: int = LINES) -> list[str]:
    return [f"{key} a{attempt} line {i:03d}" for i in range(n)]


def check_writes(rec: Recorded) -> None:
    assert rec.writes, "nothing was written"
    for w in rec.writes:
        assert w.endswith("\n"), f"a write that is not whole lines: {w[-40:]!r}"


# -- grouped --------------------------------------------------------------------------


def test_grouped_blocks_are_whole_and_never_mixed(tmp_path: Path, noisy: str) -> None:
    bar = tmp_path / "bar"
    bar.mkdir()
    # 4 fanned instances plus one unfanned that fails its first attempt: 6 attempts
    # of 5 instances; the first 5 all print at once until each has done half.
    g = graph(
        [
            task("noisy", f"{noisy} {LINES} 0.003 barrier={bar},5", targets=TARGETS),
            task(
                "flaky",
                f"{noisy} {LINES} 0.003 barrier={bar},5 fail_first=1",
                retry=RetryPolicy(attempts=2, backoff=0.0),
            ),
        ]
    )
    rec = run(g, tmp_path, "grouped")
    assert rec.result is not None
    assert rec.result.status == "succeeded"
    check_writes(rec)
    blocks = parse_blocks(rec.text)
    ended = rec.events(AttemptEnded)
    # One block per attempt, in the order the attempts ended.
    assert [(b[0], b[1]) for b in blocks] == [(e.key, e.attempt) for e in ended]
    assert len(blocks) == 6
    for key, attempt, how, lines in blocks:
        assert lines == expected_lines(key, attempt), key
        assert how == ("exit 3, retrying" if key == "flaky" and attempt == 1 else "exit 0")
    # The output really interleaved: every attempt was running at once with others.
    starts = {
        (x.key, x.attempt): i
        for i, (t, x) in enumerate(rec.timeline)
        if t == "event" and type(x).__name__ == "AttemptStarted"
    }
    assert len(starts) == 6
    intervals = [
        (float(starts[(e.key, e.attempt)]), float(rec.timeline.index(("event", e)))) for e in ended
    ]
    assert max_overlap(intervals) >= 5
    # A block is printed when its attempt ends, before the next event.
    for e in ended:
        i = rec.timeline.index(("event", e))
        assert rec.timeline[i + 1][0] == "write"
        assert rec.timeline[i + 1][1].startswith(f"── {e.key} (attempt {e.attempt},")


def test_none_prints_nothing(tmp_path: Path, noisy: str) -> None:
    g = graph([task("noisy", f"{noisy} 5 0", targets=TARGETS[:2])])
    rec = run(g, tmp_path, "none")
    assert rec.result is not None
    assert rec.result.counts == {"succeeded": 2}
    assert rec.writes == []


# -- ordered --------------------------------------------------------------------------


def test_ordered_follows_plan_order_when_later_nodes_finish_first(
    tmp_path: Path, noisy: str
) -> None:
    go = tmp_path / "go"
    go.mkdir()
    # noisy@t(k) waits halfway until noisy@t(k+1) settled: they settle t3, t2, t1, t0,
    # the reverse of plan order. 'broken' fails; 'after' (needs it) is skipped.
    g = graph(
        [
            task("broken", f"{noisy} 6 0; exit 4"),
            task("after", "echo never", needs=["broken"]),
            task("noisy", f"{noisy} {LINES} 0.002 wait={go}", targets=TARGETS),
        ]
    )
    keys = [n.key for n in g.nodes]
    assert keys == ["broken", "after", *[f"noisy@{t}" for t in TARGETS]]

    def hook(ev: Event) -> None:
        if isinstance(ev, RunStarted):
            (go / "go-t3").touch()
        elif isinstance(ev, InstanceSettled) and ev.key.startswith("noisy@t"):
            k = int(ev.key[-1])
            if k > 0:
                (go / f"go-t{k - 1}").touch()

    rec = run(g, tmp_path, "ordered", hook=hook)
    assert rec.result is not None
    settled = [e.key for e in rec.events(InstanceSettled)]
    assert settled.index("noisy@t3") < settled.index("noisy@t2") < settled.index("noisy@t0")
    assert {e.key: e.state for e in rec.events(InstanceSettled)}["after"] == "skipped"
    check_writes(rec)
    blocks = parse_blocks(rec.text)
    # Plan order; the skipped instance prints nothing and holds nothing up.
    assert [(b[0], b[1]) for b in blocks] == [("broken", 1), *[(f"noisy@{t}", 1) for t in TARGETS]]
    assert blocks[0][2] == "exit 4"
    assert blocks[0][3] == expected_lines("broken", 1, 6)
    for key, attempt, _, lines in blocks[1:]:
        assert lines == expected_lines(key, attempt)
    # Nothing of noisy@t1..t3 was printed before noisy@t0 settled, and all of
    # it was printed during the run, not by close().
    t0_settled = rec.index(
        lambda t, x: (
            t == "event" and getattr(x, "key", "") == "noisy@t0" and isinstance(x, InstanceSettled)
        )
    )
    noisy_writes = [i for i, (t, x) in enumerate(rec.timeline) if t == "write" and "noisy@" in x]
    assert noisy_writes
    assert min(noisy_writes) > t0_settled
    assert max(i for i, (t, _) in enumerate(rec.timeline) if t == "write") < rec.closed_at


def test_ordered_with_only_and_retries(tmp_path: Path, noisy: str) -> None:
    # Only the run's nodes are in the order: the ones left out hold nothing up.
    g = graph(
        [
            task("skip_me", "echo not in this run", targets=TARGETS),
            task(
                "flaky",
                f"{noisy} 8 0 fail_first=1",
                targets=TARGETS[:2],
                retry=RetryPolicy(attempts=2, backoff=0.0),
            ),
        ]
    )
    only = frozenset(n.id for n in g.nodes if n.task == "flaky")
    rec = run(g, tmp_path, "ordered", only=only)
    assert rec.result is not None
    assert rec.result.status == "succeeded"
    blocks = parse_blocks(rec.text)
    assert [(b[0], b[1], b[2]) for b in blocks] == [
        ("flaky@t0", 1, "exit 3, retrying"),
        ("flaky@t0", 2, "exit 0"),
        ("flaky@t1", 1, "exit 3, retrying"),
        ("flaky@t1", 2, "exit 0"),
    ]
    for key, attempt, _, lines in blocks:
        assert lines == expected_lines(key, attempt, 8)
    assert max(i for i, (t, _) in enumerate(rec.timeline) if t == "write") < rec.closed_at


# -- stream ---------------------------------------------------------------------------

TAGGED = re.compile(r"^(\S+) \| (.*)$")


def test_stream_lines_are_tagged_whole_and_in_order(tmp_path: Path, noisy: str) -> None:
    bar = tmp_path / "bar"
    bar.mkdir()
    long_line = 150_000  # more than the executor's partial-line limit: arrives in pieces
    g = graph(
        [
            task("noisy", f"{noisy} {LINES} 0.002 barrier={bar},5", targets=TARGETS),
            task("long", f"{noisy} {LINES} 0.002 barrier={bar},5 long={long_line}"),
        ]
    )
    rec = run(g, tmp_path, "stream", redactor=Redactor(["never-printed"]))
    assert rec.result is not None
    assert rec.result.status == "succeeded"
    check_writes(rec)
    per_key: dict[str, list[str]] = {}
    for line in rec.text.split("\n")[:-1]:
        m = TAGGED.match(line)
        assert m, f"an untagged line: {line[:80]!r}"
        per_key.setdefault(m.group(1), []).append(m.group(2))
    assert set(per_key) == {"long", *(f"noisy@{t}" for t in TARGETS)}
    for key, lines in per_key.items():
        if key != "long":
            assert lines == expected_lines(key, 1), key
    # The long line: whole pieces, each tagged, nothing else inside, in its place.
    lines = per_key["long"]
    pieces = [x for x in lines if x.startswith("L")]
    assert len(pieces) >= 2
    assert all(set(p) == {"L"} for p in pieces)
    assert "".join(pieces) == "L" * long_line
    first = lines.index(pieces[0])
    assert lines[first : first + len(pieces)] == pieces
    assert [x for x in lines if not x.startswith("L")] == expected_lines("long", 1)
    assert lines[first - 1] == f"long a1 line {LINES // 2 - 1:03d}"
    # Interleaving happened: some write of one key came between two of another's.
    owners = [TAGGED.match(w.split("\n", 1)[0]).group(1) for w in rec.writes]  # type: ignore[union-attr]
    switches = sum(1 for a, b in itertools.pairwise(owners) if a != b)
    assert switches >= len(per_key)


def test_stream_keeps_empty_lines_and_a_last_line_without_newline(tmp_path: Path) -> None:
    g = graph([task("t", "printf 'a\\n\\n\\nb\\n\\nc'")])
    rec = run(g, tmp_path, "stream")
    assert rec.text == "t | a\nt | \nt | \nt | b\nt | \nt | c\n"


# -- large logs -----------------------------------------------------------------------


def test_log_chunks_shows_the_tail_of_a_large_log(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    with log.open("wb") as f:
        for i in range(200_000):
            f.write(b"%07d\n" % i)  # 8 bytes a line, 1.6 MB
    chunks = list(log_chunks(str(log), 1 << 20))
    assert all(c.endswith("\n") for c in chunks)
    notice, body = chunks[0], "".join(chunks[1:])
    shown = body.split("\n")[:-1]
    skipped = 200_000 * 8 - len(body)
    assert notice == f"... {skipped} byte(s) before this not shown; the whole log: {log}\n"
    assert (1 << 20) - 8 < len(body) <= 1 << 20
    assert shown == [f"{i:07d}" for i in range(200_000 - len(shown), 200_000)]
    assert max(len(c) for c in chunks) <= (1 << 16) + 8
    # A last line without a newline still comes out whole and terminated.
    small = tmp_path / "small.log"
    small.write_bytes(b"one\ntwo")
    assert list(log_chunks(str(small))) == ["one\n", "two\n"]
    assert list(log_chunks(str(tmp_path / "missing.log"))) == [
        "(no log: No such file or directory)\n"
    ]
    assert header("a@b", 2, "exit 1", 3.21) == "── a@b (attempt 2, exit 1, 3.2s) ──"


GENERATE = (
    "import sys\n"
    "b = (b'x' * 99 + b'\\n') * 1000\n"
    "for _ in range(int(sys.argv[1])):\n"
    "    sys.stdout.buffer.write(b)\n"
)
"""Prints argv[1] times 1000 lines of 100 bytes."""

MEMORY = textwrap.dedent(
    """\
    import asyncio, json, sys
    from pathlib import Path
    from fleetrun.engine import RunOptions, run_graph
    from fleetrun.engine.testing import graph, task
    from fleetrun.executors import LocalExecutor
    from fleetrun.redact import Redactor
    from fleetrun.report._output import OutputPrinter

    mode, run_dir, gen, size = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])

    def hwm_kb():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])

    got = {}

    def write(text):
        got["bytes"] += len(text)
        got["max_write"] = max(got["max_write"], len(text))
        got["first"] = got["first"] or text[:300]
        got["last"] = text[-200:]

    def once(name, nbytes):
        got.update(bytes=0, max_write=0, first="", last="")
        g = graph([task(name, f"{sys.executable} {gen} {nbytes // 100_000}")])
        printer = OutputPrinter(mode, g, write)
        # A secret makes the executor pipe and redact the output (the costlier path).
        opts = RunOptions(run_id="m", run_dir=run_dir / name, redactor=Redactor(["a-secret"]),
                          output="stream" if mode == "stream" else "none")

        async def main():
            return await run_graph(g, opts, LocalExecutor(), [printer])

        res = asyncio.run(main())
        printer.close()
        return res

    once("warm", 100_000)  # imports, threads, first-run allocations
    before = hwm_kb()
    res = once("big", size)
    after = hwm_kb()
    print(json.dumps({"status": res.status, "before_kb": before, "after_kb": after, **got}))
    """
)


@pytest.mark.parametrize("mode", ["grouped", "stream"])
def test_memory_stays_bounded_when_a_task_prints_300_mb(tmp_path: Path, mode: str) -> None:
    size = 300_000_000
    gen = tmp_path / "gen.py"
    gen.write_text(GENERATE)
    proc = subprocess.run(
        [PY, "-c", MEMORY, mode, str(tmp_path), str(gen), str(size)],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["status"] == "succeeded"
    growth_mb = (got["after_kb"] - got["before_kb"]) / 1024
    assert growth_mb < 64, f"peak RSS grew by {growth_mb:.0f} MB"
    log = tmp_path / "big" / "logs" / "big" / "big.1.log"
    assert log.stat().st_size == size
    if mode == "grouped":
        # One block: the header, a notice, then the last 1 MiB of the log.
        assert got["first"].startswith("── big (attempt 1, exit 0, ")
        assert f"byte(s) before this not shown; the whole log: {log}" in got["first"]
        assert (1 << 20) - 100 < got["bytes"] < (1 << 20) + 400
        assert got["max_write"] <= (1 << 16) + 400
    else:
        # Every line, tagged: "big | " + 99 x's.
        assert got["bytes"] == (size // 100) * (6 + 100)
        assert got["last"].endswith("big | " + "x" * 99 + "\n")
        assert got["max_write"] < 2 * (1 << 16) * 106 // 100
