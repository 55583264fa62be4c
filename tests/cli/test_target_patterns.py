"""``-t``/``--targets`` patterns: one selection for ``apply``, ``plan`` and ``exec``.

Globs, attribute comparisons, ``a:b`` (either), ``a:&b`` (both), ``!a`` (not),
and the groups a fleet file defines. The table checks the parser on a loaded
plan; the commands are then run for real.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleetrun.errors import UsageError
from fleetrun.plan import load_plan_text
from fleetrun.plan._select import targets_named

from ._helpers import fleetrun, show_json

PLAN = """\
name: patterns
targets:
  web1: {role: web, geo: europe, size: 2}
  web2: {role: web, geo: asia, size: 4}
  db1: {role: db, geo: europe, size: 8}
  admin: {role: admin, geo: europe}
  "eu:odd": {role: db, geo: europe}
groups:
  dbs: {where: "role == 'db'"}
  canary: [web1, db1]
tasks:
  hello: {for_each: all, run: "echo {{ target.name }}"}
"""

SELECTS = [
    ("web1", {"web1"}),
    ("dbs", {"db1", "eu:odd"}),
    ("all", {"web1", "web2", "db1", "admin", "eu:odd"}),
    ("*", {"web1", "web2", "db1", "admin", "eu:odd"}),
    ("web*", {"web1", "web2"}),
    ("web?", {"web1", "web2"}),
    ("db?", {"db1", "eu:odd"}),  # db1, and the group dbs
    ("can*", {"web1", "db1"}),  # a glob over group names brings the members
    ("geo==europe", {"web1", "db1", "admin", "eu:odd"}),
    ("geo==asia", {"web2"}),
    ("role!=web", {"db1", "admin", "eu:odd"}),
    ("size>=4", {"web2", "db1"}),
    ("geo == 'europe' and role != admin", {"web1", "db1", "eu:odd"}),
    ("role==admin or geo==asia", {"web2", "admin"}),
    ("web1:db1", {"web1", "db1"}),
    ("web1,db1", {"web1", "db1"}),
    ("web*:&geo==europe", {"web1"}),
    ("canary:&web*", {"web1"}),
    ("!admin", {"web1", "web2", "db1", "eu:odd"}),
    ("geo==europe:!admin:!dbs", {"web1"}),
    ("!admin,!dbs", {"web1", "web2"}),
    ("eu:odd", {"eu:odd"}),  # an exact name is taken whole
    ("name==web2", {"web2"}),
]


@pytest.mark.parametrize(("pattern", "expected"), SELECTS)
def test_a_pattern_selects(pattern: str, expected: set[str]) -> None:
    plan = load_plan_text(PLAN)
    names = [n.strip() for n in pattern.split(",")] if pattern != "eu:odd" else [pattern]
    assert targets_named(plan, names) == expected


REFUSED = [
    ("wbe1", "unknown target or group 'wbe1' (did you mean 'web1'?)"),
    ("nothing*", "the pattern 'nothing*' matches no target or group"),
    ("gep==europe", "'gep' is no attribute of any target (did you mean the attribute 'geo'?)"),
    ("validators>=2", "'validators' is no attribute of any target; name an attribute"),
    ("size>='big'", "cannot compare number 2 >= string 'big'"),
    ("geo==", "cannot read the target pattern 'geo=='"),
    ("!", "empty term"),
]


@pytest.mark.parametrize(("pattern", "message"), REFUSED)
def test_a_wrong_pattern_is_refused_with_what_is_wrong(pattern: str, message: str) -> None:
    plan = load_plan_text(PLAN)
    with pytest.raises(UsageError) as info:
        targets_named(plan, [pattern])
    assert message in str(info.value)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_plan_and_apply_take_the_same_patterns(tmp_path: Path) -> None:
    plan = _write(tmp_path, "plan.yaml", PLAN)
    shown = fleetrun("plan", str(plan), "-t", "web*:&geo==europe", "-t", "db1", "--format", "json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["selection"]["named"] == ["hello@web1", "hello@db1"]
    state = tmp_path / "st"
    done = fleetrun("apply", str(plan), "--state-dir", str(state), "--plain", "-t", "!admin")
    assert done.returncode == 0, done.stdout + done.stderr
    ran = {i["key"] for i in show_json(state)["instances"]}
    assert ran == {"hello@web1", "hello@web2", "hello@db1", "hello@eu:odd"}
    bad = fleetrun("apply", str(plan), "--state-dir", str(state), "-t", "rol==admin")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "error: the target pattern 'rol==admin': 'rol' is no attribute of any target "
        "(did you mean the attribute 'role'?); name an attribute the targets have: "
        "geo, role, size"
    ]
    # A bare word right of the operator is text: one that no target has selects nothing.
    none = fleetrun("apply", str(plan), "--state-dir", str(state), "-t", "role==admn")
    assert none.returncode == 2
    assert "no task instance matches the selection" in none.stderr


def test_exec_takes_the_patterns_and_a_fleet_files_groups(tmp_path: Path) -> None:
    fleet = _write(
        tmp_path,
        "fleet.yaml",
        "targets:\n"
        "  web1: {role: web}\n  web2: {role: web}\n  db1: {role: db}\n"
        "groups:\n  web: {where: \"role == 'web'\"}\n  primary: [web1, db1]\n",
    )
    state = ("--state-dir", str(tmp_path / "st"))
    for pattern, expected in (
        ("web", ["web1", "web2"]),
        ("primary:!web", ["db1"]),
        ("role==db", ["db1"]),
        ("w*:&primary", ["web1"]),
    ):
        res = fleetrun("exec", str(fleet), *state, "--format", "json", "-t", pattern, "--",
                       "echo", "{{ target.name }}")  # fmt: skip
        assert res.returncode == 0, (pattern, res.stdout, res.stderr)
        got = [o["target"] for o in json.loads(res.stdout)]
        assert got == expected, pattern
        assert [o["output"].strip() for o in json.loads(res.stdout)] == expected
