"""LocalExecutor with real processes: environment, outputs, quoting, redaction, logs, spawning."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fleetrun.engine import AttemptEnded, AttemptOutput, AttemptStarted
from fleetrun.engine.testing import graph, task
from fleetrun.executors import LocalExecutor, env_name, parse_outputs
from fleetrun.executors._platform import PORTABLE as _PORTABLE
from fleetrun.executors._platform import selected
from fleetrun.executors._spawner import Job, Mailbox
from fleetrun.redact import Redactor

PY = shlex.quote(sys.executable)
PORTABLE = selected() == _PORTABLE
"""The portable executor runs (FLEETRUN_PLATFORM=portable, or not Linux)."""
ARGV = shlex.quote("import sys, json; print(json.dumps(sys.argv[1:]))")


def _log(ran, key: str, attempt: int = 1) -> str:
    path = next(e.log_path for e in ran.of(AttemptStarted) if e.key == key and e.attempt == attempt)
    return Path(path).read_text()


def test_outputs_reach_dependents_through_template_and_env(runner, tmp_path):
    g = graph(
        [
            task(
                "deploy-contract",
                "echo address=0xabc >> $FLEETRUN_OUTPUT; echo 'tx = 7' >> $FLEETRUN_OUTPUT",
            ),
            task(
                "bridge",
                "echo T={{ tasks.deploy-contract.outputs.address }} "
                "E=$FLEETRUN_OUTPUT_DEPLOY_CONTRACT_ADDRESS X=$FLEETRUN_OUTPUT_DEPLOY_CONTRACT_TX",
                needs=["deploy-contract"],
            ),
        ]
    )
    ran = runner(g)
    assert ran.result.outputs[0] == {"address": "0xabc", "tx": "7"}
    assert _log(ran, "bridge").strip() == "T=0xabc E=0xabc X=7"


def test_environment_and_log_layout(runner, tmp_path):
    g = graph(
        [
            task(
                "t",
                "env | grep -E '^(FLEETRUN_|PLAN_|TASK_)' | sort",
                targets=["eu"],
                env={"TASK_V": "2"},
            ),
            task("u", "echo $FLEETRUN_TARGET-$FLEETRUN_TASK"),
        ],
        env={"PLAN_V": "1"},
    )
    ran = runner(g, run_id="rid")
    lines = dict(ln.split("=", 1) for ln in _log(ran, "t@eu").split())
    assert lines["FLEETRUN_TASK"] == "t"
    assert lines["FLEETRUN_TARGET"] == "eu"
    assert lines["FLEETRUN_ATTEMPT"] == "1"
    assert lines["FLEETRUN_RUN_ID"] == "rid"
    assert lines["PLAN_V"] == "1"
    assert lines["TASK_V"] == "2"
    assert lines["FLEETRUN_OUTPUT"] == str(tmp_path / "run" / "outputs" / "t" / "eu.1.outputs")
    logs = {e.key: e.log_path for e in ran.of(AttemptStarted)}
    assert logs["t@eu"] == str(tmp_path / "run" / "logs" / "t" / "eu.1.log")
    assert logs["u"] == str(tmp_path / "run" / "logs" / "u" / "u.1.log")
    assert _log(ran, "u").strip() == "-u"


@pytest.mark.parametrize("spawn_threads", [0, 2])
def test_per_attempt_names_are_fleetruns_own(runner, monkeypatch, spawn_threads):
    # An outer run's per-attempt variables never reach this run's tasks, and
    # every attempt sees its own (the encoded environment is shared by a task's
    # attempts); both spawn paths give the same environment.
    monkeypatch.setenv("FLEETRUN_TARGET", "outer")
    monkeypatch.setenv("FLEETRUN_OUTPUT_OLD_KEY", "stale")
    monkeypatch.setenv("FLEETRUN_ATTEMPT", "9")
    monkeypatch.setenv("ZURICH", "Zürich")
    g = graph(
        [
            task("a", 'echo k=v >> "$FLEETRUN_OUTPUT"'),
            task(
                "b",
                "env | grep -E '^(FLEETRUN_(TARGET|ATTEMPT|OUTPUT_)|ZURICH)' | sort",
                targets=["x", "y"],
                needs=["a"],
            ),
        ]
    )
    ran = runner(g, executor=LocalExecutor(spawn_threads=spawn_threads))
    for node_id, target in ((1, "x"), (2, "y")):
        assert _log(ran, f"b@{target}").splitlines() == [
            "FLEETRUN_ATTEMPT=1",
            f"FLEETRUN_ATTEMPT_ID={ran.result.run_id}.{node_id}.1",
            "FLEETRUN_OUTPUT_A_K=v",
            f"FLEETRUN_TARGET={target}",
            "ZURICH=Zürich",
        ]


def test_hostile_target_names_never_change_the_command(runner):
    names = ["a; rm -rf ~", "$(reboot)", "x' y", "`id`", "../etc"]
    g = graph(
        [task("t", f"{PY} -c {ARGV} {{{{ target.name }}}} {{{{ target.region }}}}", targets=names)],
        targets={n: {"region": n + " && echo pwned"} for n in names},
    )
    ran = runner(g)
    assert ran.result.status == "succeeded"
    for n in names:
        assert json.loads(_log(ran, f"t@{n}")) == [n, n + " && echo pwned"]
    started = {e.key: e for e in ran.of(AttemptStarted)}
    assert shlex.split(started["t@$(reboot)"].command)[-2:] == [
        "$(reboot)",
        "$(reboot) && echo pwned",
    ]
    # Log files stay inside their task's directory.
    assert all(Path(e.log_path).parent.name == "t" for e in started.values())


def test_secrets_redacted_in_log_even_when_split_across_writes(runner):
    secret = "hunter2-very-secret"
    script = (
        "import sys,time\n"
        "s=sys.argv[1]\n"
        "for part in (s[:4], s[4:11], s[11:]):\n"
        "    sys.stdout.write(part); sys.stdout.flush(); time.sleep(0.05)\n"
        "print(); print('again', s, flush=True)\n"
    )
    g = graph(
        [task("t", f"{PY} -c {shlex.quote(script)} {{{{ vars.pw }}}}")],
        vars={"pw": secret},
        secret_values=[secret],
    )
    ran = runner(g, redactor=Redactor([secret]))
    text = _log(ran, "t")
    assert secret not in text
    assert "hunter2" not in text
    assert text.splitlines() == ["***", "again ***"]
    assert secret not in ran.of(AttemptStarted)[0].command
    assert "***" in ran.of(AttemptStarted)[0].command


def test_streamed_output_arrives_as_events_in_lines(runner):
    g = graph([task("t", "printf 'one\\ntwo\\nthr'; sleep 0.05; printf 'ee\\n'")])
    ran = runner(g, output="stream")
    text = "\n".join(e.text for e in ran.of(AttemptOutput))
    assert text.split("\n") == ["one", "two", "three"]
    assert _log(ran, "t") == "one\ntwo\nthree\n"


def test_large_output_through_the_pipe_is_complete(runner):
    g = graph([task("t", "head -c 5000000 /dev/zero | tr '\\0' 'a'; echo")])
    ran = runner(g, redactor=Redactor(["zzzz-secret"]))
    assert len(_log(ran, "t")) == 5_000_001


def test_cwd_is_relative_to_the_plan_and_missing_command_fails(runner, tmp_path):
    (tmp_path / "sub").mkdir()
    g = graph(
        [task("here", "pwd", cwd="sub"), task("nope", "no-such-command-xyz")], base_dir=tmp_path
    )
    ran = runner(g)
    assert _log(ran, "here").strip() == str(tmp_path / "sub")
    st = ran.settled()
    assert st["nope"].state == "failed"
    assert st["nope"].reason == "exit 127"


def test_helpers():
    assert env_name("deploy-contract") == "DEPLOY_CONTRACT"
    assert parse_outputs("# c\na=1\n\n b = x=y \nnoeq\n") == {"a": "1", "b": "x=y"}


def test_a_published_secret_reaches_dependents_but_not_the_disk(runner, tmp_path):
    secret = "s3cr3t-output-value"
    g = graph(
        [
            task("make", f'echo "token={secret}" >> "$FLEETRUN_OUTPUT"'),
            task("use", 'echo "got $FLEETRUN_OUTPUT_MAKE_TOKEN"', needs=["make"]),
        ],
        secret_values=[secret],
    )
    ran = runner(g, redactor=Redactor([secret]))
    assert ran.settled()["use"].state == "succeeded"
    assert _log(ran, "use").strip() == "got ***"
    # Nothing fleetrun left in the run directory holds the secret.
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert any(p.name.endswith(".outputs") for p in files)
    for p in files:
        assert secret not in p.read_text(errors="replace"), p


def test_logs_and_outputs_live_in_separate_trees(runner, tmp_path):
    # Only tasks that publish outputs create files under outputs/; every attempt has a log.
    g = graph(
        [
            task("quiet", "true", targets=[f"q{i}" for i in range(40)]),
            task("pub", 'echo "k=$FLEETRUN_TARGET" > "$FLEETRUN_OUTPUT"', targets=["a", "b"]),
        ]
    )
    ran = runner(g, parallelism=8)
    assert ran.result.counts == {"succeeded": 42}
    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "logs" / "quiet").iterdir()) == sorted(
        f"q{i}.1.log" for i in range(40)
    )
    assert sorted(p.name for p in (run / "logs" / "pub").iterdir()) == ["a.1.log", "b.1.log"]
    assert list((run / "outputs" / "quiet").iterdir()) == []
    assert sorted(p.name for p in (run / "outputs" / "pub").iterdir()) == [
        "a.1.outputs",
        "b.1.outputs",
    ]
    outs = {ran.result.outputs[i]["k"] for i in ran.result.outputs}
    assert outs == {"a", "b"}


def test_many_spawns_through_each_spawn_setting_are_reaped_once(runner, tmp_path):
    # The spawner hands finished spawns back in batches: every attempt must still
    # start once, end once and leave its group behind it (nothing left in it).
    for threads in (0, 1, 3):
        g = graph([task("t", "true", targets=[f"n{i}" for i in range(150)])])
        ran = runner(
            g,
            LocalExecutor(spawn_threads=threads),
            run_dir=tmp_path / f"run{threads}",
            parallelism=8,
        )
        assert ran.result.counts == {"succeeded": 150}, threads
        started = ran.of(AttemptStarted)
        assert len(started) == len({e.key for e in started}) == 150
        assert len({e.pid for e in started}) == 150
        assert len(ran.of(AttemptEnded)) == 150
        for e in started:
            with pytest.raises(ProcessLookupError):
                os.killpg(e.pgid, 0)


def test_mailbox_delivers_every_job_exactly_once_across_threads():
    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        box = Mailbox(loop)
        jobs = [Job(box, loop.create_future(), "", [], {}, ()) for _ in range(2000)]
        for k, job in enumerate(jobs):
            job.pid = k

        def post(part: list[Job]) -> None:
            for job in part:
                box.post(job)

        threads = [threading.Thread(target=post, args=(jobs[k::3],)) for k in range(3)]
        for t in threads:
            t.start()
        got = await asyncio.gather(*(job.fut for job in jobs))
        for t in threads:
            t.join()
        assert all(job.done for job in jobs)
        return got

    assert asyncio.run(main()) == list(range(2000))


def test_a_spawn_waiting_for_its_child_lets_other_threads_run(tmp_path: Path) -> None:
    # The child's log is a FIFO: the spawn cannot return until someone opens its
    # other end. Only the main thread does that, after sleeping - which needs the
    # GIL while the spawner thread is still inside posix_spawn. Run in a child
    # interpreter so that a held GIL shows up as a timeout, not a hung test.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    script = f"""
