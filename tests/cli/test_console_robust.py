"""The console is only a view: it cannot stop the run, lose lines, or be taken over.

Real ``python -m fleetrun`` processes writing into real pipes.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fleetrun.executors import file_name
from fleetrun.report import OutputPrinter
from fleetrun.report._plain import printable, terminal_safe

from ._helpers import env, fleetrun, show_json


def _plan(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "plan.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def _apply(plan: Path, *args: str, **kw: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "fleetrun", "apply", str(plan), "--plain", *args],
        cwd=plan.parent,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kw,  # type: ignore[arg-type]
    )


# -- 1. (through the CLI) the daemon plan -----------------------------------

DAEMON = """\
    name: daemon
    tasks:
      daemonised: {timeout: 3s, run: "setsid sleep 600 & sleep 0.3; echo started"}
      after: {needs: [daemonised], run: "echo next"}
    """


@pytest.mark.parametrize(
    ("args", "extra"),
    [((), {"DEPLOY_TOKEN": "s3cr3t-value-1234"}), (("--output", "stream"), {})],
    ids=["secret", "stream"],
)
def test_daemon_plan_finishes_in_about_a_second(tmp_path, args, extra):
    plan = _plan(tmp_path, DAEMON)
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "fleetrun", "apply", str(plan), "--plain", *args],
        cwd=tmp_path,
        env=env(**extra),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - t0 < 10
    assert "2 succeeded" in done.stdout


# -- 5. the console can stop the run --------------------------------------------------


@pytest.mark.parametrize(("fail", "code"), [(False, 0), (True, 1)], ids=["ok", "a-task-fails"])
def test_a_console_that_goes_away_never_touches_the_run(tmp_path, fail, code):
    end = "exit 3" if fail else "true"
    plan = _plan(
        tmp_path,
        f"""\
        name: head
        targets: {{a: {{}}, b: {{}}, c: {{}}, d: {{}}, e: {{}}, f: {{}}}}
        tasks:
          t: {{for_each: all, run: "sleep 0.3; echo {{{{ target.name }}}}; {end}"}}
          u: {{for_each: all, needs: [t], run: "sleep 0.2"}}
        """,
    )
    proc = _apply(plan, "-j", "2", "--output", "stream")
    assert proc.stdout is not None
    assert proc.stderr is not None
    for _ in range(3):  # `| head -3`
        proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == code
    assert "Traceback" not in err
    assert err.count("console went away") == 1
    runs = show_json(tmp_path / ".fleetrun")
    states = collections.Counter(i["status"] for i in runs["instances"])
    assert states == ({"failed": 6, "skipped": 6} if fail else {"succeeded": 12})


@pytest.mark.parametrize("delay", [0.1, 0.2, 0.3, 0.4, 0.6])
def test_ctrl_c_while_starting_exits_130_without_a_traceback(tmp_path, delay):
    plan = _plan(tmp_path, "name: p\ntasks:\n  t: {run: 'sleep 5'}\n")
    proc = _apply(plan)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    if proc.returncode != 130 and b"/fleetrun/" not in err:
        # Python's own start (site, .pth files) runs before any fleetrun code.
        pytest.skip("the signal came before Python ran any of fleetrun")
    assert proc.returncode == 130, err
    assert b"Traceback" not in err


def test_ctrl_c_while_modules_load_exits_130_quietly():
    # Deterministic: the signal arrives right after the entry module installed
    # its handler, while the rest of fleetrun would still be importing.
    code = (
        "import os, signal, sys\n"
        "sys.argv[0] = '/usr/local/bin/fleetrun'\n"
        "import fleetrun.cli._main\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "import fleetrun.cli._run, time\n"
        "time.sleep(5)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env(), capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 130
    assert done.stderr == b""


# -- 6. stream output lost or misshapen ----------------------------------------------

SLOW_READER = """\
import os, sys, time
n = 0
with open(sys.argv[1], "wb") as out:
    while True:
        b = os.read(0, 4096)
        if not b:
            break
        out.write(b)
        time.sleep(0.001)
