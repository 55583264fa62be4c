"""Target and task names are free text: whatever a name becomes on disk is its own,
also where a file system folds case, normalizes Unicode or limits a component's
length, and every reader (``outputs``, ``logs``, ``--output ordered``, the
dependents' outputs, the journal's reader) finds each instance's own files."""

from __future__ import annotations

import json
import sqlite3
import unicodedata
from pathlib import Path

from fleetrun.layout import MAX_NAME_BYTES, RunLayout, disk_name
from fleetrun.state import JournalReader

from ._helpers import fleetrun

# Pairs that one file system or another takes for one name: "/" made "_", case,
# NFC/NFD, and two long names alike in their first 199 bytes.
NAMES = [
    "prod/eu",
    "prod_eu",
    "EU",
    "eu",
    "caf\u00e9",
    "cafe\u0301",
    "x" * 199 + "a",
    "x" * 199 + "b",
    "é" * 100,
]

PLAN = """\
name: names
targets:
{targets}
tasks:
  pub:
    for_each: all
    run: |
      echo "pub {{{{ target.name }}}}"
      echo "who={{{{ target.name }}}}" >> "$FLEETRUN_OUTPUT"
  t:
    for_each: all
    needs: [pub]
    run: echo "got {{{{ tasks.pub.outputs.who }}}}"
"""


def _plan(tmp_path: Path, names: list[str]) -> Path:
    targets = "\n".join(f"  {json.dumps(n)}: {{}}" for n in names)
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN.format(targets=targets))
    return plan


def _same_for_some_file_system(name: str) -> str:
    """What a case-folding, normalizing file system compares."""
    return unicodedata.normalize("NFC", name).casefold()


def test_names_that_meet_on_some_file_system_keep_their_own_files(tmp_path: Path) -> None:
    plan = _plan(tmp_path, NAMES)
    res = fleetrun("apply", str(plan), "-q", "--output", "ordered")
    assert res.returncode == 0, res.stdout + res.stderr
    # Each target's lines, its own, in fleet order.
    rows = [line.split() for line in res.stdout.splitlines()]
    assert rows == [[n, "pub", n] for n in NAMES] + [[n, "got", n] for n in NAMES], res.stdout

    out = fleetrun("outputs", "--plan", str(plan), "--format", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {f"pub@{n}": {"who": n} for n in NAMES}

    for name in NAMES:
        log = fleetrun("logs", f"t@{name}", "--plan", str(plan))
        assert log.returncode == 0, log.stderr
        assert log.stdout == f"got {name}\n"

    # On disk: one file per instance and attempt, distinct whatever the file
    # system compares, each component within 255 bytes.
    state = tmp_path / ".fleetrun"
    for folder in ("logs", "outputs"):
        for task in ("pub", "t") if folder == "logs" else ("pub",):
            files = list(state.glob(f"runs/*/{folder}/{task}/*"))
            assert len(files) == len(NAMES), files
            assert len({_same_for_some_file_system(f.name) for f in files}) == len(NAMES)
            assert all(len(f.name.encode()) <= 255 for f in files)


def test_disk_names_keep_plain_names_and_tell_the_rest_apart() -> None:
    assert [disk_name(n) for n in ("eu-west", "prod_eu", "uksouth", "a.b", "n1")] == [
        "eu-west", "prod_eu", "uksouth", "a.b", "n1",
    ]  # fmt: skip
    assert disk_name("prod/eu").startswith("prod_eu~")
    assert disk_name("EU").startswith("EU~")
    others = [*NAMES, "", ".", "..", ".hidden", "a~b", "a\0b", "x" * 300, "\udcff", "Deploy"]
    got = [disk_name(n) for n in others]
    assert len({_same_for_some_file_system(g) for g in got}) == len(others)
    for g in got:
        assert g.isascii()
        assert g.isprintable()
        assert 0 < len(g.encode()) <= MAX_NAME_BYTES
        assert "/" not in g
        assert not g.startswith(".")
    # The same name, the same file, run after run.
    assert disk_name("prod/eu") == disk_name("prod/eu")


def test_a_run_recorded_with_the_older_spelling_is_still_read(tmp_path: Path) -> None:
    # A run whose files were named the older way (``/`` made ``_``), with one log
    # the journal never recorded: the reader finds it by that spelling.
    plan = _plan(tmp_path, ["prod/eu", "us"])
    res = fleetrun("apply", str(plan), "--plain")
    assert res.returncode == 0, res.stdout + res.stderr
    state = tmp_path / ".fleetrun"
    with JournalReader(state) as r:
        run_id = r.run().id
    layout = RunLayout.of(state, run_id)
    new = layout.log("t", "prod/eu", 1)
    old_dir, old_stem = layout.legacy_names("t", "prod/eu")
    assert (old_dir, old_stem) == (str(layout.logs / "t"), "prod_eu")
    new.rename(RunLayout.log_file(old_dir, old_stem, 1))
    with sqlite3.connect(state / "state.db") as db:
        db.execute("DELETE FROM attempts WHERE run_id=? AND key='t@prod/eu'", (run_id,))
    db.close()
    with JournalReader(state) as r:
        found = r.unrecorded_attempts(run_id)
    assert [(a.key, a.n, a.log_path) for a in found] == [
        ("t@prod/eu", 1, RunLayout.log_file(old_dir, old_stem, 1))
    ]
