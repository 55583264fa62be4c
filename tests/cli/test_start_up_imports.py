"""What a command loads in a fresh process: each command pays at start-up only for
the parts it uses. A plain ``apply`` draws no live view and writes no report, so
rich and the report renderers stay unloaded; a command that only reads the record
(``show``, ``history``) never loads the plan reader (pydantic, YAML).

Module sets, not times: the sets hold on any machine, however loaded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ._helpers import env

PLAN = 'name: one\ntargets: {a: {}}\ntasks:\n  t: {run: "true"}\n'

# Runs the command as ``python -m fleetrun`` would, then writes the names of the
# loaded modules to the file named by the first argument.
_RUN = """\
import json, sys
from fleetrun.cli._main import main
out, args = sys.argv[1], sys.argv[2:]
try:
    main(args)
finally:
    with open(out, "w") as f:
        json.dump(sorted(sys.modules), f)
"""


def _loaded(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    out = tmp_path / "modules.json"
    p = subprocess.run(
        [sys.executable, "-c", _RUN, str(out), *args],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return p, set(json.loads(out.read_text()))


def _top(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_a_plain_apply_loads_no_live_view_and_no_report_renderer(tmp_path: Path) -> None:
    (tmp_path / "p1.yaml").write_text(PLAN)
    p, loaded = _loaded(tmp_path, "apply", "p1.yaml", "--plain", "-q")
    assert (p.returncode, p.stdout) == (0, "1 succeeded (of 1)\n"), p.stderr
    # What it needs is there: the plan reader, the plain console, the journal.
    assert {"fleetrun.plan._spec", "fleetrun.report._plain", "fleetrun.state._journal"} <= loaded
    assert "rich" not in _top(loaded)
    unused = {
        "fleetrun.report._build",
        "fleetrun.report._formats",
        "fleetrun.report._html",
        "fleetrun.report._live",
        "fleetrun.report._live_render",
        "fleetrun.report._model",
        "fleetrun.report._views",
        "xml.etree.ElementTree",
    }
    assert sorted(unused & loaded) == []


def test_the_record_readers_load_no_plan_reader(tmp_path: Path) -> None:
    (tmp_path / "p1.yaml").write_text(PLAN)
    p, _ = _loaded(tmp_path, "apply", "p1.yaml", "--plain", "-q")
    assert p.returncode == 0, p.stderr
    for command in ("show", "history"):
        p, loaded = _loaded(tmp_path, command, "--plan", "p1.yaml")
        assert p.returncode == 0, (command, p.stderr)
        assert "succeeded" in p.stdout, (command, p.stdout)
        assert "fleetrun.state._reader" in loaded
        assert sorted(_top(loaded) & {"pydantic", "pydantic_core", "yaml", "rich"}) == []
        assert sorted(m for m in loaded if m.startswith("fleetrun.plan._loader")) == []
