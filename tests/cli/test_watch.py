"""``fleetrun watch``: a run started by one process, followed from another, to its end.

Every run here is a real ``fleetrun apply`` in its own process; every watcher
a real ``fleetrun watch`` in another (or, for a run already over, the command
in-process). The tasks wait for a gate file, so a watcher is known to have
attached while they run (it printed their starts) before the test lets them end.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import fleetrun.cli._watch_cmd as watch_cmd
import fleetrun.state._writer as writer_mod
from fleetrun.cli import cli
from fleetrun.engine import AttemptEnded, InstanceSettled, RunEnded, RunStarted
from fleetrun.errors import RunNotFoundError
from fleetrun.report import printable
from fleetrun.state import Journal, JournalReader, JournalWriter, NewInstance, RunRecord

from ._helpers import env, fleetrun, kill_processes_with_env, spawn

STAMP = re.compile(r"^\d\d:\d\d:\d\d ")
ENDINGS = re.compile(r"^\d\d:\d\d:\d\d (succeeded|failed|skipped)\s+(\S+)")
HOSTILE = "x\x1b[2Jy"  # a target name that would clear the screen if printed raw

GATED = """\
name: gated
targets: targets.yaml
vars:
  gate: ""
tasks:
  work:
    for_each: all
    run: while [ ! -e {{ vars.gate }} ]; do sleep 0.05; done; test {{ target.name }} != c
  after:
    for_each: all
    needs: [work]
    run: "true"
"""


_WATCHERS: list[subprocess.Popen[str] | subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _no_watcher_outlives_its_test() -> Iterator[None]:
    """A watcher left running by a failed assertion is ended with its test."""
    yield
    while _WATCHERS:
        proc = _WATCHERS.pop()
        if proc.poll() is None:
            proc.kill()
        proc.wait(60)


class Lines:
    """A stream of a process read line by line on a thread; waited on by content."""

    def __init__(self, stream: object) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, pred: Callable[[list[str]], bool], timeout: float = 60) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: pred(self.lines), timeout), self.lines

    def all(self, timeout: float = 60) -> list[str]:
        """Every line, once the stream has ended."""
        self._thread.join(timeout)
        return self.lines


def _watcher(*args: str) -> tuple[subprocess.Popen[str], Lines, Lines]:
    """``python -m fleetrun watch ARGS``: the process, its stdout and its stderr lines."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleetrun", "watch", *args],
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _WATCHERS.append(proc)
    return proc, Lines(proc.stdout), Lines(proc.stderr)


