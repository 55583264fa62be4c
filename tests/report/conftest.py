"""Runs recorded by a real ``fleetrun apply`` (child processes, SQLite journal) to report on.

The demo plan: a chain prep -> mid -> final (about 0.25 s each) beside a task
fanned over three targets in a pool of 2 whose instance on ``b`` exits 75 once
(a marker file) and is retried as throttled, a check that fails on the target
named in ``$FAIL``, and a notify step after each check. Two phases.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli._helpers import fleetrun

from fleetrun.state import Journal

CHAIN = ("prep", "mid", "final")
TARGETS = ("a", "b", "c")
POOL_CAP = 2
PARALLELISM = 4


def demo_plan(marker: Path) -> str:
    """The demo plan's text; ``marker`` is the file whose absence makes fan@b exit 75."""
    m = shlex.quote(str(marker))
    return f"""\
name: report-demo
targets:
  a: {{}}
  b: {{}}
  c: {{}}
pools:
  api: {{concurrency: {POOL_CAP}, throttle: {{exit: [75]}}}}
phases: [build, deploy]
tasks:
  prep:
    phase: build
    run: sleep 0.25
  fan:
    phase: build
    for_each: all
    pools: [api]
    retry: {{attempts: 2, backoff: 0.01s, on: {{exit: [75]}}}}
    run: >-
      sleep 0.05; if [ {{{{ target.name }}}} = b ] && [ ! -e {m} ]; then touch {m}; exit 75; fi
  mid:
    phase: deploy
    needs: [prep]
    run: sleep 0.25
  final:
    phase: deploy
    needs: [mid]
    run: sleep 0.25
  check:
    phase: deploy
    for_each: all
    needs: [fan]
    run: test "$FAIL" != {{{{ target.name }}}}
  notify:
    phase: deploy
    for_each: all
    needs: [check]
    run: "true"
"""


@dataclass(frozen=True)
class Recorded:
    """A run on record: where its journal is, its id, and its plan file."""

    state: Path
    run_id: str
    plan: Path

    def journal(self) -> Journal:
        """The journal, opened (close it, or use ``with``)."""
        return Journal(self.state)


def apply(
    root: Path,
    *args: str,
    text: str | None = None,
    files: Mapping[str, str] | None = None,
    fail: str = "c",
    expect: int = 1,
) -> Recorded:
    """Write the demo plan (or ``text``, plus ``files`` beside it) under ``root``
    and ``fleetrun apply`` it; the run must exit with ``expect``."""
    root.mkdir(parents=True, exist_ok=True)
    for name, content in (files or {}).items():
        (root / name).write_text(content)
    plan = root / "plan.yaml"
    plan.write_text(text if text is not None else demo_plan(root / "marker"))
    state = root / "state"
    res = fleetrun("apply", str(plan), "--state-dir", str(state), *args, extra_env={"FAIL": fail})
    assert res.returncode == expect, res.stdout + res.stderr
    with Journal(state) as j:
        run_id = j.runs(limit=1)[0].id
    return Recorded(state, run_id, plan)


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """The demo plan applied in dag mode at -j 4; check@c fails, notify@c is skipped."""
    return apply(tmp_path_factory.mktemp("demo"), "-j", str(PARALLELISM))


@pytest.fixture(scope="session")
def phased(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """The demo plan applied in phased mode at -j 4."""
    return apply(tmp_path_factory.mktemp("phased"), "-j", str(PARALLELISM), "--mode", "phased")


@pytest.fixture(scope="session")
def retried(tmp_path_factory: pytest.TempPathFactory) -> tuple[Recorded, Recorded]:
    """A failed apply and the ``fleetrun retry`` that re-runs check@c and notify@c."""
    first = apply(tmp_path_factory.mktemp("retried"), "-j", str(PARALLELISM))
    res = fleetrun("retry", "--state-dir", str(first.state), extra_env={"FAIL": "none"})
    assert res.returncode == 0, res.stdout + res.stderr
    with Journal(first.state) as j:
        run_id = j.runs(limit=1)[0].id
    return first, Recorded(first.state, run_id, first.plan)


@pytest.fixture
def make_run(tmp_path: Path) -> Callable[..., Recorded]:
    """``apply`` in this test's own directory."""

    def make(
        *args: str,
        text: str | None = None,
        files: Mapping[str, str] | None = None,
        fail: str = "none",
        expect: int = 0,
    ) -> Recorded:
        return apply(tmp_path, *args, text=text, files=files, fail=fail, expect=expect)

    return make


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Event lines carry local time: pin TZ to UTC, restore it afterwards."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()
