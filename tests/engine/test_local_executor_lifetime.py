"""An attempt ends with its command, leaves nothing behind, starts clean, dies fast.

Real processes throughout. Background processes record their pid in a file
so the test can check that they are gone (or, with ``keep_running``, not).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from fleetrun.engine import AttemptEnded, AttemptStarted, RunControl
from fleetrun.engine.testing import graph, pid_alive, task
from fleetrun.executors import LocalExecutor, parse_outputs, tagged_processes
from fleetrun.executors._local import OutputRefused, parse_output_bytes
from fleetrun.redact import Redactor
from fleetrun.runs_on import LocalOptions


def _log(ran, key: str, attempt: int = 1) -> str:
    path = next(e.log_path for e in ran.of(AttemptStarted) if e.key == key and e.attempt == attempt)
    return Path(path).read_text()


def _took(ran, key: str) -> float:
    start = next(e.at for e in ran.of(AttemptStarted) if e.key == key)
    end = next(e.at for e in ran.of(AttemptEnded) if e.key == key)
    return end - start


def _pid(path: Path) -> int:
    deadline = time.monotonic() + 5
    while not (path.exists() and path.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return int(path.read_text())


# -- 1. a run that never ends ----------------------------------------------------

PIPED = {
    "secret": {"redactor": Redactor(["s3cr3t-value-1234"])},
    "stream": {"output": "stream"},
}
HOLDERS = {
    # The input: a new session holds the output pipe.
    "setsid": "setsid sh -c 'echo $$ > {f}; exec sleep 600' & sleep 0.3; echo started",
    # Another of the kind: a double fork out of a subshell, its stdout still the pipe.
    "double-fork": "(setsid sh -c 'echo $$ > {f}; exec sleep 600' &)\n"
    "while [ ! -s {f} ]; do sleep 0.01; done; echo started",
}


@pytest.mark.parametrize("mode", PIPED)
@pytest.mark.parametrize("holder", HOLDERS)
def test_background_holder_of_the_pipe_does_not_hang_the_run(runner, tmp_path, mode, holder):
    f = tmp_path / "bg.pid"
    g = graph(
        [
            task("daemonised", HOLDERS[holder].format(f=f), timeout=20),
            task("after", "echo next", needs=["daemonised"]),
        ]
    )
    t0 = time.monotonic()
    ran = runner(g, **PIPED[mode])
    took = time.monotonic() - t0
    assert {k: s.state for k, s in ran.settled().items()} == {
        "daemonised": "succeeded",
        "after": "succeeded",
    }
    assert took < 5, took  # before: until the helper died (600 s)
    log = _log(ran, "daemonised")
    assert log.startswith("started\n")
    assert "[fleetrun] ended 1 process(es) the command left running:" in log
    assert not pid_alive(_pid(f))


@pytest.mark.parametrize("mode", PIPED)
def test_timeout_ends_an_attempt_whose_pipe_is_held(runner, tmp_path, mode):
    f = tmp_path / "bg.pid"
    cmd = f"setsid sh -c 'echo $$ > {f}; trap \"\" TERM; exec sleep 600' & sleep 60"
    g = graph([task("t", cmd, timeout=0.5)])
    ran = runner(g, grace=0.3, **PIPED[mode])
    assert ran.settled()["t"].reason == "timed out after 0.5s"
    assert _took(ran, "t") < 0.5 + 0.3 + 0.3 + 1.0  # timeout, grace (group), grace (outside), slack
    assert not pid_alive(_pid(f))


# -- 2. processes that outlive the attempt -----------------------------------------

LEAVERS = {
    "setsid": "setsid sh -c 'echo $$ > {f}; exec sleep 600' > /dev/null 2>&1 &",
    # A double fork whose middle process is gone at once: the grandchild is an orphan.
    "double-fork": (
        "sh -c 'setsid sh -c \"echo \\$\\$ > {f}; exec sleep 600\" &' </dev/null >/dev/null"
    ),
}


@pytest.mark.parametrize("leaver", LEAVERS)
@pytest.mark.parametrize("spawn_threads", [0, 2])
def test_processes_that_left_the_group_end_with_the_attempt(
    runner, tmp_path, leaver, spawn_threads
):
    f = tmp_path / "bg.pid"
    # Until the leaver runs `sleep` (it writes its pid just before the exec).
    wait = (
        f'while [ ! -s {f} ] || [ "$(ps -o comm= -p "$(cat {f})")" != sleep ]; '
        "do sleep 0.01; done; echo done"
    )
    g = graph([task("t", LEAVERS[leaver].format(f=f) + "\n" + wait)])
    ran = runner(g, executor=LocalExecutor(spawn_threads=spawn_threads))
    assert ran.settled()["t"].state == "succeeded"
    pid = _pid(f)
    assert not pid_alive(pid)
    assert f"[fleetrun] ended 1 process(es) the command left running: {pid} (sleep)" in _log(
        ran, "t"
    )


def test_leftovers_that_ignore_sigterm_are_killed_after_the_grace(runner, tmp_path):
    f = tmp_path / "bg.pid"
    cmd = (
        f"setsid sh -c 'trap \"\" TERM; echo $$ > {f}; exec sleep 600' >/dev/null 2>&1 & sleep 0.2"
    )
    ran = runner(graph([task("t", cmd)]), grace=0.4)
    assert not pid_alive(_pid(f))
    assert 0.4 <= _took(ran, "t") < 0.2 + 0.4 + 1.0


@pytest.mark.parametrize("mode", ["log", "stream"])
def test_interrupt_ends_what_left_the_group(runner, tmp_path, mode):
    # In stream mode the process that left holds the output pipe as well.
    f = tmp_path / "bg.pid"
    control = RunControl()
    quiet = ">/dev/null 2>&1" if mode == "log" else ""
    cmd = f"setsid sh -c 'echo $$ > {f}; exec sleep 600' {quiet} & sleep 60"

    def hook(e):
        if isinstance(e, AttemptStarted):
            _pid(f)
            control.interrupt()

    t0 = time.monotonic()
    opts = {"output": "stream"} if mode == "stream" else {}
    ran = runner(graph([task("t", cmd)]), hook=hook, control=control, grace=0.5, **opts)
    assert time.monotonic() - t0 < 10
    assert ran.result.status == "interrupted"
    assert not pid_alive(_pid(f))


@pytest.mark.parametrize("second", [0.0, 0.5])
def test_a_second_interrupt_kills_what_left_the_group_without_the_grace(runner, tmp_path, second):
    # Both the group and the process that left it ignore SIGTERM. The second
    # press comes at once (before the attempt began to end) or while the group
    # is in its grace period; either way nothing waits for the grace any more,
    # whether it was found before the press or after it.
    f = tmp_path / "bg.pid"
    control = RunControl()
    cmd = (
        f"trap '' TERM; setsid sh -c 'trap \"\" TERM; echo $$ > {f}; exec sleep 600' "
        ">/dev/null 2>&1 & sleep 600"
    )
    timers: list[threading.Timer] = []

    def hook(e):
        if isinstance(e, AttemptStarted):
            _pid(f)
            control.interrupt()
            timers.append(threading.Timer(second, control.interrupt))
            timers[-1].start()

    t0 = time.monotonic()
    ran = runner(graph([task("t", cmd)]), hook=hook, control=control, grace=30.0)
    took = time.monotonic() - t0
    for t in timers:
        t.join()
    assert ran.result.status == "interrupted"
    assert control.presses == 2
    assert not pid_alive(_pid(f))
    assert took < 15, took  # well under the 30 s grace


def test_members_that_exit_after_their_leader_do_not_hold_up_the_end(runner, tmp_path):
    # On SIGTERM the leader (the task's shell, in ``wait``) dies at once; the
    # member traps TERM and exits 0.3 s later, re-parented to fleetrun (the
    # subreaper). Its zombie is fleetrun's to reap: the attempt ends then, not
    # when the grace period runs out.
    ready = tmp_path / "ready"
    control = RunControl()
    cmd = (
        f'sh -c \'trap "sleep 0.3; exit 0" TERM; touch {ready};'
        " while :; do sleep 0.05; done' & wait"
    )

    def hook(e):
        if isinstance(e, AttemptStarted):
            deadline = time.monotonic() + 5
            while not ready.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            control.interrupt()

    ran = runner(graph([task("t", cmd)]), hook=hook, control=control, grace=30)
    assert ran.result.status == "interrupted"
    assert _took(ran, "t") < 15  # the grace is 30 s


# A member of the group that exits at once and whose parent never waits for
# it: the parent (a subshell) forks it, then leaves the group (setsid, in the
# same process) and sleeps. Its zombie stays in the group; nothing of the group
# runs any more. The timeout counts from the spawn, so the member must be out of
# the group before it fires: a subshell and an exec get there in a few
# milliseconds, where an interpreter's start-up took more than the 0.5 s timeout
# on a busy machine (the group's SIGTERM then ended the member before it left).
ZOMBIE_MEMBER = "(true & exec setsid sh -c 'echo $$ > {f}; exec sleep 600') &\n"


@pytest.mark.parametrize("ending", ["exits", "times out", "times out, keep_running"])
def test_a_zombie_left_in_the_group_does_not_hold_up_the_end(runner, tmp_path, ending):
    # Several at once, as a run has them; each ends well within its grace period.
    keep = ending.endswith("keep_running")
    tail = "sleep 0.3" if ending == "exits" else "sleep 600"
    tasks = []
    for i in range(4):
        cmd = ZOMBIE_MEMBER.format(f=tmp_path / f"p{i}.pid")
        cmd += f"while [ ! -s {tmp_path / f'p{i}.pid'} ]; do sleep 0.01; done; {tail}"
        t = task(f"t{i}", cmd, timeout=None if ending == "exits" else 0.5)
        tasks.append(dataclasses.replace(t, options=LocalOptions(keep_running=keep)))
    try:
        ran = runner(graph(tasks), grace=30.0)
        for i in range(4):
            assert _took(ran, f"t{i}") < 15, _took(ran, f"t{i}")  # well under the grace
            state = ran.settled()[f"t{i}"].state
            assert state == ("succeeded" if ending == "exits" else "failed")
            assert pid_alive(_pid(tmp_path / f"p{i}.pid")) == keep
    finally:
        for i in range(4):
            with contextlib.suppress(OSError, ValueError):
                os.kill(_pid(tmp_path / f"p{i}.pid"), signal.SIGKILL)


def test_keep_running_leaves_a_service_alone(runner, tmp_path):
    f = tmp_path / "bg.pid"
    t = task("svc", LEAVERS["setsid"].format(f=f) + "\necho up", targets=["x"])
    g = graph([dataclasses.replace(t, options=LocalOptions(keep_running=True))])
    ran = runner(g)
    pid = _pid(f)
    try:
        assert ran.settled()["svc@x"].state == "succeeded"
        assert pid_alive(pid)
        # The tag lets --kill-orphans find it, wherever it went.
        run = ran.result.run_id
        found = [p for p in tagged_processes([run]) if p.pid == pid]
        assert [(p.run_id, p.attempt_id, p.command) for p in found] == [
            (run, f"{run}.0.1", "sleep")
        ]
        assert tagged_processes(["another-run"]) == [] or all(
            p.pid != pid for p in tagged_processes(["another-run"])
        )
    finally:
        os.kill(pid, signal.SIGKILL)


# -- 3. signal state -------------------------------------------------------------


@pytest.mark.parametrize("spawn_threads", [0, 2])
def test_children_start_with_default_signals_and_empty_mask(runner, spawn_threads):
    g = graph(
        [
            # The input: SIGPIPE must end the writer at once.
            task("tick", "while :; do echo tick; done | head -n 1", timeout=20),
            # Another: every disposition and the mask, as the kernel reports them.
            task("status", "grep -E '^Sig(Ign|Blk)' /proc/self/status"),
        ]
    )
    ran = runner(g, executor=LocalExecutor(spawn_threads=spawn_threads), output="stream")
    assert ran.settled()["tick"].state == "succeeded"
    assert _took(ran, "tick") < 5
    assert _log(ran, "tick") == "tick\n"
    status = dict(ln.split(":\t") for ln in _log(ran, "status").splitlines())
    # Signals 32 and 33 belong to libc (threads): no program can use or reset them.
    libc_own = (1 << 31) | (1 << 32)
    assert {k: int(v, 16) & ~libc_own for k, v in status.items()} == {"SigBlk": 0, "SigIgn": 0}


# -- 4. slow kills -----------------------------------------------------------------


def test_slot_is_free_soon_after_a_group_that_ignores_sigterm_dies(runner):
    # -j 1: the next task starts when the slot is free. Before: grace + ~2 s.
    stubborn = "sh -c 'trap \"\" TERM; sleep 60' & trap '' TERM; sleep 60"
    g = graph([task("a", stubborn, timeout=0.3), task("b", "true")])
    ran = runner(g, grace=0.4, parallelism=1, output="stream")
    a0 = next(e.at for e in ran.of(AttemptStarted) if e.key == "a")
    b0 = next(e.at for e in ran.of(AttemptStarted) if e.key == "b")
    # The group dies at timeout + grace; the slot is free within about 0.1 s of that.
    assert b0 - a0 < 0.3 + 0.4 + 0.5, b0 - a0


def test_members_left_in_the_group_are_ended_promptly(runner, tmp_path):
    # Another input of the kind: the command exits; a member that ignores
    # SIGTERM keeps the group alive until it is SIGKILLed after the grace.
    f = tmp_path / "m.pid"
    cmd = f"sh -c 'trap \"\" TERM; echo $$ > {f}; exec sleep 60' >/dev/null 2>&1 & sleep 0.1"
    ran = runner(graph([task("t", cmd), task("u", "true")]), grace=0.3, parallelism=1)
    assert ran.settled()["t"].state == "succeeded"
    assert _took(ran, "t") < 0.1 + 0.3 + 0.6
    assert not pid_alive(_pid(f))
    assert "[fleetrun] ended 1 process(es) the command left running:" in _log(ran, "t")


# -- 8. bytes altered on the way -----------------------------------------------------

REFUSED = {
    "latin-1": (r"printf 'name=caf\351\n' >> $FLEETRUN_OUTPUT", "not UTF-8 text"),
    "nul": (r"printf 'token=a\000b\n' >> $FLEETRUN_OUTPUT", "NUL byte"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_outputs_arrive_unchanged_or_are_refused(runner, case):
    cmd, why = REFUSED[case]
    g = graph(
        [
            task("pub", cmd, targets=["eu"]),
            task("use", "echo $FLEETRUN_OUTPUT_PUB_NAME", targets=["eu"], needs=["pub"]),
        ]
    )
    ran = runner(g)
    st = ran.settled()
    assert st["pub@eu"].state == "failed"
    assert "pub@eu" in st["pub@eu"].reason
    assert why in st["pub@eu"].reason
    assert ("'name'" if case == "latin-1" else "'token'") in st["pub@eu"].reason
    assert st["use@eu"].state == "skipped"


def test_utf8_outputs_pass_byte_for_byte(runner):
    value = "Zürich ✓ 🚀 \u00a0x"
    g = graph(
        [
            task("pub", f"printf 'v=%s\\n' '{value}' >> $FLEETRUN_OUTPUT"),
            task("use", 'printf %s "$FLEETRUN_OUTPUT_PUB_V"', needs=["pub"]),
        ]
    )
    ran = runner(g)
    assert _log(ran, "use") == value


def test_parse_output_bytes_matches_text_parsing():
    data = b"# c\na = 1\n\nb=x=y\nc\n"
    assert parse_output_bytes(data) == parse_outputs(data.decode()) == {"a": "1", "b": "x=y"}
    with pytest.raises(OutputRefused, match=r"deploy@eu: output 'k' is not UTF-8"):
        parse_output_bytes(b"ok=1\nk=\xff\n", "deploy@eu")
