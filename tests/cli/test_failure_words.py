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
