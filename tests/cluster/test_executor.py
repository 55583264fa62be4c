"""ClusterExecutor against a real scheduler and two real workers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from fleetrun.cluster import LocalCluster
from fleetrun.executors import (
    ClusterExecutor,
    ClusterOrphanFinder,
    LocalExecutor,
    OutputRefused,
    _cluster_job,
)
from fleetrun.executors._contract import AttemptResult, Handle, RecordedAttempt
from fleetrun.runs_on import ClusterOptions

from ._helpers import make_attempt, pgrep, run


def _marker() -> str:
    return f"fleetrun-test-{uuid.uuid4().hex[:10]}"


def _sleep() -> str:
    """A unique ``sleep`` argument, so pgrep finds exactly this test's child."""
    return f"60.{uuid.uuid4().int % 10**9:09d}"


def _gone(marker: str, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not pgrep(marker):
            return True
        time.sleep(0.05)
    return False


def test_outputs_env_log_lines_and_handle(cluster: LocalCluster, tmp_path: Path) -> None:
    lines: list[str] = []
    handles: list[Handle] = []
    cmd = (
        "echo start $FLEETRUN_ATTEMPT $PLAN_V; echo 'token is hunter22'; "
        "echo address=0xabc >> $FLEETRUN_OUTPUT; echo 'tx = 7' >> $FLEETRUN_OUTPUT; "
        "echo done >&2"
    )
    attempt = make_attempt(
        tmp_path,
        cmd,
        env={"PLAN_V": "v1"},
        secrets=("hunter22",),
        lines=lines,
        handles=handles,
    )

    async def go() -> object:
        ex = ClusterExecutor(cluster.address)
        try:
            return await ex.run(attempt)
        finally:
            await ex.aclose()

    result = run(go())
    assert result.ok  # type: ignore[attr-defined]
    assert result.outputs == {"address": "0xabc", "tx": "7"}  # type: ignore[attr-defined]
    assert lines == ["start 1 v1", "token is ***", "done"]
    assert Path(attempt.log_path).read_text() == "start 1 v1\ntoken is ***\ndone\n"
    assert oct(os.stat(attempt.log_path).st_mode & 0o777) == "0o600"
    assert handles == [Handle(kind="cluster", host=cluster.address, job="fleetrun-r1-job@t-1")]


def test_exit_codes_signals_and_many_jobs(cluster: LocalCluster, tmp_path: Path) -> None:
    async def go() -> list[object]:
        ex = ClusterExecutor(cluster.address)
        try:
            jobs = [
                ex.run(make_attempt(tmp_path, f"echo n={i} > $FLEETRUN_OUTPUT", key=f"j@{i}"))
                for i in range(20)
            ]
            jobs.append(ex.run(make_attempt(tmp_path, "exit 3", key="fail")))
            jobs.append(ex.run(make_attempt(tmp_path, "kill -9 $$", key="sig")))
            return list(await asyncio.gather(*jobs))
        finally:
            await ex.aclose()

    results = run(go())
    assert [r.outputs for r in results[:20]] == [{"n": str(i)} for i in range(20)]  # type: ignore[attr-defined]
    assert (results[20].exit_code, results[20].outputs) == (3, None)  # type: ignore[attr-defined]
    assert (results[21].exit_code, results[21].signal) == (None, 9)  # type: ignore[attr-defined]


def test_timeout_ends_the_process_group_on_the_worker(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    marker = _marker()
    # The leader ignores SIGTERM; a background child holds the pipe: only SIGKILL of
    # the whole group after the grace ends both.
    cmd = f"sh -c 'trap \"\" TERM; sleep 30 & sleep 31; : {marker}' & sleep 32; : {marker}"

    async def go() -> tuple[object, float]:
        ex = ClusterExecutor(cluster.address)
        try:
            t = time.monotonic()
            r = await ex.run(make_attempt(tmp_path, cmd, timeout=1.0, grace=0.5))
            return r, time.monotonic() - t
        finally:
            await ex.aclose()

    result, took = run(go())
    assert result.timed_out  # type: ignore[attr-defined]
    assert result.exit_code is None  # type: ignore[attr-defined]
    assert took < 5.0
    assert _gone(marker, 2.0), pgrep(marker)


def test_cancel_ends_the_job_within_its_grace(cluster: LocalCluster, tmp_path: Path) -> None:
    marker = _marker()
    script = tmp_path / f"{marker}.sh"
    nap = _sleep()
    script.write_text(f"trap 'echo got TERM; exit 5' TERM\nsleep {nap} & wait\n")
    cmd = f"sh {script}"
    seen: list[str] = []

    async def go() -> float:
        ex = ClusterExecutor(cluster.address)
        try:
            attempt = make_attempt(tmp_path, cmd, grace=5.0, lines=seen)
            task = asyncio.ensure_future(ex.run(attempt))
            for _ in range(200):
                await asyncio.sleep(0.05)
                if pgrep(marker):
                    break
            t = time.monotonic()
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            else:  # pragma: no cover - the assertion below reports it
                raise AssertionError("the run was not cancelled")
            return time.monotonic() - t
        finally:
            await ex.aclose()

    took = run(go())
    # The script ends on SIGTERM (before the grace is up); its sleep goes with the group.
    assert took < 4.0
    assert _gone(marker, 2.0), pgrep(marker)
    assert _gone(f"sleep {nap}", 2.0), pgrep(nap)


def test_kill_now_skips_the_grace(cluster: LocalCluster, tmp_path: Path) -> None:
    marker = _marker()
    script = tmp_path / f"{marker}.sh"
    script.write_text("trap '' TERM\nwhile :; do sleep 0.1; done\n")

    async def go() -> float:
        ex = ClusterExecutor(cluster.address)
        try:
            task = asyncio.ensure_future(ex.run(make_attempt(tmp_path, f"sh {script}", grace=30)))
            for _ in range(200):
                await asyncio.sleep(0.05)
                if pgrep(marker):
                    break
            t = time.monotonic()
            task.cancel()
            await asyncio.sleep(0.5)
            ex.kill_now()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return time.monotonic() - t
        finally:
            await ex.aclose()

    took = run(go())
    assert took < 5.0  # not the 30 s grace
    assert _gone(marker, 2.0), pgrep(marker)


def test_a_directory_missing_on_the_worker_becomes_a_scratch_directory(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    from dataclasses import replace

    here = tmp_path / "here"
    here.mkdir()

    async def go() -> tuple[object, object]:
        ex = ClusterExecutor(cluster.address)
        try:
            a = replace(make_attempt(tmp_path, "pwd", key="a"), cwd=str(here))
            b = replace(make_attempt(tmp_path, "pwd; touch x", key="b"), cwd=str(tmp_path / "nope"))
            return await ex.run(a), await ex.run(b)
        finally:
            await ex.aclose()

    ra, rb = run(go())
    assert ra.ok  # type: ignore[attr-defined]
    assert rb.ok  # type: ignore[attr-defined]
    assert (tmp_path / "a.1.log").read_text() == f"{here}\n"
    note, scratch = (tmp_path / "b.1.log").read_text().splitlines()
    assert note == f"[fleetrun: {tmp_path / 'nope'} is not on this worker; running in {scratch}]"
    assert not Path(scratch).exists()


def test_unreachable_scheduler_is_a_connect_error(tmp_path: Path) -> None:
    async def go() -> object:
        ex = ClusterExecutor("tcp://127.0.0.1:9", connect_timeout=1.0)
        try:
            return await ex.run(make_attempt(tmp_path, "true"))
        finally:
            await ex.aclose()

    r = run(go())
    assert (r.exit_code, r.error_kind) == (None, "connect")  # type: ignore[attr-defined]
    assert "unreachable" in r.reason  # type: ignore[attr-defined]


def test_orphans_of_a_dead_run_are_found_and_ended(cluster: LocalCluster, tmp_path: Path) -> None:
    marker = _marker()
    script = tmp_path / f"{marker}.sh"
    nap = _sleep()
    script.write_text(f"sleep {nap}\n")
    # A run in another process submits a job, reports its handle, then dies by SIGKILL.
    code = textwrap.dedent(
        f"""
        import asyncio, json, sys
        sys.path.insert(0, {str(Path(__file__).parents[2])!r})
        from pathlib import Path
        from tests.cluster._helpers import make_attempt
        from fleetrun.executors import ClusterExecutor
        async def main():
            ex = ClusterExecutor({cluster.address!r})
            hs = []
            a = make_attempt(Path({str(tmp_path)!r}), "sh {script}", run_id="dead", handles=hs)
            t = asyncio.ensure_future(ex.run(a))
            while not hs:
                await asyncio.sleep(0.05)
            print(json.dumps(hs[0].to_json()), flush=True)
            await t
        asyncio.run(main())
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    handle = Handle.from_json(json.loads(proc.stdout.readline()))
    for _ in range(200):
        if pgrep(marker):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert pgrep(marker), "the job should outlive the run's client"
    rec = RecordedAttempt(run_id="dead", key="job@t", attempt=1, handle=handle)
    other = RecordedAttempt(
        run_id="dead", key="x", attempt=1, handle=Handle("cluster", cluster.address, job="nope")
    )

    async def go() -> list[object]:
        finder = ClusterOrphanFinder()
        found = await finder.find([rec, other], ["dead"])
        await finder.end(found, grace=1.0)  # type: ignore[arg-type]
        return found  # type: ignore[return-value]

    found = run(go())
    assert [o.handle.job for o in found] == [handle.job]  # type: ignore[attr-defined]
    assert found[0].describe() == f"cluster job {handle.job} on {cluster.address}"  # type: ignore[attr-defined]
    assert _gone(marker, 3.0), pgrep(marker)
    assert _gone(nap, 1.0), pgrep(nap)


def _text(path: str) -> str:
    return Path(path).read_text() if os.path.exists(path) else ""


def test_output_reaches_the_log_while_the_job_runs(cluster: LocalCluster, tmp_path: Path) -> None:
    lines: list[str] = []
    attempt = make_attempt(tmp_path, "echo first; sleep 1.5; echo second", lines=lines)

    async def go() -> tuple[str, list[str], object]:
        ex = ClusterExecutor(cluster.address)
        try:
            task = asyncio.ensure_future(ex.run(attempt))
            seen = ""
            for _ in range(100):
                await asyncio.sleep(0.05)
                seen = _text(attempt.log_path)
                if seen:
                    break
            during = (seen, list(lines))
            return during[0], during[1], await task
        finally:
            await ex.aclose()

    seen, lines_during, result = run(go())
    assert result.ok  # type: ignore[attr-defined]
    assert seen == "first\n"  # before the job ended
    assert lines_during == ["first"]
    assert lines == ["first", "second"]


def test_a_job_without_output_leaves_an_empty_log(cluster: LocalCluster, tmp_path: Path) -> None:
    attempt = make_attempt(tmp_path, "true")

    async def go() -> object:
        ex = ClusterExecutor(cluster.address)
        try:
            return await ex.run(attempt)
        finally:
            await ex.aclose()

    assert run(go()).ok  # type: ignore[attr-defined]
    assert Path(attempt.log_path).read_bytes() == b""
    assert oct(os.stat(attempt.log_path).st_mode & 0o777) == "0o600"
    assert not os.path.exists(attempt.output_path)  # no outputs: no local copy


def test_a_link_at_the_log_path_is_not_followed(cluster: LocalCluster, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("keep me\n")
    attempt = make_attempt(tmp_path, "echo overwritten")
    os.symlink(elsewhere, attempt.log_path)

    async def go() -> None:
        ex = ClusterExecutor(cluster.address)
        try:
            await ex.run(attempt)
        finally:
            await ex.aclose()

    try:
        run(go())
    except OSError:
        pass
    else:  # pragma: no cover - the assertion below reports it
        raise AssertionError("the run followed the link")
    assert elsewhere.read_text() == "keep me\n"


def test_large_outputs_come_back_whole(cluster: LocalCluster, tmp_path: Path) -> None:
    # More than fits in the result event (two values of 40 kB, each under the 64 KiB
    # limit of one value): the result is fetched from the worker.
    big = "x" * 40_000
    cmd = (
        f"echo small=1 >> $FLEETRUN_OUTPUT; printf 'big=%s\\n' {big} >> $FLEETRUN_OUTPUT; "
        f"printf 'big2=%s\\n' {big} >> $FLEETRUN_OUTPUT"
    )

    async def go() -> list[object]:
        ex = ClusterExecutor(cluster.address)
        try:
            return list(
                await asyncio.gather(
                    ex.run(make_attempt(tmp_path, cmd, key="big@1")),
                    ex.run(make_attempt(tmp_path, "echo small=2 > $FLEETRUN_OUTPUT", key="s@2")),
                )
            )
        finally:
            await ex.aclose()

    big_result, small_result = run(go())
    assert big_result.outputs == {"small": "1", "big": big, "big2": big}  # type: ignore[attr-defined]
    assert small_result.outputs == {"small": "2"}  # type: ignore[attr-defined]


def test_jobs_submitted_together_with_different_resources(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    # Submitted in the same turn, they go to the scheduler in one graph per set of resources.
    async def go() -> list[object]:
        ex = ClusterExecutor(cluster.address)
        try:
            return list(
                await asyncio.gather(
                    *(
                        ex.run(
                            make_attempt(
                                tmp_path,
                                f"echo n={i} > $FLEETRUN_OUTPUT",
                                key=f"r@{i}",
                                options=(
                                    ClusterOptions(resources={"MACHINE": 0.5}) if i % 2 else None
                                ),
                            )
                        )
                        for i in range(8)
                    )
                )
            )
        finally:
            await ex.aclose()

    results = run(go())
    assert [r.outputs for r in results] == [{"n": str(i)} for i in range(8)]  # type: ignore[attr-defined]


def test_a_run_cancelled_while_its_job_is_being_submitted_leaves_nothing_running(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    marker = _marker()
    script = tmp_path / f"{marker}.sh"
    script.write_text(f"sleep {_sleep()}\n")

    async def cancelled(ex: ClusterExecutor, key: str, delay: float | None) -> bool:
        """Run one job, cancel it after ``delay`` (None: as soon as it has started on
        the worker and its handle is reported); True when it had started."""
        handles: list[Handle] = []
        me: list[asyncio.Future[object]] = []

        def started(h: Handle) -> None:
            handles.append(h)
            if delay is None:
                me[0].cancel()

        a = make_attempt(tmp_path, f"sh {script}", key=key, grace=0.5)
        task = asyncio.ensure_future(ex.run(dataclasses.replace(a, on_started=started)))
        me.append(task)
        if delay is not None:
            await asyncio.sleep(delay)
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return bool(handles)

    async def go() -> tuple[list[str], list[bool]]:
        ex = ClusterExecutor(cluster.address)
        client = await ex.client()
        try:
            # Cancelled before, while and just after its job goes to the scheduler.
            delays = [0, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, None]
            submitted = [await cancelled(ex, f"c@{i}", d) for i, d in enumerate(delays)]
            await asyncio.sleep(1.0)  # a job that slipped through would have started by now
            running = await client.run(_cluster_job.running_jobs)
            return [k for keys in running.values() for k in keys], submitted
        finally:
            await ex.aclose()

    running, submitted = run(go())
    assert running == []
    assert _gone(marker, 2.0), pgrep(marker)
    assert not submitted[0]  # both cases were met
    assert submitted[-1]


def test_outputs_over_the_limit_are_refused_and_no_secret_stays_on_disk(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    # A value of 1.1 MB, then two more keys, one holding a secret: the outputs are
    # refused with the limit named (never cut short, never with keys dropped), and
    # the secret is on no disk in clear: not here, not on the worker.
    secret = f"s3cr3t-{uuid.uuid4().hex[:8]}"
    cmd = (
        f"{sys.executable} -c \"import os; f = open(os.environ['FLEETRUN_OUTPUT'], 'w'); "
        f"f.write('big=' + 'x' * 1_100_000 + '\\\\nafter=1\\\\ntoken={secret}\\\\n')\""
    )
    attempt = make_attempt(tmp_path, cmd, secrets=(secret,))

    async def go() -> object:
        ex = ClusterExecutor(cluster.address)
        try:
            return await ex.run(attempt)
        finally:
            await ex.aclose()

    with pytest.raises(OutputRefused) as refused:
        run(go())
    assert str(refused.value) == (
        "job@t: its outputs take more than 1048576 bytes (1 MiB), the limit for one "
        "attempt; publish a path or a digest of large data instead"
    )
    here = [p for p in tmp_path.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert here == []
    worker_files = [
        p
        for d in Path("/dev/shm").glob("fleetrun-outputs-*")
        for p in d.glob("*")
        if p.is_file() and secret.encode() in p.read_bytes()
    ]
    assert worker_files == []


def test_outputs_pass_whole_and_their_copy_is_redacted(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    secret = f"s3cr3t-{uuid.uuid4().hex[:8]}"
    value = "y" * 60_000  # under the 64 KiB limit of one value, over the result event's room
    cmd = f"printf 'big=%s\\nafter=1\\ntoken=%s\\n' {value} {secret} > $FLEETRUN_OUTPUT"
    attempt = make_attempt(tmp_path, cmd, secrets=(secret,))

    async def go() -> object:
        ex = ClusterExecutor(cluster.address)
        try:
            return await ex.run(attempt)
        finally:
            await ex.aclose()

    result = run(go())
    assert result.outputs == {"big": value, "after": "1", "token": secret}  # type: ignore[attr-defined]
    assert Path(attempt.output_path).read_text() == f"big={value}\nafter=1\ntoken=***\n"


def test_outputs_that_are_not_utf8_are_refused_as_on_the_local_executor(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    cmd = "printf 'fine=1\\nname=caf\\351\\n' > $FLEETRUN_OUTPUT"

    async def go() -> tuple[BaseException, BaseException]:
        ex = ClusterExecutor(cluster.address)
        local = LocalExecutor(grace=2.0)
        try:
            with pytest.raises(OutputRefused) as on_cluster:
                await ex.run(make_attempt(tmp_path / "c", cmd))
            mine = make_attempt(tmp_path / "l", cmd)
            mine = dataclasses.replace(
                mine, env_extra={**mine.env_extra, "FLEETRUN_OUTPUT": mine.output_path}
            )
            with pytest.raises(OutputRefused) as here:
                await local.run(mine)
            return on_cluster.value, here.value
        finally:
            await ex.aclose()
            await local.aclose()

    (tmp_path / "c").mkdir()
    (tmp_path / "l").mkdir()
    on_cluster, here = run(go())
    assert str(on_cluster) == str(here)
    assert str(on_cluster) == (
        "job@t: output 'name' is not UTF-8 text (byte 0xe9 at offset 8 of its line); "
        "outputs are passed on unchanged or not at all"
    )


def test_jobs_share_one_attempt_to_reach_an_unreachable_scheduler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Four jobs that need the scheduler while it cannot be reached wait for the same
    # connection attempt: one connect_timeout for all of them, not one each in turn.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    tries: list[str] = []
    connect = ClusterExecutor._connect

    async def counted(self: ClusterExecutor) -> object:
        tries.append(str(self.address))
        return await connect(self)

    monkeypatch.setattr(ClusterExecutor, "_connect", counted)

    async def go() -> list[AttemptResult]:
        ex = ClusterExecutor(f"tcp://127.0.0.1:{port}", connect_timeout=1.0)
        try:
            return list(
                await asyncio.gather(
                    *(ex.run(make_attempt(tmp_path, "true", key=f"j@{i}")) for i in range(4))
                )
            )
        finally:
            await ex.aclose()

    results = run(go())
    assert tries == [f"tcp://127.0.0.1:{port}"]
    for r in results:
        assert (r.exit_code, r.signal, r.error_kind) == (None, None, "connect")
        assert r.reason is not None
        assert r.reason.startswith(f"compute cluster tcp://127.0.0.1:{port} unreachable: ")
