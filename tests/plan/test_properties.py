"""Property tests: no input makes the loader fail other than with a clean PlanError.

Random texts, random YAML structures built from the plan's own vocabulary,
mutations of a valid plan, and random valid plans (which must load, with the
structure they were built with).
"""

from __future__ import annotations

import string
from typing import Any

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fleetrun.errors import PlanError
from fleetrun.plan import Plan, load_plan_text

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = [
    "name",
    "env_file",
    "env",
    "secrets",
    "secret_patterns",
    "vars",
    "targets",
    "groups",
    "pools",
    "defaults",
    "phases",
    "tasks",
    "run",
    "phase",
    "for_each",
    "needs",
    "timeout",
    "retry",
    "cwd",
    "estimate",
    "description",
    "where",
    "concurrency",
    "rate",
    "burst",
    "adaptive",
    "attempts",
    "backoff",
    "max_backoff",
    "on",
    "exit",
    "output",
    "task",
    "at_least",
    "all",
    "a",
    "b",
    "t1",
    "<<",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 200),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [
            "30s",
            "5m",
            "1h30m",
            "10/s",
            "67%",
            "a[*]",
            "a",
            "b",
            "all",
            "{{ target.name }}",
            "{{ vars.x }}",
            "{{ tasks.a.outputs.k }}",
            "role != 'admin'",
            "x ==",
            "",
            "fleet.yaml",
            ".env",
        ]
    ),
    st.text(max_size=12),
)


def _check(text: str) -> Plan | None:
    """Load ``text``; only PlanError may come out, and never an internal error."""
    try:
        return load_plan_text(text)
    except PlanError as e:
        problems = e.diagnostics
    assert problems
    for d in problems:
        assert "internal error" not in d.message, str(d)
        assert d.location is not None
        assert d.location.line >= 1
        assert d.location.column >= 1
        assert str(d)
    return None


@FAST
@given(st.text(max_size=300))
def test_random_text_never_crashes(text: str) -> None:
    _check(text)


@FAST
@given(st.text(alphabet="{}[]:,-'\"&*!|>#%@` \n\tab1", max_size=120))
def test_yaml_punctuation_never_crashes(text: str) -> None:
    _check(text)


STRUCTURES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), children, max_size=5),
    ),
    max_leaves=25,
)


@FAST
@given(st.dictionaries(st.sampled_from(KEYS), STRUCTURES, max_size=8))
@example(data={"env_file": "\x00"})  # a NUL in a file name is a plan error
def test_random_structures_never_crash(data: dict[str, Any]) -> None:
    _check(yaml.safe_dump(data, allow_unicode=True))


VALID = """\
name: demo
vars: {x: 1}
targets:
  a: {role: v, n: 1}
  b: {role: admin, n: 2}
groups:
  v: {where: "role == 'v'"}
pools:
  api: {concurrency: 2, rate: 10/s}
defaults: {timeout: 5m, retry: {attempts: 2, on: {exit: [75]}}}
phases: [one, two]
tasks:
  p: {phase: one, for_each: all, pools: [api], run: "echo {{ target.name }} {{ vars.x }}"}
  q: {phase: two, for_each: v, needs: [p], run: "echo {{ tasks.p.outputs.k }}"}
  r: {phase: two, needs: [{task: p, at_least: "50%"}, "q[*]"], run: "true"}
"""


def test_the_mutated_plan_is_valid_to_start_with() -> None:
    plan = _check(VALID)
    assert plan is not None
    assert list(plan.tasks) == ["p", "q", "r"]


@FAST
@given(st.data())
def test_mutations_of_a_valid_plan_never_crash(data: st.DataObject) -> None:
    text = VALID
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(text)))
        j = data.draw(st.integers(i, min(len(text), i + 8)))
        text = text[:i] + data.draw(st.text(alphabet=string.printable, max_size=6)) + text[j:]
    _check(text)


