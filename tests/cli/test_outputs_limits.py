"""Outputs are passed on whole or refused with a message naming the limit, and no
secret stays in clear in an outputs file on disk, whatever its size."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fleetrun.executors import MAX_OUTPUTS_BYTES, MAX_VALUE_BYTES, parse_output_bytes
from fleetrun.executors._outputs import OutputRefused, redact_output_file
from fleetrun.redact import Redactor

from ._helpers import fleetrun, show_json

SECRET = "tok-Zq81xW"

BIG = f"""\
name: big
env: {{API_TOKEN: "{SECRET}"}}
tasks:
  pub:
    run: |
      python3 -c "print('big=' + 'x' * 1100000)" >> "$FLEETRUN_OUTPUT"
      echo "small=ok" >> "$FLEETRUN_OUTPUT"
      echo "token=$API_TOKEN" >> "$FLEETRUN_OUTPUT"
  use:
    needs: [pub]
    run: echo "got $FLEETRUN_OUTPUT_PUB_SMALL"
"""

EDGE = f"""\
name: edge
tasks:
  pub:
    run: python3 -c "print('v=' + 'é' * {MAX_VALUE_BYTES // 2})" >> "$FLEETRUN_OUTPUT"
  over:
    run: |
      python3 -c "print('v=' + 'x' * {MAX_VALUE_BYTES + 1})" >> "$FLEETRUN_OUTPUT"
      echo "later=1" >> "$FLEETRUN_OUTPUT"
  use:
    needs: [pub]
    run: |
      printf %s "$FLEETRUN_OUTPUT_PUB_V" | wc -c
      v={{{{ tasks.pub.outputs.v }}}}
      printf %s "$v" | wc -c
      test "$v" = "$FLEETRUN_OUTPUT_PUB_V" && echo same
"""


def test_outputs_over_the_limit_are_refused_and_no_secret_stays_on_disk(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(BIG)
    res = fleetrun("apply", str(plan), "--plain")
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"more than {MAX_OUTPUTS_BYTES} bytes (1 MiB), the limit for one attempt" in res.stdout
    assert "Traceback" not in res.stderr
    state = tmp_path / ".fleetrun"
    data = show_json(state)
    status = {i["key"]: i["status"] for i in data["instances"]}
    assert status == {"pub": "failed", "use": "skipped"}
    # Nothing was passed on (not the cut first value, not the keys after it).
    out = fleetrun("outputs", "--plan", str(plan), "--format", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {}
    # The outputs file stays, redacted all through: the secret came after 1 MiB.
    (kept,) = state.glob("runs/*/outputs/pub/pub.1.outputs")
    text = kept.read_bytes()
    assert SECRET.encode() not in text
    assert text.endswith(b"small=ok\ntoken=***\n")
    assert text.startswith(b"big=" + b"x" * 1000)


def test_a_value_at_the_limit_arrives_whole_and_one_over_is_refused(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(EDGE)
    res = fleetrun("apply", str(plan), "--plain")
    assert res.returncode == 1, res.stdout + res.stderr
    data = show_json(tmp_path / ".fleetrun")
    status = {i["key"]: i["status"] for i in data["instances"]}
    assert status == {"pub": "succeeded", "over": "failed", "use": "succeeded"}
    # 32768 two-byte characters: exactly 64 KiB, in the environment and in the command.
    log = fleetrun("logs", "use", "--plan", str(plan))
    assert log.stdout.split() == [str(MAX_VALUE_BYTES), str(MAX_VALUE_BYTES), "same"]
    assert (
        f"over: output 'v' is {MAX_VALUE_BYTES + 1} bytes, more than the limit of "
        f"{MAX_VALUE_BYTES} bytes (64 KiB) for one value" in res.stdout
    )


def test_the_rule_counts_bytes_and_refuses_before_passing_anything() -> None:
    at_limit = b"a=" + b"x" * MAX_VALUE_BYTES + b"\n"
    assert parse_output_bytes(at_limit) == {"a": "x" * MAX_VALUE_BYTES}
    with pytest.raises(OutputRefused, match=r"^pub@eu: output 'b' is 65537 bytes, more than"):
        parse_output_bytes(b"a=1\nb=" + b"x" * (MAX_VALUE_BYTES + 1) + b"\nc=2\n", "pub@eu")
    with pytest.raises(OutputRefused, match=r"^pub@eu: .* \(1 MiB\), the limit for one attempt"):
        parse_output_bytes(b"# " + b"x" * MAX_OUTPUTS_BYTES + b"\na=1\n", "pub@eu")


def test_a_large_outputs_file_is_redacted_all_through(tmp_path: Path) -> None:
    # Secrets before, across and after each 1 MiB chunk boundary.
    path = tmp_path / "o.outputs"
    body = bytearray(b"y" * (3 * MAX_OUTPUTS_BYTES))
    spots = [10, MAX_OUTPUTS_BYTES - 4, 2 * MAX_OUTPUTS_BYTES - 1, len(body) - len(SECRET)]
    for at in spots:
        body[at : at + len(SECRET)] = SECRET.encode()
    path.write_bytes(bytes(body))
    head = redact_output_file(str(path), Redactor([SECRET]))
    assert head == bytes(body[: MAX_OUTPUTS_BYTES + 1])
    clean = path.read_bytes()
    assert SECRET.encode() not in clean
    assert clean.count(b"***") == len(spots)
    assert len(clean) == len(body) - len(spots) * (len(SECRET) - 3)
    assert os.stat(path).st_mode & 0o777 == 0o644 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


RETRIED = """\
name: retried
tasks:
  pub:
    retry: {attempts: 3, backoff: 0s}
    run: |
      if [ "$FLEETRUN_ATTEMPT" = 1 ]; then printf 'v=\\377\\n' >> "$FLEETRUN_OUTPUT"
      else echo "v=ok$FLEETRUN_ATTEMPT" >> "$FLEETRUN_OUTPUT"; fi
  listed:
    retry: {attempts: 3, backoff: 0s, on: {exit: [75]}}
    run: printf 'v=\\377\\n' >> "$FLEETRUN_OUTPUT"
  use:
    needs: [pub]
    run: echo "got $FLEETRUN_OUTPUT_PUB_V"
"""


def test_a_refused_output_is_retried_like_any_failure_when_on_is_not_given(
    tmp_path: Path,
) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(RETRIED)
    res = fleetrun("apply", str(plan), "--plain")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    data = show_json(tmp_path / ".fleetrun")
    got = {i["key"]: (i["status"], i["attempts"]) for i in data["instances"]}
    # No `on:`: every failure is retried, a refused output too; with `on:`, only
    # what it lists (a refused output has no exit code to match).
    assert got == {"pub": ("succeeded", 2), "listed": ("failed", 1), "use": ("succeeded", 1)}
    log = fleetrun("logs", "use", "--plan", str(plan))
    assert log.stdout.strip() == "got ok2"
    assert "output 'v' is not UTF-8 text" in res.stdout


def test_two_keys_that_meet_on_one_variable_name_are_refused_naming_both() -> None:
    with pytest.raises(OutputRefused, match=r"^pub@eu: outputs 'k-1' and 'k_1' would both arrive"):
        parse_output_bytes(b"k-1=a\nk_1=b\n", "pub@eu")
    # One key given twice is not a clash: the later value wins, as always.
    assert parse_output_bytes(b"k=a\nk=b\nK2=c\n") == {"k": "b", "K2": "c"}
    with pytest.raises(OutputRefused, match=r"'k' and 'K' .* FLEETRUN_OUTPUT_<TASK>_K,"):
        parse_output_bytes(b"k=a\nK=b\n")
