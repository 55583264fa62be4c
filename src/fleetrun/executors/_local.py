"""``LocalExecutor`` on the Linux fast path: runs an attempt as a local process group,
without stalling the loop (chosen by ``_platform``; ``_posix_local`` elsewhere).

Spawning is ``os.posix_spawn`` (vfork-style in glibc, no copy of the parent's
memory) with ``setpgroup=0`` so each attempt gets its own process group;
stdin is ``/dev/null`` and stdout+stderr go straight to the attempt's log file
(created by the child through spawn file actions, on a spawner thread), so the
parent never touches the output. The spawn also enters the task's directory
where libc can (``_cspawn.CHDIR``). Reaping is through pidfds in one epoll set
that the loop watches (``_exits``): no thread per child and no asyncio child
watcher.

When secrets must be redacted or output is streamed, stdout+stderr go to a
pipe instead; the parent reads it in 64 KiB chunks through a
``StreamRedactor`` into the log (bounded memory however much a task prints).

Commands are turned into a program and arguments by ``_local_base``. Children
start with every signal at its default disposition and an empty signal mask,
whatever fleetrun's own.

An attempt ends when its command ends. What the command leaves running in its
process group is ended (see ``_proc``), and so is whatever left the group
(``setsid``, a double fork): every attempt's processes carry its tag
(``FLEETRUN_ATTEMPT_ID``) and fleetrun is their subreaper (see ``_reaper``).
Both are named in the log. A task with ``keep_running`` keeps them.

Outputs (``key=value`` lines) follow the rule of ``_outputs``, the same for
every executor.
"""

from __future__ import annotations

import asyncio
import os

from fleetrun.executors import _cspawn, _reaper
from fleetrun.executors._contract import Attempt, AttemptResult, Handle
from fleetrun.executors._exits import ExitWatcher
from fleetrun.executors._local_base import LOG_FLAGS, LOG_MODE, LocalBase, devnull, env_entry
from fleetrun.executors._outputs import OutputRefused, parse_output_bytes, parse_outputs
from fleetrun.executors._proc import Proc
from fleetrun.executors._spawner import Action, Job, Mailbox, default_spawn_threads, spawner
from fleetrun.runs_on import LocalOptions

# Where they were defined before ``_outputs``; other modules import them from here.
__all__ = ["LocalExecutor", "OutputRefused", "parse_output_bytes", "parse_outputs"]


