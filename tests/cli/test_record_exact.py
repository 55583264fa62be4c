"""Retries hand dependents the exact published values, never the redacted ``***``."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from ._helpers import fleetrun, show_json

TOK = """\
name: tok
env: {API_TOKEN: tok-real-value-1234}
tasks:
  publish: {run: 'echo "token=$API_TOKEN" >> "$FLEETRUN_OUTPUT"'}
  consume:
    needs: [publish]
    run: '[ "$FLEETRUN_OUTPUT_PUBLISH_TOKEN" = tok-real-value-1234 ] || { echo WRONG; exit 3; };
      test -e flag || { touch flag; exit 1; }'
"""


def _tok(tmp_path: Path) -> Path:
    plan = tmp_path / "tok.yaml"
    plan.write_text(TOK)
    return plan


def _consume(tmp_path: Path) -> dict[str, object]:
    inst = {i["key"]: i for i in show_json(tmp_path / ".fleetrun")["instances"]}
    return inst


def test_retry_hands_the_dependent_the_real_secret(tmp_path: Path) -> None:
    plan = _tok(tmp_path)
    res = fleetrun("apply", str(plan))
    assert res.returncode == 1, res.stdout + res.stderr  # consume fails once, by design
    res = fleetrun("retry", "--plan", str(plan))
    assert res.returncode == 0, res.stdout + res.stderr  # old code: WRONG, exit 3
    inst = _consume(tmp_path)
    assert (inst["publish"]["status"], inst["consume"]["status"]) == ("reused", "succeeded")
    # Shown redacted everywhere; kept exactly in the owner-only journal only.
    assert inst["publish"]["outputs"] == {"token": "***"}
    out = fleetrun("outputs", "--plan", str(plan), "--format", "json")
    assert "tok-real-value-1234" not in out.stdout
    raw = sqlite3.connect(tmp_path / ".fleetrun" / "state.db")
    rows = raw.execute("SELECT run_id, outputs FROM exact_outputs WHERE key='publish'").fetchall()
    raw.close()
    assert len(rows) == 2  # the run that published it, and the retry that reused it
    assert {json.loads(o)["token"] for _r, o in rows} == {"tok-real-value-1234"}
    # A retry of the retry still has the exact value.
    (tmp_path / "flag").unlink()
    res = fleetrun("apply", str(plan))
    assert res.returncode == 1
    assert fleetrun("retry", "--plan", str(plan)).returncode == 0


def test_a_value_kept_only_redacted_makes_the_producer_run_again(tmp_path: Path) -> None:
    # A journal written by an older fleetrun kept the outputs only redacted.
    plan = _tok(tmp_path)
    assert fleetrun("apply", str(plan)).returncode == 1
    raw = sqlite3.connect(tmp_path / ".fleetrun" / "state.db")
    raw.execute("DELETE FROM exact_outputs")
    raw.commit()
    raw.close()
    res = fleetrun("retry", "--plan", str(plan))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "kept only redacted" in res.stdout
    inst = _consume(tmp_path)
    assert (inst["publish"]["status"], inst["consume"]["status"]) == ("succeeded", "succeeded")