"""


def _stress(tmp_path: Path, tasks: int, lines: int, jobs: int) -> None:
    targets = "\n".join(f"  t{i}: {{}}" for i in range(tasks))
    plan = _plan(tmp_path, "")
    plan.write_text(
        f"name: big\ntargets:\n{targets}\ntasks:\n  p: {{for_each: all, run: 'seq 1 {lines}'}}\n"
    )
    reader = tmp_path / "reader.py"
    reader.write_text(SLOW_READER)
    out = tmp_path / "out.txt"
    cmd = (
        f"{sys.executable} -m fleetrun apply plan.yaml -j {jobs} --plain --output stream"
        f" | {sys.executable} reader.py out.txt"
    )
    # PYTHONUNBUFFERED is what CI images set; with it, Python's own stdout
    # drops the rest of a short write.
    done = subprocess.run(
        cmd, shell=True, cwd=tmp_path, env=env(PYTHONUNBUFFERED="1"), timeout=3600, check=False
    )
    assert done.returncode == 0
    count: collections.Counter[str] = collections.Counter()
    last: dict[str, int] = {}
    with out.open() as f:
        for line in f:
            key, sep, value = line.rstrip("\n").partition(" | ")
            if not sep:
                continue
            n = int(value)
            assert n == last.get(key, 0) + 1, (key, n)  # in order, none missing
            last[key] = n
            count[key] += 1
    assert count == {f"p@t{i}": lines for i in range(tasks)}


def test_stream_to_a_slow_reader_loses_no_line(tmp_path):
    # Scaled down to keep the suite fast; FLEETRUN_STRESS=1 runs the full size.
    _stress(tmp_path, 200, 2_000, 64)


@pytest.mark.skipif(not os.environ.get("FLEETRUN_STRESS"), reason="set FLEETRUN_STRESS=1")
def test_stream_stress_full_size(tmp_path):
    _stress(tmp_path, 2_000, 10_000, 64)


@pytest.mark.parametrize(
    "line",
    [
        "x" * (200 * 1024),  # the input: longer than 64 KiB
        "é" * (40 * 1024),  # another: multibyte characters across the 64 KiB cut
        "y" * (64 * 1024),  # exactly 64 KiB: one piece, and no empty line after it
    ],
    ids=["ascii-200k", "utf8-80k", "exactly-64k"],
)
def test_long_lines_come_in_pieces_of_at_most_64k_each_with_its_prefix(tmp_path, line):
    (tmp_path / "line.txt").write_text(line + "\nend\n", encoding="utf-8")
    plan = _plan(tmp_path, "name: l\ntasks:\n  t: {run: 'cat line.txt'}\n")
    done = subprocess.run(
        [sys.executable, "-m", "fleetrun", "apply", str(plan), "--plain", "--output", "stream"],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    pieces = [ln[4:] for ln in done.stdout.split(b"\n") if ln.startswith(b"t | ")]
    assert pieces[-1] == b"end"
    assert b"".join(pieces[:-1]) == line.encode()
    assert all(0 < len(p) <= 64 * 1024 for p in pieces)
    assert len(pieces) - 1 == -(-len(line.encode()) // (64 * 1024)) or "é" in line


# -- 7. text that takes over the terminal -----------------------------------------------


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("cr\rFAKE succeeded", "cr\\rFAKE succeeded"),
        ("clear\x1b[2Jx", "clear\\x1b[2Jx"),
        ("csi\x9b2J", "csi\\x9b2J"),  # another: the one-byte C1 form of CSI
    ],
    ids=["cr", "esc", "c1"],
)
def test_control_characters_in_names_are_escaped(tmp_path, name, shown):
    targets = tmp_path / "targets.yaml"
    targets.write_text(f'"{name.encode("unicode_escape").decode()}": {{}}\n')
    plan = _plan(
        tmp_path,
        "name: n\ntargets: targets.yaml\ntasks:\n  t: {for_each: all, run: 'echo hi; exit 1'}\n",
    )
    done = subprocess.run(
        [sys.executable, "-m", "fleetrun", "apply", str(plan), "--plain", "--output", "stream"],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    out = done.stdout
    assert f"failed     t@{shown} (exit 1)" in out
    assert f"t@{shown} | hi" in out
    assert not any(c in out for c in "\r\x1b\x9b")


def test_task_output_on_a_terminal_keeps_colours_only():
    text = "\x1b[31mred\x1b[0m\rover\x1b[2J\x1b[H\tend\bx"
    assert terminal_safe(text) == "\x1b[31mred\x1b[0m\\rover\\x1b[2J\\x1b[H\tend\\x08x"
    assert printable("a\tb") == "a\\tb"
    assert printable("plain ✓") == "plain ✓"


def test_output_printer_escapes_only_when_safe(tmp_path):
    from fleetrun.engine import AttemptOutput
    from fleetrun.engine.testing import graph, task

    g = graph([task("t", "true", targets=["a\rb"])])
    got: list[str] = []
    ev = AttemptOutput(at=0.0, node=0, key="t@a\rb", attempt=1, text="\x1b[1mok\x1b[0m\r\x1b[2K")
    OutputPrinter("stream", g, got.append, safe=True)(ev)
    OutputPrinter("stream", g, got.append)(ev)
    assert got == [
        "t@a\\rb | \x1b[1mok\x1b[0m\\r\\x1b[2K\n",
        "t@a\\rb | \x1b[1mok\x1b[0m\r\x1b[2K\n",  # raw: a pipe, or FLEETRUN_RAW_OUTPUT=1
    ]


# -- 9. names the file system rejects ---------------------------------------------------


@pytest.mark.parametrize("name", ["x" * 250, "é" * 101], ids=["250-ascii", "202-bytes-utf8"])
def test_a_name_too_long_for_a_file_is_refused_at_load(tmp_path, name):
    plan = _plan(
        tmp_path,
        f"name: l\ntargets:\n  {name}: {{}}\ntasks:\n  t: {{for_each: all, run: 'true'}}\n",
    )
    done = fleetrun("apply", str(plan), "--plain")
    assert done.returncode == 2
    assert "limit of 200 bytes" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_long_name_within_the_limit_runs(tmp_path):
    name = "é" * 100  # 200 bytes: the longest accepted
    plan = _plan(
        tmp_path,
        f"name: l\ntargets:\n  {name}: {{}}\ntasks:\n"
        "  t: {for_each: all, run: 'echo k=v >> $FLEETRUN_OUTPUT'}\n",
    )
    done = fleetrun("apply", str(plan), "--plain")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 succeeded" in done.stdout


def test_file_name_is_short_safe_and_distinct():
    names = ["uksouth", "a/b", "..", "x" * 300, "x" * 299 + "y", "cr\rx", "é" * 200, ""]
    got = [file_name(n) for n in names]
    assert got[0] == "uksouth"
    assert len(set(got)) == len(names)
    for g in got:
        assert 0 < len(g.encode()) <= 100
        assert g.isascii()
        assert "/" not in g
        assert g not in (".", "..")
        assert g.isprintable()


# -- 8. (plan side) an env_file value with a NUL -------------------------------------------


def test_an_env_file_value_with_a_nul_is_a_plan_error(tmp_path):
    (tmp_path / ".env").write_bytes(b"A=ok\nB=x\x00y\n")
    plan = _plan(tmp_path, "name: e\nenv_file: .env\ntasks:\n  t: {run: 'echo $B'}\n")
    done = fleetrun("apply", str(plan), "--plain")
    assert done.returncode == 2
    assert ".env:2:3" in done.stderr
    assert "the value of B holds a NUL byte" in done.stderr