class LocalExecutor(LocalBase):
    """Runs attempts as local child processes (see the module docstring).

    ``grace`` is used when an attempt gives none (the engine passes
    ``RunOptions.grace``). ``spawn_threads``: threads that call ``posix_spawn``
    (None: ``default_spawn_threads()``; 0: call it on the loop thread).
    """

    def __init__(self, grace: float = 10.0, *, spawn_threads: int | None = None) -> None:
        super().__init__(grace)
        self._active: set[Proc] = set()
        self._env_block: dict[int, _cspawn.EnvBlock] = {}
        if spawn_threads is None:
            spawn_threads = default_spawn_threads()
        self._spawner = spawner(spawn_threads) if spawn_threads > 0 else None
        self._box: Mailbox | None = None
        self._exits: ExitWatcher | None = None
        # Orphans of attempts are re-parented here (see ``_reaper``).
        _reaper.become_subreaper()
        self._children = _reaper.Children()
        self._leftovers: set[_reaper.Leftovers] = set()

    # -- per-task preparation (cached: built once per task, not per attempt) ------

    def _new_env(self, key: int, env: dict[str, str]) -> None:
        if self._spawner is not None and _cspawn.available():
            # Encoded once for every attempt of the task.
            self._env_block[key] = _cspawn.EnvBlock(env)

    def _spawn_env(
        self, attempt: Attempt, base: dict[str, str]
    ) -> tuple[dict[str, str] | _cspawn.EnvBlock, list[bytes]]:
        """The attempt's environment in the form its spawner takes, and encoded extras."""
        extra = attempt.env_extra
        block = self._env_block.get(id(attempt.env))
        if block is not None:
            return block, list(map(env_entry, extra, extra.values()))
        return {**base, **extra}, []

    def _spawn_chdir(self, cwd: str | None) -> bool:
        """True when the spawn itself can enter ``cwd`` (no shell needed for it).

        Only spawner threads use ``_cspawn``, which has the action; a directory
        that is missing is left to the shell, which says so and exits 126.
        """
        if cwd is None or self._spawner is None or not _cspawn.can_chdir():
            return False
        return self._dir_ok(cwd)

    # -- the attempt ------------------------------------------------------------

    async def run(self, spec: Attempt) -> AttemptResult:
        """Spawn the attempt, wait for the whole group to end, collect outputs."""
        keep = LocalOptions.of(spec.options).keep_running  # before anything is started
        loop = asyncio.get_running_loop()
        base = self._base_env(spec)
        # PATH is never a per-attempt name: the base environment resolves the program.
        cwd = self._task_cwd(spec.cwd)
        chdir = self._spawn_chdir(cwd)
        path, argv = self._argv(spec.command, base, None if chdir else cwd)
        env, extra_env = self._spawn_env(spec, base)
        grace = self._grace(spec.grace if spec.grace is not None else self.grace)

        piped = bool(spec.redactor) or spec.on_output is not None
        null = devnull()
        r = w = log_fd = -1
        actions: list[Action]
        if piped:
            log_fd = os.open(spec.log_path, LOG_FLAGS | os.O_CLOEXEC, LOG_MODE)
            r, w = os.pipe2(os.O_CLOEXEC)
            actions = [
                (os.POSIX_SPAWN_DUP2, null, 0),
                (os.POSIX_SPAWN_DUP2, w, 1),
                (os.POSIX_SPAWN_DUP2, w, 2),
            ]
        else:
            # The child creates its log inside posix_spawn, i.e. on the spawner
            # thread: creating a file can take most of a millisecond on a busy
            # disk, which the loop must not wait for.
            actions = [
                (os.POSIX_SPAWN_DUP2, null, 0),
                (os.POSIX_SPAWN_OPEN, 1, spec.log_path, LOG_FLAGS, LOG_MODE),
                (os.POSIX_SPAWN_DUP2, 1, 2),
            ]
        if chdir:
            assert cwd is not None
            actions.append((_cspawn.CHDIR, cwd))  # last: the log path is not relative to it
        try:
            pid, pidfd = await self._spawn(loop, path, argv, env, extra_env, actions)
        except OSError as e:
            if piped:
                os.close(r)
                os.close(log_fd)
            if chdir and cwd is not None and not self._still_usable(cwd):
                raise OSError(e.errno, f"cannot enter the task's directory {cwd}") from None
            raise
        except BaseException:
            if piped:
                os.close(r)
                os.close(log_fd)
            raise
        finally:
            if piped:
                os.close(w)
        exits = self._exit_watcher(loop)
        if piped:
            proc = Proc(
                loop,
                exits,
                pid,
                r,
                log_fd,
                spec.redactor.stream(),
                spec.on_output,
                pidfd=pidfd,
                grace=grace,
                keep=keep,
            )
        else:
            proc = Proc(loop, exits, pid, pidfd=pidfd, grace=grace, keep=keep)

        return await self._wait(loop, spec, proc, grace)

    async def _wait(
        self, loop: asyncio.AbstractEventLoop, spec: Attempt, proc: Proc, grace: float
    ) -> AttemptResult:
        """Wait for the attempt's group to end (ending it on timeout or cancellation)."""
        pid = proc.pid
        self._active.add(proc)
        self._leaders.add(pid)
        tag = spec.env_extra.get(_reaper.ATTEMPT_ID, "")
        timer = None
        ended: list[str] = []
        try:
            spec.on_started(Handle("local", self._host, pid, pid))
            if spec.timeout is not None:
                timer = loop.call_later(spec.timeout, proc.on_timeout, grace)
            try:
                await proc.done
                if not proc.keep:
                    # The fast path: one read of the children list per batch of exits.
                    first = None
                    if not proc.left and not proc.terminating:
                        assert self._exits is not None
                        first = self._children.get(self._exits.batches)
                    ended = await self._end_leftovers(tag, grace, first)
            except asyncio.CancelledError:
                ended = await self._end(proc, grace, None if proc.keep else tag)
                self._note(spec, proc, ended)
                raise
        finally:
            if timer is not None:
                timer.cancel()
            self._active.discard(proc)
            self._leaders.discard(pid)
            if not proc.finished:
                # Only on an unexpected error: never leave the group behind.
                proc.kill()
                proc.close()
        self._note(spec, proc, ended)
        return self._result(spec, proc, len(proc.left) + len(ended))

    async def _end_leftovers(self, tag: str, grace: float, first: list[int] | None) -> list[str]:
        """End what the attempt ``tag`` left outside its group (see ``_reaper``)."""
        if first is not None and not first:
            return []  # no child at all: nothing can be left
        left = _reaper.Leftovers(tag, self._leaders)
        self._leftovers.add(left)
        if self._now:
            left.kill_now()
        try:
            return await left.end(first, grace)
        finally:
            self._leftovers.discard(left)

    async def _spawn(
        self,
        loop: asyncio.AbstractEventLoop,
        path: str,
        argv: list[str],
        env: dict[str, str] | _cspawn.EnvBlock,
        extra_env: list[bytes],
        actions: list[Action],
    ) -> tuple[int, int | None]:
        """``posix_spawn`` on a spawner thread (see ``_spawner``).

        Returns the new group leader's pid and its pidfd (None: not opened yet).
        The loop never waits for an exec and keeps reaping and scheduling while
        the next child starts (``spawn_threads=0`` spawns inline instead). If
        the attempt is cancelled meanwhile, the spawn still completes, and the
        new group is killed and reaped before the cancellation goes on.
        """
        if self._spawner is None:
            # Opt-in: the loop waits for the child's exec (a fraction of a millisecond).
            assert isinstance(env, dict)  # _spawn_env: a dict without spawner threads
            pid = os.posix_spawn(  # noqa: ASYNC221
                path, argv, env, file_actions=actions, setpgroup=0, **_cspawn.CLEAN_SIGNALS
            )
            return pid, None
        box = self._mailbox(loop)
        job = Job(box, loop.create_future(), path, argv, env, actions, extra_env)
        self._spawner.submit(job)
        try:
            return await job.fut, job.pidfd
        except asyncio.CancelledError:
            while not job.done:
                job.fut = loop.create_future()
                try:
                    await job.fut
                except asyncio.CancelledError:
                    continue
                except BaseException:
                    break  # the spawn failed: nothing to clean up
            if job.pid is not None:
                proc = Proc(loop, self._exit_watcher(loop), job.pid, pidfd=job.pidfd)
                proc.kill()
                await self._end(proc, 0.0)
            raise

    def _mailbox(self, loop: asyncio.AbstractEventLoop) -> Mailbox:
        box = self._box
        if box is None or box.loop is not loop:
            box = self._box = Mailbox(loop)
        return box

    def _exit_watcher(self, loop: asyncio.AbstractEventLoop) -> ExitWatcher:
        exits = self._exits
        if exits is None or exits.loop is not loop:
            if exits is not None:
                exits.close()  # its loop's run is over
            exits = self._exits = ExitWatcher(loop)
        return exits

    async def _end(self, proc: Proc, grace: float, tag: str | None = None) -> list[str]:
        """Cancelled: TERM, grace, KILL, reap - and wait for it even if cancelled again.

        With ``tag``, what the attempt left outside its group is ended too;
        returns what that was.
        """
        proc.terminate(self._grace(grace))
        while not proc.finished:
            proc.done = asyncio.get_running_loop().create_future()
            proc._check()
            try:
                await proc.done
            except asyncio.CancelledError:
                proc.kill()  # a second cancellation skips the grace period
        if tag is None:
            return []
        try:
            return await self._end_leftovers(tag, grace, None)
        except asyncio.CancelledError:
            return []  # already re-raising a cancellation: ended, without the grace

    def kill_now(self) -> None:
        """SIGKILL every group that is being ended and what left it (skip the rest of
        the grace period); whatever is ended later in this run gets no grace either."""
        self._now = True
        for proc in list(self._active):
            proc.hurry()
        for left in list(self._leftovers):
            left.kill_now()

    async def aclose(self) -> None:
        """Stop watching for exits and drop the per-task caches (once no attempt runs;
        the executor opens anew if used again)."""
        if self._active or self._leftovers:
            return  # an attempt still needs its exit watcher
        if self._exits is not None:
            self._exits.close()
            self._exits = None
        self._env.clear()
        self._now = False  # a later run (the executor opens anew) has its grace again
        self._env_block.clear()
