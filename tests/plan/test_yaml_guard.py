"""The alias-bomb guard counts what aliases expand to, never the values written."""

from __future__ import annotations

import pytest

from fleetrun.errors import Diagnostic, PlanError
from fleetrun.plan import _yaml
from fleetrun.plan._yaml import YMap, YSeq, load_yaml, to_python


@pytest.fixture
def small_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_yaml, "MAX_ALIAS_VALUES", 100)


def test_written_values_are_not_limited(small_limit: None) -> None:
    text = "targets:\n" + "".join(f"  t{i}: {{zone: z{i % 3}, n: {i}}}\n" for i in range(3000))
    problems: list[Diagnostic] = []
    root = load_yaml(text, "f.yaml", problems)
    assert problems == []
    assert isinstance(root, YMap)
    targets = to_python(root)["targets"]
    assert len(targets) == 3000
    assert targets["t2999"] == {"zone": "z2", "n": 2999}


def test_merges_in_proportion_to_the_text_are_accepted(small_limit: None) -> None:
    # 2,000 aliases of a 4-value mapping: 8,000 values by expansion, far past the
    # limit of 100, but within ten times what the text writes.
    text = "base: &d {zone: eu, role: v, size: 2}\ntargets:\n" + "".join(
        f"  t{i}: {{<<: *d, n: {i}}}\n" for i in range(2000)
    )
    problems: list[Diagnostic] = []
    data = to_python(load_yaml(text, "f.yaml", problems))
    assert problems == []
    assert len(data["targets"]) == 2000
    assert data["targets"]["t7"] == {"n": 7, "zone": "eu", "role": "v", "size": 2}


def test_an_alias_bomb_is_refused_where_it_explodes(small_limit: None) -> None:
    text = (
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
    )
    with pytest.raises(PlanError) as info:
        load_yaml(text, "f.yaml", [])
    (diag,) = info.value.diagnostics
    assert str(diag.location) == "f.yaml:3:8"
    assert "aliases expand to more than 100 values (alias bomb?)" in diag.message


def test_aliases_share_their_anchor() -> None:
    root = load_yaml("a: &x [1, 2]\nb: *x\n", "f.yaml", [])
    assert isinstance(root, YMap)
    a, b = root.entries["a"][1], root.entries["b"][1]
    assert isinstance(a, YSeq)
    assert a is b


def test_undefined_alias_and_second_document_are_one_line_each() -> None:
    with pytest.raises(PlanError, match=r"f.yaml:1:4: alias \*nope names no anchor before it"):
        load_yaml("a: *nope\n", "f.yaml", [])
    with pytest.raises(PlanError, match=r"f.yaml:2:1: expected a single document"):
        load_yaml("a: 1\n---\nb: 2\n", "f.yaml", [])