def _live_run(state: Path, timeout: float = 60) -> RunRecord:
    """The run a spawned apply has begun to record (waited for, bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with JournalReader(state) as r:
                live = [x for x in r.runs() if x.ended_at is None]
        except RunNotFoundError:
            live = []
        if live:
            return live[0]
        time.sleep(0.05)
    raise AssertionError(f"no live run appeared in {state}")


def _starts(n: int) -> Callable[[list[str]], bool]:
    return lambda lines: sum(" started    " in line for line in lines) >= n


def _gated_plan(tmp_path: Path, targets: list[str]) -> tuple[Path, Path]:
    """The gated plan over ``targets``, and its gate file (not yet there)."""
    gate = tmp_path / "gate"
    (tmp_path / "targets.yaml").write_text(
        "".join(f'"{t.encode("unicode_escape").decode()}": {{}}\n' for t in targets)
    )
    plan = tmp_path / "plan.yaml"
    plan.write_text(GATED.replace('gate: ""', f'gate: "{gate}"'))
    return plan, gate


def _journal_endings(state: Path, run_id: str) -> list[tuple[str, str]]:
    """(word, instance) of every ending the journal holds, in its order."""
    out: list[tuple[str, str]] = []
    with JournalReader(state) as r:
        _, events = r.events_after(run_id, 0, 100_000)
    for ev in events:
        if isinstance(ev, AttemptEnded) and ev.outcome in ("succeeded", "failed"):
            out.append((ev.outcome, printable(ev.key)))
        elif isinstance(ev, InstanceSettled) and ev.state == "skipped":
            out.append(("skipped", printable(ev.key) + ":"))
    return out


def test_watch_follows_a_run_of_another_process_to_its_end(tmp_path: Path) -> None:
    plan, gate = _gated_plan(tmp_path, ["a", "b", "c", HOSTILE])
    state = tmp_path / "st"
    apply = spawn("apply", str(plan), "--plain", "--state-dir", str(state))
    apply_out = Lines(apply.stdout)
    try:
        run = _live_run(state)
        follower, out, err = _watcher("--state-dir", str(state))
        out.wait_for(_starts(4))
        # A second watcher, stopped with Ctrl-C while the tasks run: it detaches.
        quitter, q_out, q_err = _watcher(run.id[:12], "--state-dir", str(state))
        q_out.wait_for(_starts(4))
        quitter.send_signal(signal.SIGINT)
        assert quitter.wait(60) == 130
        gate.touch()
        assert follower.wait(60) == 1
        assert apply.wait(60) == 1  # the run went on to its own end: a task failed
    finally:
        gate.touch()
        apply.wait(60)

    watched, applied = out.all(), apply_out.all()
    assert any(f"watching run {run.id} of gated" in line for line in err.all())
    assert any(f"stopped watching run {run.id}, which goes on" in ln for ln in q_err.all())
    # Every line the run's own console printed, the watcher printed: same words,
    # same times, same order (a failure, a skipped instance and a hostile name
    # among them).
    stamped = [line for line in watched if STAMP.match(line)]
    assert stamped == [line for line in applied if STAMP.match(line)]
    endings = [m.groups() for m in map(ENDINGS.match, watched) if m]
    assert endings == _journal_endings(state, run.id)
    assert len(endings) == 8  # 3 work succeeded, 1 failed; 1 skipped; 3 after succeeded
    assert ("failed", "work@c") in endings
    shown = printable(HOSTILE)
    assert f"succeeded  work@{shown} in " in "\n".join(watched)
    assert not any("\x1b" in line for line in watched)
    # Then the run's summary, the failure and the next commands, as apply ends.
    tail = watched[watched.index(f"{stamped[-1]}") + 1 :]
    apply_tail = applied[applied.index(stamped[-1]) + 1 :]
    assert tail[0] == apply_tail[0] == "6 succeeded, 1 failed, 1 skipped (of 8)"
    assert re.fullmatch(
        r"wall time \S+, task time \S+, speedup (\S+x|too short to measure)", tail[1]
    )
    assert tail[2:] == apply_tail[2:]
    assert tail[2:4] == ["failed (1):", "  work@c  exit 1"]
    assert tail[4].startswith(f"next: fleetrun retry --state-dir {state}")

    # The run is over: watching it prints its end and summary at once.
    res = CliRunner().invoke(cli, ["watch", run.id, "--state-dir", str(state)])
    assert res.exit_code == 1, res.output
    lines = res.stdout.splitlines()
    assert lines[0] == stamped[-1] == f"{stamped[-1][:8]} run {run.id} failed"
    assert lines[1:] == tail


def test_watch_picks_the_live_run_and_exits_0_when_it_succeeds(tmp_path: Path) -> None:
    plan, gate = _gated_plan(tmp_path, ["a", "b"])
    state = tmp_path / "st"
    apply = spawn("apply", str(plan), "--plain", "--state-dir", str(state))
    try:
        run = _live_run(state)
        # A newer run of another plan, over already: the live one is still the one shown.
        other = tmp_path / "other.yaml"
        other.write_text("name: other\ntasks:\n  t: {run: 'true'}\n")
        assert fleetrun("apply", str(other), "--state-dir", str(state)).returncode == 0
        follower, out, _ = _watcher("--state-dir", str(state))
        term = _Terminal("--plan", str(plan), "--state-dir", str(state))
        out.wait_for(_starts(2))
        term.wait_for("watching run")  # it follows the run live too
        gate.touch()
        assert follower.wait(60) == 0
        assert term.wait(60) == 0
        assert apply.wait(60) == 0
    finally:
        gate.touch()
        apply.wait(60)
    watched = out.all()
    assert watched[0].endswith(f"run {run.id}: 4 instance(s), mode dag, -j unbounded")
    assert watched[-3:-1] == [watched[-3][:9] + f"run {run.id} succeeded", "4 succeeded (of 4)"]
    # On a terminal, the live view, drawn from the journal, ends on the run's end.
    screen = term.text()
    assert "\x1b[" in screen  # drawn, not printed line by line
    assert re.search(rf"run {run.id}\S* · dag · -j unbounded · \S*succeeded\S* after", screen)
    assert "4 succeeded (of 4)" in screen
    assert "wall time " in screen


class _Terminal:
    """``fleetrun watch ARGS`` on a pseudo-terminal (the live view), its screen kept."""

    def __init__(self, *args: str) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 110, 0, 0))
        e = {k: v for k, v in env().items() if k not in ("CI", "NO_COLOR")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fleetrun", "watch", *args],
            env={**e, "TERM": "xterm-256color"},
            stdin=slave,
            stdout=slave,
            stderr=slave,
        )
        _WATCHERS.append(self.proc)
        os.close(slave)
        self.master = master
        self.screen = bytearray()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # the terminal's other end closed
                break
            if not data:
                break
            self.screen += data

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.text():
            assert time.monotonic() < deadline, self.text()
            time.sleep(0.05)

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self.thread.join(timeout)
        os.close(self.master)
        return code

    def text(self) -> str:
        return self.screen.decode(errors="replace")


def test_watch_of_a_run_killed_with_sigkill_says_it_died(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    plan = tmp_path / "plan.yaml"
    plan.write_text("name: nap\ntargets: {a: {}}\ntasks:\n  nap: {for_each: all, run: sleep 30}\n")
    state = tmp_path / "st"
    apply = spawn("apply", str(plan), "--plain", "--state-dir", str(state),
                  extra_env={"WATCH_TEST": marker})  # fmt: skip
    try:
        run = _live_run(state)
        follower, out, err = _watcher("--plan", str(plan), "--state-dir", str(state))
        out.wait_for(_starts(1))
        apply.send_signal(signal.SIGKILL)
        apply.wait(60)
        assert follower.wait(60) == 4
        # Watched after the death (nothing has recovered the run): the same, at once.
        res = CliRunner().invoke(cli, ["watch", "--state-dir", str(state)])
    finally:
        apply.kill()
        apply.wait(60)
        kill_processes_with_env("WATCH_TEST", marker)  # the sleep it left running
    said = "\n".join(err.all())
    assert f"run {run.id} died: its fleetrun process (pid {apply.pid}) is gone" in said
    watched = out.all()
    end = watched.index("1 interrupted (of 1)")
    assert "started    nap@a" in watched[end - 1]
    assert watched[end + 1].startswith("wall time ")
    assert watched[end + 2].startswith(f"next: fleetrun retry --state-dir {state}")
    assert res.exit_code == 4, res.output
    assert res.stdout.splitlines() == watched[end:]
    assert f"run {run.id} died" in res.stderr


def test_watch_with_nothing_to_watch_is_one_line_and_exit_2(tmp_path: Path) -> None:
    def watch(*args: str) -> tuple[int, list[str]]:
        res = CliRunner().invoke(cli, ["watch", *args])
        return res.exit_code, res.output.splitlines()

    empty = tmp_path / "empty"
    code, lines = watch("--state-dir", str(empty))
    assert (code, len(lines)) == (2, 1)
    assert lines[0].startswith(f"error: no journal in {empty}: no run has been recorded there")
    assert not empty.exists()  # watching writes nothing, not even the directory

    state = tmp_path / "st"
    with Journal(state) as j:
        j.begin_run(
            run_id="20250101T000000-abcd",
            parent_id=None,
            plan_path=str(tmp_path / "p.yaml"),
            plan_name="p",
            plan_hash="h",
            plan_snapshot="name: p\n",
            mode="dag",
            kind="apply",
            options={},
            instances=[NewInstance(key="t", node=0, task="t", target=None)],
        )
        j.end_run("20250101T000000-abcd", "succeeded")
    code, lines = watch("nope", "--state-dir", str(state))
    assert (code, lines) == (
        2,
        [f"error: run 'nope' is not on record in {state.resolve()}; `fleetrun history` "
         "lists the runs"],
    )  # fmt: skip
    other = (tmp_path / "other.yaml").resolve()
    code, lines = watch("--plan", str(other), "--state-dir", str(state))
    where = state.resolve()
    assert (code, lines) == (
        2,
        [f"error: no run of {other} is on record in {where}; `fleetrun apply` starts one"],
    )


def test_watch_help_says_what_it_follows_and_how_it_exits() -> None:
    res = CliRunner().invoke(cli, ["watch", "--help"])
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    assert "Follow RUN live until it ends" in text
    assert "the live run (of --plan), else the newest run" in text
    assert "Ctrl-C stops watching and leaves the run alone" in text
    assert "0 every instance succeeded, 1 some task failed, 130 interrupted" in text
    assert "4 the run's fleetrun process died without ending the run" in text
    assert "--plain" in text


def test_a_run_on_another_host_is_judged_by_its_heartbeat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its process cannot be looked at from here: no heartbeat nor event for
    # SILENT_FOR seconds reads as dead; a heartbeat keeps it alive past that.
    monkeypatch.setattr(watch_cmd, "SILENT_FOR", 1.0)
    monkeypatch.setattr(watch_cmd, "ALIVE_EVERY", 0.1)
    monkeypatch.setattr(writer_mod, "HEARTBEAT", 0.1)
    state = tmp_path / "st"
    with Journal(state) as j:
        for run_id in ("r-beating", "r-silent"):
            j.begin_run(
                run_id=run_id,
                parent_id=None,
                plan_path=str(tmp_path / "p.yaml"),
                plan_name="p",
                plan_hash="h",
                plan_snapshot="name: p\n",
                mode="dag",
                kind="apply",
                options={},
                instances=[NewInstance(key="t", node=0, task="t", target=None)],
            )
        j.conn.execute("UPDATE runs SET host='elsewhere'")

    writer = JournalWriter(state / "state.db", "r-beating")
    writer.start()
    t0 = time.time()
    writer(RunStarted(at=t0, run_id="r-beating", plan_name="p", mode="dag", parallelism=None,
                      nodes=1))  # fmt: skip

    def end_later() -> None:
        time.sleep(2.0)  # past SILENT_FOR, with only heartbeats meanwhile
        writer(RunEnded(at=time.time(), run_id="r-beating", status="succeeded", counts={}))
        writer.close()

    ender = threading.Thread(target=end_later)
    ender.start()
    res = CliRunner().invoke(cli, ["watch", "r-beating", "--state-dir", str(state)])
    ender.join()
    assert res.exit_code == 0, res.output
    assert "run r-beating succeeded" in res.stdout

    res = CliRunner().invoke(cli, ["watch", "r-silent", "--state-dir", str(state)])
    assert res.exit_code == 4, res.output
    assert (
        "run r-silent on host elsewhere has shown no sign of life for 1s (no heartbeat, "
        "no event): it may have died" in res.stderr
    )