import os, threading, time
from fleetrun.executors import _cspawn
assert _cspawn.available()
got = []
def spawn():
    got.append(_cspawn.spawn("/bin/true", ["true"], {{}},
                             [(os.POSIX_SPAWN_OPEN, 1, {str(fifo)!r}, os.O_RDONLY, 0)]))
t = threading.Thread(target=spawn)
t.start()
ran = 0
for _ in range(10):
    time.sleep(0.02)
    ran += 1
fd = os.open({str(fifo)!r}, os.O_WRONLY)
os.close(fd)
t.join()
os.waitpid(got[0], 0)
print("ran", ran, "pgid", "own" if got[0] else "none")
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=20)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["ran", "10", "pgid", "own"]


def test_cspawn_reports_errors_like_os_posix_spawn(tmp_path: Path) -> None:
    from fleetrun.executors import _cspawn

    missing = str(tmp_path / "no-such-program")
    with pytest.raises(FileNotFoundError):
        _cspawn.spawn(missing, ["x"], {}, [])
    # A new process group of its own, and the environment as given.
    out = tmp_path / "out"
    pid = _cspawn.spawn(
        "/bin/sh",
        ["/bin/sh", "-c", 'echo "$$ $(cut -d" " -f5 /proc/$$/stat) $ONLY"'],
        {"ONLY": "this", "PATH": os.defpath},
        [(os.POSIX_SPAWN_OPEN, 1, str(out), os.O_WRONLY | os.O_CREAT, 0o600)],
    )
    os.waitpid(pid, 0)
    me, pgid, value = out.read_text().split()
    assert int(me) == pid == int(pgid)
    assert value == "this"


