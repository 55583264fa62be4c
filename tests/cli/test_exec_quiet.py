"""``fleetrun exec`` on local targets as a journaled run, and ``--quiet`` day-2 output."""

from __future__ import annotations

import json
from pathlib import Path

from ._helpers import fleetrun, show_json

FLEET = """\
web1: {role: web}
web2: {role: web}
db1: {role: db}
"""

STATUS = """\
name: status
targets: fleet.yaml
tasks:
  status:
    for_each: all
    run: 'echo "{{ target.name }} is {{ target.role }}"; test {{ target.name }} != db1'
"""


def test_exec_prints_blocks_in_fleet_order_then_a_table_and_retries(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET)
    marker = tmp_path / "m"
    cmd = f'echo "hello from {{{{ target.name }}}}"; test -e {marker}-{{{{ target.name }}}}'
    first = fleetrun("exec", str(fleet), "--", cmd)
    assert first.returncode == 1
    out = first.stdout
    # Blocks in fleet order, whatever order the targets finished in.
    heads = [line.split()[1] for line in out.splitlines() if line.startswith("── ")]
    assert heads == ["web1", "web2", "db1"]
    assert "hello from web2" in out
    table = out[out.index("TARGET  ") :].splitlines()
    assert [row.split()[:2] for row in table[1:4]] == [["web1", "1"], ["web2", "1"], ["db1", "1"]]
    assert table[4] == "0 succeeded, 3 failed"
    # A journaled run: retry re-runs what failed, with the same command.
    (tmp_path / "m-web2").touch()
    again = fleetrun("retry", "--plan", str(fleet), "--plain")
    assert again.returncode == 1
    states = {i["key"]: i["status"] for i in show_json(tmp_path / ".fleetrun")["instances"]}
    assert states == {"exec@web1": "failed", "exec@web2": "succeeded", "exec@db1": "failed"}
    # --format json for scripts; -t selects.
    as_json = fleetrun("exec", str(fleet), "-t", "db1", "--format", "json", "--", "echo", "x")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert [(d["target"], d["ok"], d["last_line"]) for d in data] == [("db1", True, "x")]


def test_exec_refuses_bad_usage_in_one_line(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET)
    unknown = fleetrun("exec", str(fleet), "-t", "nope", "--", "true")
    assert unknown.returncode == 2
    assert "nope" in unknown.stderr
    bad_timeout = fleetrun("exec", str(fleet), "--timeout", "soon", "--", "true")
    assert bad_timeout.returncode == 2
    assert "--timeout 'soon'" in bad_timeout.stderr
    for r in (unknown, bad_timeout):
        assert "Traceback" not in r.stderr


def test_quiet_ordered_reads_like_a_table(tmp_path: Path) -> None:
    (tmp_path / "fleet.yaml").write_text(FLEET)
    plan = tmp_path / "status.yaml"
    plan.write_text(STATUS)
    done = fleetrun("apply", str(plan), "--quiet", "--output", "ordered")
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[:3] == ["web1  web1 is web", "web2  web2 is web", "db1   db1 is db"]
    # Nothing else but the failure and the summary: no started/succeeded lines.
    assert not any(" started " in line or " succeeded " in line for line in lines)
    assert any("failed     status@db1" in line for line in lines)
    assert any(line.startswith("next: fleetrun retry") for line in lines)
    ok_plan = tmp_path / "ok.yaml"
    ok_plan.write_text(STATUS.replace("; test {{ target.name }} != db1", ""))
    ok = fleetrun("apply", str(ok_plan), "-q", "--output", "ordered")
    assert ok.returncode == 0
    assert ok.stdout.splitlines() == ["web1  web1 is web", "web2  web2 is web", "db1   db1 is db"]
