"""The files a real run leaves are exactly those ``RunLayout`` names: the engine,
the session and the journal's readers share one spelling of a run directory."""

from __future__ import annotations

import json
from pathlib import Path

from fleetrun.layout import RunLayout
from fleetrun.state import JournalReader

from ._helpers import fleetrun

PLAN = """\
name: layout
vars: {x: "0"}
targets:
  eu/west: {}
  us: {}
tasks:
  build:
    run: echo v=1 >> "$FLEETRUN_OUTPUT"
  deploy:
    for_each: all
    needs: [build]
    retry: {attempts: 2, backoff: 0s}
    run: echo "$FLEETRUN_TARGET"; test "$FLEETRUN_ATTEMPT" = 2
"""


def test_a_run_leaves_exactly_the_files_its_layout_names(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)
    res = fleetrun("apply", str(plan), "--plain", "--var", "x=1")
    assert res.returncode == 0, res.stdout + res.stderr
    state = tmp_path / ".fleetrun"
    with JournalReader(state) as r:
        run = r.run()
        instances = {i.key: i for i in r.instances(run.id)}
        attempts = r.attempts(run.id)
    layout = RunLayout.of(state, run.id)
    expected = {layout.vars_file}
    for a in attempts:
        inst = instances[a.key]
        log = layout.log(inst.task, inst.target, a.n)
        assert a.log_path == str(log)
        expected.add(log)
    # deploy's first attempt on each target failed; build published outputs.
    assert sorted((a.key, a.n) for a in attempts) == [
        ("build", 1), ("deploy@eu/west", 1), ("deploy@eu/west", 2), ("deploy@us", 1),
        ("deploy@us", 2),
    ]  # fmt: skip
    expected.add(layout.attempt_outputs("build", None, 1))
    files = {p for p in layout.directory.rglob("*") if p.is_file()}
    assert files == expected
    assert json.loads(layout.vars_file.read_text()) == {"x": "1"}
    assert layout.log("deploy", "eu/west", 2).read_text() == "eu/west\n"