@FAST
@given(st.data())
def test_line_shuffles_of_a_valid_plan_never_crash(data: st.DataObject) -> None:
    lines = VALID.splitlines()
    kept = data.draw(st.lists(st.sampled_from(lines), max_size=len(lines)))
    _check("\n".join(kept) + "\n")


NAMES = st.from_regex(r"[a-z][a-z0-9_-]{0,6}", fullmatch=True)
HOSTILE = st.sampled_from(["a; rm -rf ~", "$(reboot)", "`id`", "x'y", 'q"q', "ü ñ", "-n"])


@st.composite
def valid_plans(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A random valid plan and what it must resolve to."""
    targets = draw(st.lists(st.one_of(NAMES, HOSTILE), min_size=1, max_size=6, unique=True))
    zones = {t: draw(st.sampled_from(["eu", "us"])) for t in targets}
    tasks: dict[str, dict[str, Any]] = {}
    names = draw(st.lists(NAMES, min_size=1, max_size=7, unique=True))
    for i, name in enumerate(names):
        task: dict[str, Any] = {"run": "echo {{ vars.v }}"}
        fanned = draw(st.booleans())
        if fanned:
            task["for_each"] = "all"
            task["run"] = "echo {{ target.name }} {{ target.zone }}"
        needs: list[Any] = []
        # Needs only point backwards: the plan is acyclic by construction.
        for dep in draw(st.lists(st.sampled_from(names[:i]), unique=True)) if i else []:
            form = draw(st.sampled_from(["auto", "all", "quorum", "percent"]))
            dep_fanned = tasks[dep].get("for_each") == "all"
            count = len(targets) if dep_fanned else 1
            if form == "auto":
                needs.append(dep)
                if not fanned or not dep_fanned:
                    if not dep_fanned:
                        task["run"] += f" {{{{ tasks.{dep}.outputs.k }}}}"
                else:
                    task["run"] += f" {{{{ tasks.{dep}.outputs.k }}}}"
            elif form == "all":
                needs.append(f"{dep}[*]")
            elif form == "quorum":
                needs.append({"task": dep, "at_least": draw(st.integers(1, count))})
            else:
                needs.append({"task": dep, "at_least": f"{draw(st.integers(1, 100))}%"})
        if needs:
            task["needs"] = needs
        if draw(st.booleans()):
            task["estimate"] = draw(st.sampled_from(["1s", "2m", "1h30m", 3, 0.5]))
        tasks[name] = task
    doc = {
        # A NUL is a plan error of its own (no command can hold one).
        "vars": {
            "v": draw(SCALARS.filter(lambda s: not isinstance(s, float) and "\0" not in str(s)))
        },
        "targets": {t: {"zone": z} for t, z in zones.items()},
        "groups": {"eu": {"where": "zone == 'eu'"}},
        "tasks": tasks,
    }
    facts = {
        "targets": targets,
        "eu": [t for t in targets if zones[t] == "eu"],
        "tasks": names,
        "fanned": {n for n, t in tasks.items() if "for_each" in t},
    }
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), facts


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_plans())
def test_random_valid_plans_load(case: tuple[str, dict[str, Any]]) -> None:
    text, facts = case
    try:
        plan = load_plan_text(text)
    except PlanError as e:
        raise AssertionError(f"{e}\n---\n{text}") from None
    assert list(plan.targets) == facts["targets"]
    assert list(plan.groups["eu"]) == facts["eu"]
    assert list(plan.groups["all"]) == facts["targets"]
    assert list(plan.tasks) == facts["tasks"]
    for name, task in plan.tasks.items():
        assert (task.targets is not None) == (name in facts["fanned"])
        if task.targets is not None:
            # Rendering quotes every hostile name into a single shell word.
            for t in task.targets:
                out = task.run.render(
                    plan.targets[t], plan.vars, {d: {"k": "v"} for d in plan.tasks}
                )
                assert out.startswith("echo ")
                assert "$(reboot)" not in out or "'$(reboot)'" in out
