"""The read commands as ``python -m fleetrun`` processes print what they print in
this process, exit codes included: the rest of the suite runs them in-process
(``_helpers.READ_COMMANDS``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ._helpers import READ_COMMANDS, env, fleetrun, read_in_process

PLAN = """\
name: reads
targets:
  a: {}
  b: {}
tasks:
  hello:
    for_each: all
    run: |
      echo "hello {{ target.name }}"
      echo "who={{ target.name }}" >> "$FLEETRUN_OUTPUT"
      test {{ target.name }} = a
"""


def _process(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleetrun", *args],
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_each_read_command_reads_the_same_in_a_process(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)
    state = ["--state-dir", str(tmp_path / "st")]
    assert fleetrun("apply", str(plan), *state, "--plain").returncode == 1
    calls = [
        ("show", *state),
        ("logs", "hello", *state),
        ("outputs", *state, "--format", "json"),
        ("history", *state),
        ("show", "no-such-run", *state),  # an error: its one line and exit code
    ]
    assert {c[0] for c in calls} == READ_COMMANDS
    for args in calls:
        alone, here = _process(*args), read_in_process(*args)
        assert (alone.returncode, alone.stdout, alone.stderr) == (
            here.returncode,
            here.stdout,
            here.stderr,
        ), args
    assert alone.returncode not in (0, 1)  # the last call's error
    assert alone.stderr.count("\n") == 1
