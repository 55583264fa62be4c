"""Every failure says its cause once, in words, and every attempt tried is
counted: on the console, in the summary, in ``show``, in JUnit and the other
reports. Real runs of ``fleetrun`` on real processes."""

from __future__ import annotations

from pathlib import Path

from ._helpers import fleetrun, show_json


def _apply(tmp_path: Path, plan: str) -> tuple[Path, str]:
    path = tmp_path / "plan.yaml"
    path.write_text(plan)
    ran = fleetrun("apply", str(path), "--plain")
    assert ran.returncode == 1, ran.stdout + ran.stderr
    return tmp_path / ".fleetrun", ran.stdout + ran.stderr


def test_show_compacts_the_exit_codes_of_many_attempts(tmp_path: Path) -> None:
    state, _ = _apply(
        tmp_path,
        "tasks:\n"
        "  flaky:\n"
        "    retry: {attempts: 12, backoff: 0s}\n"
        '    run: "exit $(( FLEETRUN_ATTEMPT < 11 ? 1 : 3 ))"\n',
    )
    shown = fleetrun("show", "--state-dir", str(state))
    assert shown.returncode == 0, shown.stderr
    row = next(ln for ln in shown.stdout.splitlines() if ln.startswith("flaky "))
    assert row.split()[:5] == ["flaky", "failed", "12", row.split()[3], "1x10,3x2"]
    data = show_json(state)
    assert [a["exit_code"] for a in data["instances"][0]["attempt_list"]] == [1] * 10 + [3, 3]


PLAN = r"""
targets:
  down: {ssh: "127.0.0.1:1"}
tasks:
  refused: {for_each: all, runs_on: ssh, run: "echo hi"}
  killed: {run: "kill -9 $$"}
  bad-output: {run: 'printf ''x=\377\n'' > "$FLEETRUN_OUTPUT"'}
  plain: {run: "echo boom; exit 4"}
"""

CAUSES = {
    "refused@down": "down: 127.0.0.1:1: connection refused (no SSH server on that port)",
    "killed": "killed by signal 9 (SIGKILL)",
    "bad-output": "bad-output: output 'x' is not UTF-8 text",
    "plain": "exit 4",
}


def test_failures_without_an_exit_code_say_their_cause_once(tmp_path: Path) -> None:
    """An SSH target on a closed port, a command killed by a signal, an output
    refused, and a plain exit: each failure line names its cause once, and the
    attempt that could not connect is an attempt tried everywhere it is counted."""
    state, out = _apply(tmp_path, PLAN)
    assert "None" not in out
    for key, cause in CAUSES.items():
        [line] = [ln for ln in out.splitlines() if f" failed     {key} (" in ln]
        assert cause in line
        # The cause once: not again in the lines of the log tail under it.
        assert "\n".join(out.splitlines()).count(cause) == 2, key  # its line + the summary
    summary = out[out.index("failed (4):") :].splitlines()[1:5]
    assert [ln for ln in summary if " — " in ln] == ["  plain         exit 4 — boom"]

    shown = show_json(state)
    tried = {i["key"]: (i["attempts"], len(i["attempt_list"])) for i in shown["instances"]}
    assert tried == dict.fromkeys(CAUSES, (1, 1))
    reasons = {i["key"]: i["reason"] for i in shown["instances"]}
    assert all(cause in reasons[key] for key, cause in CAUSES.items())

    junit = fleetrun("report", "--state-dir", str(state), "--format", "junit")
    assert junit.returncode == 0, junit.stderr
    assert "0 attempt(s)" not in junit.stdout
    assert "None" not in junit.stdout
    assert junit.stdout.count("failed after 1 attempt(s)") == 4
    assert f'message="{CAUSES["refused@down"]}"' in junit.stdout
    for fmt in ("table", "markdown", "html"):
        report = fleetrun("report", "--state-dir", str(state), "--format", fmt)
        assert "signal None" not in report.stdout, fmt

    logged = fleetrun("logs", "refused@down", "--state-dir", str(state))
    assert logged.returncode == 0, logged.stderr
    assert CAUSES["refused@down"] in logged.stdout
