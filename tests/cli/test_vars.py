"""``--var``/``--var-file``: values for declared variables, recorded with the run and
reused by ``retry``; secret variables are masked everywhere they are shown."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

from ._helpers import fleetrun

PLAN = """\
name: vars
vars:
  region: westeurope
  deploy_pw: {secret: true, value: unset-pw}
  from_env: {env: FLEETRUN_TEST_FROM_ENV, value: fallback}
tasks:
  deploy:
    run: >-
      echo "region={{ vars.region }} pw={{ vars.deploy_pw }} env={{ vars.from_env }}";
      printf '%s\\n' "{{ vars.region }}|{{ vars.deploy_pw }}" >> got.txt;
      test -e flag || { touch flag; exit 1; }
"""


def _plan(tmp_path: Path) -> Path:
    p = tmp_path / "plan.yaml"
    p.write_text(PLAN)
    return p


def test_vars_override_are_masked_recorded_and_reused_by_retry(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    varfile = tmp_path / "prod.yaml"
    varfile.write_text("region: northeurope\ndeploy_pw: file-pw-0001\n")
    first = fleetrun(
        "apply", str(plan), "--plain", "--output", "grouped",
        "--var-file", str(varfile), "--var", "deploy_pw=s3cret-pw-42",
        extra_env={"FLEETRUN_TEST_FROM_ENV": "from-the-env"},
    )  # fmt: skip
    assert first.returncode == 1  # fails once, on purpose
    assert "region=northeurope pw=*** env=from-the-env" in first.stdout
    assert "s3cret-pw-42" not in first.stdout + first.stderr
    # The task itself got the real values.
    got = (tmp_path / "got.txt").read_text().splitlines()
    assert got == ["northeurope|s3cret-pw-42"]
    # The journal records the variables, the secret one masked.
    db = sqlite3.connect(tmp_path / ".fleetrun" / "state.db")
    options = db.execute("SELECT options FROM runs").fetchone()[0]
    assert '"region": "northeurope"' in options
    assert '"deploy_pw": "***"' in options
    assert "s3cret-pw-42" not in options
    logs = list((tmp_path / ".fleetrun" / "runs").rglob("*.log"))
    assert logs
    assert all("s3cret-pw-42" not in p.read_text() for p in logs)
    # Kept exactly for retry, readable by the owner only.
    kept = list((tmp_path / ".fleetrun" / "runs").glob("*/vars.json"))
    assert len(kept) == 1
    assert stat.S_IMODE(kept[0].stat().st_mode) == 0o600
    # retry reuses them; a value given again wins.
    again = fleetrun("retry", "--plan", str(plan), "--plain", "--var", "region=uksouth")
    assert again.returncode == 0, again.stdout + again.stderr
    got = (tmp_path / "got.txt").read_text().splitlines()
    assert got == ["northeurope|s3cret-pw-42", "uksouth|s3cret-pw-42"]


def test_bad_vars_are_refused_with_the_fix(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    unknown = fleetrun("apply", str(plan), "--var", "regoin=x")
    assert unknown.returncode == 2
    assert "declares no variable 'regoin'" in unknown.stderr
    assert "did you mean 'region'" in unknown.stderr
    malformed = fleetrun("plan", str(plan), "--var", "region")
    assert malformed.returncode == 2
    assert "--var 'region': expected NAME=VALUE" in malformed.stderr
    missing = fleetrun("plan", str(plan), "--var-file", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2
    assert "nope.yaml: cannot read it" in missing.stderr
    for out in (unknown, malformed, missing):
        assert "Traceback" not in out.stderr
    assert not (tmp_path / ".fleetrun").exists()


SECRET_ONLY = """\
name: secret-only
vars:
  token: {secret: true}
  nulled: {secret: true, value: null}
tasks:
  use:
    run: printf '%s\\n' "token={{ vars.token }} nulled={{ vars.nulled }}" | tee got.txt
"""


def test_a_secret_variable_without_a_value_is_declared_and_given_by_var(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(SECRET_ONLY)
    # Used without a value: one line per use, saying how to give one.
    for cmd in (["plan"], ["apply", "--plain"]):
        bare = fleetrun(*cmd, str(plan))
        assert bare.returncode == 2, bare.stdout + bare.stderr
        assert "variable 'token' is declared but has no value" in bare.stderr
        assert "--var token=..." in bare.stderr
        assert "declares no variable" not in bare.stderr
        assert "Traceback" not in bare.stderr
    assert not (tmp_path / ".fleetrun").exists()
    varfile = tmp_path / "secrets.yaml"
    varfile.write_text("nulled: n-secret-77\n")
    given = ["--var", "token=t-secret-42", "--var-file", str(varfile)]
    shown = fleetrun("plan", str(plan), *given)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "t-secret-42" not in shown.stdout + shown.stderr
    applied = fleetrun("apply", str(plan), "--plain", "--output", "grouped", *given)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert (tmp_path / "got.txt").read_text() == "token=t-secret-42 nulled=n-secret-77\n"
    assert "token=*** nulled=***" in applied.stdout
    logs = list((tmp_path / ".fleetrun" / "runs").rglob("*.log"))
    assert logs
    for text in [applied.stdout + applied.stderr, *(p.read_text() for p in logs)]:
        assert "t-secret-42" not in text
        assert "n-secret-77" not in text