def _stat_fields(text: str) -> list[str]:
    """The fields of a /proc/PID/stat line after the command name."""
    return text.rsplit(")", 1)[1].split()


@pytest.mark.parametrize("threads", [2, 0])
def test_a_command_in_another_directory_runs_there_without_a_shell(runner, tmp_path, threads):
    # With spawner threads the spawn enters the directory itself, so a plain
    # command is exec'd directly (its parent is this process); without them a
    # shell enters it first. Either way the command runs in the task's directory.
    (tmp_path / "sub").mkdir()
    g = graph(
        [task("where", "pwd", cwd="sub"), task("parent", "cat /proc/self/stat", cwd="sub")],
        base_dir=tmp_path,
    )
    ran = runner(g, LocalExecutor(spawn_threads=threads))
    assert ran.result.counts == {"succeeded": 2}
    assert _log(ran, "where").strip() == str((tmp_path / "sub").resolve())
    ppid = int(_stat_fields(_log(ran, "parent"))[1])
    # The portable executor always enters the directory in the spawn.
    assert (ppid == os.getpid()) is (threads > 0 or PORTABLE)


def test_a_relative_run_dir_still_reaches_tasks_in_other_directories(runner, tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    g = graph(
        [
            task("a", 'echo "v=1" > "$FLEETRUN_OUTPUT"', cwd="sub"),
            task("b", "echo {{ tasks.a.outputs.v }}", needs=["a"], cwd="sub"),
        ],
        base_dir=tmp_path,
    )
    ran = runner(g, run_dir=Path("relative-run"))
    assert ran.result.counts == {"succeeded": 2}
    assert _log(ran, "b").strip() == "1"


@pytest.mark.parametrize("threads", [2, 0])
def test_a_task_directory_that_disappears_fails_with_its_name(runner, tmp_path, threads):
    sub = tmp_path / "sub"
    sub.mkdir()
    g = graph(
        [
            task("first", "true", cwd="sub"),
            task("remove", f"rmdir {shlex.quote(str(sub))}", needs=["first"]),
            task("then", "true", needs=["remove"], cwd="sub"),
        ],
        base_dir=tmp_path,
    )
    ran = runner(g, LocalExecutor(spawn_threads=threads))
    st = ran.settled()
    assert st["first"].state == st["remove"].state == "succeeded"
    assert st["then"].state == "failed"
    # Either way the attempt was tried, and is counted.
    assert st["then"].attempts == 1
    if threads or PORTABLE:
        # The spawn could not enter it: no process ran (the attempt has none).
        assert f"cannot enter the task's directory {sub}" in st["then"].reason
        assert [e.pid for e in ran.of(AttemptStarted) if e.key == "then"] == [None]
    else:
        assert st["then"].reason == "exit 126"  # the shell's `cd` failed


def test_cspawn_env_block_extra_entries_and_chdir_last(tmp_path, monkeypatch):
    from fleetrun.executors import _cspawn

    if not _cspawn.can_chdir():
        pytest.skip("this libc has no posix_spawn_file_actions_addchdir_np")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    block = _cspawn.EnvBlock({"BASE": "b", "PATH": os.defpath})
    pids = [
        _cspawn.spawn(
            "/bin/sh",
            ["/bin/sh", "-c", 'echo "$BASE $EXTRA $(pwd)"'],
            block,
            # Opened before the chdir, so relative to this process's directory.
            [
                (os.POSIX_SPAWN_OPEN, 1, f"out{k}", os.O_WRONLY | os.O_CREAT, 0o600),
                (_cspawn.CHDIR, "sub"),
            ],
            [f"EXTRA=x{k}".encode()],
        )
        for k in range(2)
    ]
    for pid in pids:
        os.waitpid(pid, 0)
    for k in range(2):
        assert (tmp_path / f"out{k}").read_text().split() == ["b", f"x{k}", str(tmp_path / "sub")]
    assert not (tmp_path / "sub" / "out0").exists()


def test_exit_watcher_reports_each_exit_once_and_answers_stale_reports():
    from fleetrun.executors._exits import ExitWatcher
    from fleetrun.executors._proc import Proc

    async def main() -> None:
        loop = asyncio.get_running_loop()
        exits = ExitWatcher(loop)
        try:
            procs = [Proc(loop, exits, _spawn_sleep(f"0.0{k % 10}")) for k in range(60)]
            slow = Proc(loop, exits, _spawn_sleep("0.3"))
            # A report for a process that has not exited (as after a descriptor
            # number was reused) neither blocks the loop nor loses the real exit.
            slow._on_exit()
            assert slow.status is None
            await asyncio.wait_for(asyncio.gather(*(p.done for p in [*procs, slow])), 20)
            for p in [*procs, slow]:
                assert p.status is not None
                assert os.waitstatus_to_exitcode(p.status) == 0
                with pytest.raises(ChildProcessError):
                    os.waitpid(p.pid, os.WNOHANG)  # noqa: ASYNC222 - reaped once, by the watcher
            # A forgotten process is never reported.
            seen: list[int] = []
            pid = _spawn_sleep("0")
            fd = os.pidfd_open(pid)
            exits.watch(fd, lambda: seen.append(pid))
            exits.forget(fd)
            os.waitpid(pid, 0)  # noqa: ASYNC222 - `sleep 0` is over at once
            for _ in range(20):
                await asyncio.sleep(0.005)
            os.close(fd)
            assert seen == []
        finally:
            exits.close()

    asyncio.run(main())


def _spawn_sleep(seconds: str) -> int:
    return os.posix_spawn("/bin/sleep", ["sleep", seconds], os.environ, setpgroup=0)


def test_a_failing_exit_callback_does_not_lose_the_others():
    from fleetrun.executors._exits import ExitWatcher

    async def main() -> tuple[list[int], list[str]]:
        loop = asyncio.get_running_loop()
        errors: list[str] = []
        loop.set_exception_handler(lambda _loop, ctx: errors.append(str(ctx["exception"])))
        exits = ExitWatcher(loop)
        got: list[int] = []
        all_seen = loop.create_future()

        def on_exit(k: int) -> None:
            got.append(k)
            if len(got) == 6:
                all_seen.set_result(None)
            if k % 2 == 0:
                raise RuntimeError(f"callback {k} failed")

        pids = [_spawn_sleep("0") for _ in range(6)]
        fds = [os.pidfd_open(pid) for pid in pids]
        await asyncio.sleep(0.2)  # all have exited: one poll reports them together
        for k, fd in enumerate(fds):
            exits.watch(fd, lambda k=k: on_exit(k))
        await asyncio.wait_for(all_seen, 10)
        exits.close()
        for pid, fd in zip(pids, fds, strict=True):
            os.close(fd)
            os.waitpid(pid, 0)  # noqa: ASYNC222 - exited long ago
        return got, errors

    got, errors = asyncio.run(main())
    assert sorted(got) == list(range(6))
    assert sorted(errors) == [f"callback {k} failed" for k in (0, 2, 4)]
