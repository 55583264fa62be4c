"""Secrets never leave fleetrun unredacted: end to end through the ``fleetrun`` CLI.

A plan gets secrets from every source fleetrun knows (a name listed in
``secrets``, plan and task ``env`` names that look secret, ``env_file`` keys,
fleetrun's own environment). Tasks print each secret whole and split across
two writes with a pause between, on stdout and stderr, in a failing task (so
the tail is shown and journaled) and in a succeeding one that publishes an
output holding a secret, which a dependent puts in its command. Then every
file fleetrun wrote (journal, WAL, logs, output files, events file, reports)
and everything it printed is searched for the secret bytes.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import textwrap
from pathlib import Path

import pytest

from ._helpers import READ_COMMANDS, fleetrun, read_in_process

SECRETS = {
    # (a) a name listed in `secrets` (no secret-looking name), value in the plan's env
    "DEPLOY_CRED": "listed-Xq7Zr2",
    # (a') a name listed in `secrets`, value only in fleetrun's environment
    "VAULT_CRED": "listed-proc-Hk38Wv",
    # (b) plan env and task env, names matching the default patterns
    "DB_PASSWORD": "planenv-Pw9Lm4",
    "TASK_TOKEN": "taskenv-Tk5Nq1",
    # (c) env_file keys: one matching a pattern, one listed in `secrets`
    "API_KEY": "envfile-Ak2Vb8",
    "FILE_CRED": "envfile-listed-Fc6Yd3",
}
PROC_TOKEN = ("DEPLOY_TOKEN", "procenv-Dt4Gs0")
"""(d) a secret-looking name only in the environment fleetrun is started with."""

PRINT = textwrap.dedent(
    """\
    import os, sys, time
    for name in sys.argv[1:]:
        value = os.environ[name]
        for out in (sys.stdout, sys.stderr):
            print(f"whole {name}={value}", file=out, flush=True)
        # The same secret in two writes with a pause between: two pipe reads.
        sys.stdout.write(f"split {name}={value[:5]}")
        sys.stdout.flush()
        time.sleep(0.1)
        sys.stdout.write(f"{value[5:]} end\\n")
        sys.stdout.flush()
    """
)


def _plan(tmp_path: Path, names: list[str]) -> Path:
    (tmp_path / "print_secrets.py").write_text(PRINT)
    (tmp_path / "secrets.env").write_text(
        f"API_KEY={SECRETS['API_KEY']}\nexport FILE_CRED='{SECRETS['FILE_CRED']}'\nPLAIN=1\n"
    )
    args = " ".join(names)
    py = sys.executable
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        textwrap.dedent(
            f"""\
            name: redaction
            env_file: secrets.env
            secrets: [DEPLOY_CRED, VAULT_CRED, FILE_CRED]
            env:
              DEPLOY_CRED: {SECRETS["DEPLOY_CRED"]}
              DB_PASSWORD: {SECRETS["DB_PASSWORD"]}
            tasks:
              fail:
                run: {py} print_secrets.py {args}; exit 3
                env: {{TASK_TOKEN: {SECRETS["TASK_TOKEN"]}}}
              ok:
                run: >-
                  {py} print_secrets.py {args} &&
                  echo "out=pre-$DB_PASSWORD-post" >> "$FLEETRUN_OUTPUT"
                env: {{TASK_TOKEN: {SECRETS["TASK_TOKEN"]}}}
              uses:
                needs: [ok]
                run: echo "got {{{{ tasks.ok.outputs.out }}}}"
            """
        )
    )
    return plan


def _files(root: Path) -> list[Path]:
    # The journal's files are read through SQLite (see _journal): it keeps
    # published values exactly in one owner-only table, for retries.
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("state.db"))


def _journal(state: Path) -> dict[str, bytes]:
    """Every value in the journal except the exact outputs kept for retries."""
    raw = sqlite3.connect(state / "state.db")
    try:
        tables = [t for (t,) in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        cells = [
            str(c)
            for t in tables
            if t != "exact_outputs"
            for row in raw.execute(f"SELECT * FROM {t}")
            for c in row
        ]
    finally:
        raw.close()
    assert (state / "state.db").stat().st_mode & 0o077 == 0
    return {f"{state / 'state.db'} (but exact_outputs)": "\n".join(cells).encode()}


def _leaks(blobs: dict[str, bytes], values: list[str]) -> list[str]:
    found = []
    for where, data in blobs.items():
        for v in values:
            for form in {v, json.dumps(v)[1:-1]}:
                if form.encode() in data:
                    found.append(f"{v!r} in {where}")
    return found


def _run_everything(
    tmp_path: Path, names: list[str], extra_env: dict[str, str], *, full: bool = True
) -> dict[str, bytes]:
    """Run the plan and (``full``) every command that reads the record; return
    every byte fleetrun printed or wrote, by where it went. The commands that
    only read run in this process, whose environment holds no secret: what they
    print comes from the record alone."""
    plan = _plan(tmp_path, names)
    state = tmp_path / ".fleetrun"
    events = tmp_path / "events.jsonl"
    printed: dict[str, bytes] = {}

    def cli(*args: str, expect: int = 0) -> str:
        if args[0] in READ_COMMANDS or args[0] == "report":
            res = read_in_process(*args)
        else:
            res = fleetrun(*args, extra_env=extra_env)
        label = "fleetrun " + " ".join(args)
        printed[label + " (stdout)"] = res.stdout.encode()
        printed[label + " (stderr)"] = res.stderr.encode()
        assert res.returncode == expect, label + "\n" + res.stdout + res.stderr
        return res.stdout

    applied = cli(
        "apply", str(plan), "--plain", "--output", "stream", "--events", str(events), expect=1
    )
    # The console showed the streamed lines, masked.
    assert f"fail | whole {names[0]}=***" in applied
    assert f"ok | split {names[0]}=*** end" in applied
    reports = tmp_path / "reports"
    reports.mkdir()
    if not full:
        cli("logs", "fail", "--state-dir", str(state))
    else:
        first = _first_run(state)
        cli("retry", "--plan", str(plan), "--plain", "--output", "ordered", expect=1)
        for key in ("fail", "ok", "uses"):
            cli("logs", key, "--state-dir", str(state), "--run", first)
        cli("logs", "fail", "--state-dir", str(state), "--format", "json")
        for fmt in ("table", "json"):
            cli("show", "--state-dir", str(state), "--format", fmt)
        cli("history", "--state-dir", str(state))
        for fmt in ("table", "json", "env"):
            cli("outputs", "--state-dir", str(state), "--format", fmt)
    if full:
        for fmt in ("json", "html", "markdown", "junit"):
            cli("report", "--state-dir", str(state), "--format", fmt, "-o", str(reports / fmt))
        cli("report", "--state-dir", str(state), "--format", "table")
        assert all(
            (reports / fmt).stat().st_size > 0 for fmt in ("json", "html", "markdown", "junit")
        )
    blobs = {str(p): p.read_bytes() for p in [*_files(state), events, *_files(reports)]}
    blobs.update(_journal(state))
    blobs.update(printed)
    return blobs


def _first_run(state: Path) -> str:
    res = fleetrun("history", "--state-dir", str(state), "--format", "json")
    runs = json.loads(res.stdout)
    rows = runs["runs"] if isinstance(runs, dict) else runs
    return str(rows[-1]["id"])


@pytest.mark.slow
def test_no_secret_reaches_any_file_or_the_console(tmp_path: Path) -> None:
    names = list(SECRETS)
    blobs = _run_everything(tmp_path, names, {"VAULT_CRED": SECRETS["VAULT_CRED"]})
    assert _leaks(blobs, list(SECRETS.values())) == []
    state = tmp_path / ".fleetrun"
    assert (state / "state.db").exists()
    logs = [p for p in _files(state) if p.suffix == ".log"]
    # 2 runs: fail, ok, uses; then fail again on retry (ok was reused, uses skipped-by-
    # nothing: it succeeded) -> at least the 4 logs below.
    by_key = {(p.parent.name, p.name): p.read_text() for p in logs}
    assert ("fail", "fail.1.log") in by_key
    assert ("ok", "ok.1.log") in by_key
    # The logs show the mask exactly where each secret was (so this test cannot
    # pass by printing nothing).
    for (task, _), text in by_key.items():
        if task in ("fail", "ok"):
            for name in names:
                assert text.count(f"whole {name}=***\n") == 2, (task, name, text)
                assert f"split {name}=*** end\n" in text, (task, name)
    # Inside "...", the value arrives as it is (no bare-word quotes around it).
    assert "got pre-***-post\n" in by_key[("uses", "uses.1.log")]
    # The journal and the events file hold the masked tail and output.
    events = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    tail = next(e["tail"] for e in events if e["type"] == "AttemptEnded" and e["key"] == "fail")
    assert f"split {names[-1]}=*** end" in tail
    ok = next(e for e in events if e["type"] == "InstanceSettled" and e["key"] == "ok")
    assert ok["outputs"] == {"out": "pre-***-post"}
    started = next(e for e in events if e["type"] == "AttemptStarted" and e["key"] == "uses")
    assert "pre-***-post" in started["command"]
    for name in ("retry", "history", "show", "logs", "outputs"):
        assert any(k.startswith(f"fleetrun {name}") for k in blobs)


def test_a_secret_looking_variable_from_the_process_environment_is_redacted(
    tmp_path: Path,
) -> None:
    name, value = PROC_TOKEN
    blobs = _run_everything(tmp_path, [name, "DB_PASSWORD"], {name: value}, full=False)
    assert _leaks(blobs, [SECRETS["DB_PASSWORD"]]) == []
    assert _leaks(blobs, [value]) == []


def test_a_secret_with_json_special_characters_is_redacted_everywhere(tmp_path: Path) -> None:
    value = 'pä"ss\\w0rd-99'
    (tmp_path / "plan.yaml").write_text(
        textwrap.dedent(
            f"""\
            name: odd
            env:
              DB_PASSWORD: '{value}'
            tasks:
              pub:
                run: printf 'out=%s\\n' "$DB_PASSWORD" >> "$FLEETRUN_OUTPUT"; echo "$DB_PASSWORD"
              fail:
                run: echo "x $DB_PASSWORD y"; exit 1
            """
        )
    )
    events = tmp_path / "events.jsonl"
    res = fleetrun("apply", str(tmp_path / "plan.yaml"), "--plain", "--events", str(events))
    assert res.returncode == 1, res.stdout + res.stderr
    state = tmp_path / ".fleetrun"
    log = (state / "runs").glob("*/logs/pub/pub.1.log")
    assert next(log).read_text() == "***\n"
    blobs = {str(p): p.read_bytes() for p in [*_files(state), events]}
    blobs.update(_journal(state))
    blobs["stdout"] = res.stdout.encode()
    forms = [value, json.dumps(value, ensure_ascii=False)[1:-1]]
    assert _leaks(blobs, forms) == []
