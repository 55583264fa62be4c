"""Template values quoted for where they stand: each context x hostile value through /bin/sh.

Every case renders a command, runs it with the real ``/bin/sh -c`` and has
the child (an executable script, a process of its own started through
``execve``) write the argv it received to a file; the test asserts that the
argument is exactly the value, and that nothing the value tried to run did run
(no ``PWNED`` file).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fleetrun.errors import PlanError
from fleetrun.plan import Target, Template, load_plan_text

HOSTILE = [
    "plain",
    "",
    "two words",
    'x" ; touch PWNED ; echo "',
    "x' ; touch PWNED ; echo '",
    "$(touch PWNED)",
    "`touch PWNED`",
    "${HOME}",
    "$HOME",
    "a\\",
    "\\",
    '\\"',
    "\\'",
    "'\"'\"'",
    "it's",
    'say "hi"',
    "line one\nline two",
    "trailing newline\n",
    "!",
    "!!",
    "*",
    "~",
    "-n",
    "a\tb",
    "; touch PWNED",
    "&& touch PWNED",
    "| touch PWNED",
    "> PWNED",
    "$'\\n'",
    "#not a comment",
    "ünïcødé €",
    "}}{{",
]

# Contexts: (id, template, expected argument as a function of the value).
CONTEXTS = [
    ("bare", "{{ vars.v }}", lambda v: v),
    ("double", '"{{ vars.v }}"', lambda v: v),
    ("single", "'{{ vars.v }}'", lambda v: v),
    ("double, inside text", '"region={{ vars.v }}!"', lambda v: f"region={v}!"),
    ("single, inside text", "'<{{ vars.v }}>'", lambda v: f"<{v}>"),
    ("bare, in a word", "-var=x{{ vars.v }}y", lambda v: f"-var=x{v}y"),
    ("bare, then double", '{{ vars.v }}"{{ vars.v }}"', lambda v: v + v),
    ("assignment", None, lambda v: v),
    # Command substitution drops trailing newlines, as the shell always does.
    ("bare in $()", '"$(printf %s {{ vars.v }})"', lambda v: v.rstrip("\n")),
    ("double in $() in double", '"$(printf %s "{{ vars.v }}")"', lambda v: v.rstrip("\n")),
    ("after a here-document", None, lambda v: v),
    ("after a comment line", None, lambda v: v),
    ("on the line of a here-document", None, lambda v: v),
]

# The child writes how many arguments it got, then each of them, each ended by a
# NUL byte (no argument can hold one). A shell script rather than a Python one:
# the argv reaches it through execve just the same, and its 416 runs cost
# milliseconds where a Python interpreter's start costs tens of them each.
WRITER = '#!/bin/sh\nout=$1\nshift\nprintf \'%s\\0\' "$#" "$@" > "$out"\n'


def _received(out: Path) -> list[str]:
    """The arguments the child wrote to ``out``."""
    count, *args, last = out.read_bytes().split(b"\0")
    assert last == b"", out.read_bytes()
    assert len(args) == int(count), out.read_bytes()
    return [a.decode() for a in args]


def _command(ident: str, template: str | None) -> str:
    head = '"$WRITER" "$OUT" '
    if ident == "assignment":
        return 'v={{ vars.v }}; w="{{ vars.v }}"; ' + head + '"$v"; test "$v" = "$w" || exit 9'
    if ident == "after a here-document":
        return "cat >/dev/null <<'EOF'\n$(touch PWNED) \"'\nEOF\n" + head + "'{{ vars.v }}'"
    if ident == "on the line of a here-document":
        return "cat >/dev/null <<'EOF'; " + head + "{{ vars.v }}\n$(touch PWNED) '\nEOF"
    if ident == "after a comment line":
        return "# it's a comment, with \"quotes\n" + head + '"{{ vars.v }}"'
    assert template is not None
    return head + template


@pytest.mark.parametrize("value", HOSTILE, ids=[repr(v) for v in HOSTILE])
@pytest.mark.parametrize(("ident", "template", "expected"), CONTEXTS, ids=[c[0] for c in CONTEXTS])
def test_child_receives_exactly_the_value(
    tmp_path: Path, ident: str, template: str | None, expected: object, value: str
) -> None:
    writer = tmp_path / "writer.sh"
    writer.write_text(WRITER)
    writer.chmod(0o755)
    out = tmp_path / "argv.bin"
    command = Template.parse(_command(ident, template)).render(None, {"v": value})
    env = {"WRITER": str(writer), "OUT": str(out), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        ["/bin/sh", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, (command, proc.stderr)
    assert callable(expected)
    assert _received(out) == [expected(value)], command
    assert not (tmp_path / "PWNED").exists(), command


def test_target_name_with_a_double_quote_stays_text(tmp_path: Path) -> None:
    """The reported injection: ``run: echo "deploying {{ target.name }}"``."""
    name = 'x" ; touch PWNED ; echo "'
    plan = load_plan_text(
        "targets: {'x\" ; touch PWNED ; echo \"': {}}\n"
        "tasks:\n"
        "  t:\n"
        "    for_each: all\n"
        "    run: 'echo \"deploying {{ target.name }}\"'\n"
    )
    command = plan.tasks["t"].run.render(plan.targets[name], plan.vars)
    proc = subprocess.run(
        ["/bin/sh", "-c", command], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert proc.stdout == f"deploying {name}\n"
    assert not (tmp_path / "PWNED").exists()


def test_contexts_are_worked_out_at_parse_time() -> None:
    t = Template.parse(
        "a {{ target.name }} \"{{ target.name }}\" '{{ target.name }}' "
        '$(b "{{ target.name }}" {{ target.name }}) {{ raw vars.f }}'
    )
    assert [(r.context, r.raw) for r in t.refs] == [
        ("bare", False),
        ("double", False),
        ("single", False),
        ("double", False),
        ("bare", False),
        ("bare", True),
    ]
    rendered = t.render(Target("it's"), {"f": "--x $Y"})
    assert rendered == ("a 'it'\"'\"'s' \"it's\" 'it'\\''s' $(b \"it's\" 'it'\"'\"'s') --x $Y")


# (template, message fragment, fix fragment)
REFUSED = [
    ("cat <<EOF\n{{ target.name }}\nEOF", "inside a here-document", "$FLEETRUN_TARGET"),
    ("cat <<-'EOF'\n\t{{ vars.v }}\n\tEOF", "inside a here-document", "$v in the here-document"),
    ("cat <<{{ vars.v }}\nx\n", "as a here-document delimiter", "fixed delimiter"),
    ("cat <<EOF{{ vars.v }}\nx\n", "as a here-document delimiter", "fixed delimiter"),
    ("echo hi # {{ vars.v }}", "inside a comment", "out of the comment"),
    ("echo $(( {{ vars.v }} + 1 ))", "inside arithmetic ((...))", "through a variable"),
    ("echo `echo {{ vars.v }}`", "inside backticks", "$(...) instead of backticks"),
    ('echo "`echo {{ vars.v }}`"', "inside backticks", "$(...) instead of backticks"),
    ("echo ${X:-{{ vars.v }}}", "inside ${...}", "through a variable"),
    ("echo $'{{ vars.v }}'", "inside $'...'", "through a variable"),
    ("(( {{ vars.v }} > 1 ))", "inside arithmetic ((...))", "through a variable"),
    ("cat <<A <<B\na\nA\n{{ vars.v }}\nB", "inside a here-document", "through a variable"),
    ("echo \\{{ vars.v }}", "right after a backslash", "remove the backslash"),
    ('echo "\\{{ vars.v }}"', "right after a backslash", "remove the backslash"),
    ('echo "${{ vars.v }}"', "right after '$'", "\\$"),
]


@pytest.mark.parametrize(("template", "message", "fix"), REFUSED, ids=[r[0] for r in REFUSED])
def test_unsafe_contexts_are_refused(template: str, message: str, fix: str) -> None:
    with pytest.raises(PlanError) as info:
        Template.parse(template)
    (diag,) = info.value.diagnostics
    assert message in diag.message
    assert fix in diag.fix


def test_raw_is_allowed_anywhere() -> None:
    t = Template.parse("cat <<EOF\n{{ raw vars.v }}\nEOF")
    assert t.render(None, {"v": "$HOME"}) == "cat <<EOF\n$HOME\nEOF"


def test_refusal_names_file_line_and_column(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "vars: {v: x}\n"
        "tasks:\n"
        "  a: {run: 'echo $(( {{ vars.v }} ))'}\n"
        "  b:\n"
        '    run: "echo ok # {{ vars.v }}"\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "fleetrun", "plan", str(plan)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"{plan}:3:22: tasks.a.run: {{{{ vars.v }}}} stands inside arithmetic" in proc.stderr
    assert f"{plan}:5:21: tasks.b.run: {{{{ vars.v }}}} stands inside a comment" in proc.stderr


def test_apply_with_a_hostile_target_name_injects_nothing(tmp_path: Path) -> None:
    """End to end, as reported: ``fleetrun apply`` used to create ``PWNED``."""
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "targets:\n"
        "  'x\" ; touch PWNED ; echo \"': {}\n"
        "  eu west: {}\n"
        "tasks:\n"
        "  t:\n"
        "    for_each: all\n"
        '    run: \'echo "deploying {{ target.name }}" > "out-$FLEETRUN_TARGET.txt"\'\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "fleetrun", "apply", str(plan), "--state-dir", str(tmp_path / "s")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (tmp_path / "PWNED").exists()
    name = 'x" ; touch PWNED ; echo "'
    assert (tmp_path / f"out-{name}.txt").read_text() == f"deploying {name}\n"
    assert (tmp_path / "out-eu west.txt").read_text() == "deploying eu west\n"
