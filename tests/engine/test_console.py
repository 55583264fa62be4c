"""PlainConsole: one line per state change, failure tails, retry lines and the summary."""

from __future__ import annotations

import io
import re

from fleetrun.engine.testing import FakeClock, graph, task
from fleetrun.plan import RetryPolicy
from fleetrun.report import PlainConsole


def test_plain_console_lines_and_summary(runner):
    out = io.StringIO()
    console = PlainConsole(out)
    g = graph(
        [
            task("ok", "echo hidden-output", targets=["x"]),
            task("bad", "echo first; echo 'last words'; exit 4", targets=["x"]),
            task("dep", "true", targets=["x"], needs=["bad"]),
            task(
                "flaky",
                "exit 75",
                retry=RetryPolicy(
                    attempts=2, backoff=1.0, any_failure=False, on_exit=frozenset({75})
                ),
            ),
        ]
    )
    ran = runner(g, subscribers=[console], clock=FakeClock())
    lines = out.getvalue().splitlines()
    assert all(re.match(r"\d\d:\d\d:\d\d |           \| ", ln) for ln in lines)
    text = out.getvalue()
    assert "hidden-output" not in text  # never raw child output
    assert re.search(r"succeeded  ok@x in \d+\.\ds", text)
    assert "failed     bad@x (exit 4)" in text
    assert "           | last words" in text
    assert "skipped    dep@x: needs bad@x, which failed" in text
    assert re.search(r"retrying   flaky in \d\.\ds \(exit 75\)", text)
    summary = console.summary(ran.result, g)
    assert summary.splitlines()[0] == "1 succeeded, 2 failed, 1 skipped (of 4)"
    assert re.match(
        r"wall time \d+\.\ds, task time \d+\.\ds, speedup (\d+\.\dx|too short to measure)",
        summary.splitlines()[1],
    )


def test_reused_instances_are_one_line(runner):
    out = io.StringIO()
    g = graph(
        [
            task("base", "true", targets=["a", "b", "c", "d", "e"]),
            task("top", "true", targets=["a", "b", "c", "d", "e"], needs=["base"]),
        ]
    )
    reused = {g.index[f"base@{t}"]: {} for t in "abcde"}
    runner(g, subscribers=[PlainConsole(out)], reused=reused)
    lines = [ln for ln in out.getvalue().splitlines() if "reused" in ln]
    assert len(lines) == 1
    assert lines[0].endswith(
        "reused     5 instance(s) that succeeded before: base@a, base@b, base@c and 2 more"
    )
    # The reused line comes before the first start.
    text = out.getvalue()
    assert text.index("reused") < text.index("started")
