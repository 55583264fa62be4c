"""What every platform's ``LocalExecutor`` shares: the command as a program and its
arguments, the environment, the working directory, the log's notes and the result.

Commands are ``/bin/sh -c COMMAND``. Like make, a command made only of plain
words (letters, digits and ``_@%+=:,./-``; no quotes, no ``$``, no globbing,
no redirection, not a shell builtin) is exec'd directly after splitting it
into words (what ``shlex.split`` gives for such text): the result is the same
and one process cheaper; a directory that the spawn cannot enter is entered by
the shell instead (``cd DIR || exit 126``).

Outputs (``key=value`` lines) follow the rule of ``_outputs``, the same for
every executor. Nothing here is specific to one operating system.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import sys
from collections.abc import Mapping

from fleetrun.executors._contract import Attempt, AttemptResult
from fleetrun.executors._group import GroupProc
from fleetrun.executors._outputs import read_output_file, redact_output_file
from fleetrun.names import is_per_attempt

_PLAIN = re.compile(r"[\w@%+=:,./ -]+", re.ASCII)
_SHELL_ONLY = frozenset(
    {".", ":", "alias", "bg", "break", "cd", "command", "continue", "eval", "exec", "exit"}
    | {"export", "fc", "fg", "getopts", "hash", "jobs", "read", "readonly", "return", "set"}
    | {"shift", "source", "times", "trap", "type", "ulimit", "umask", "unalias", "unset", "wait"}
)
LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
LOG_MODE = 0o600

_NULL: list[int] = []


def devnull() -> int:
    """A process-wide read-only descriptor of /dev/null, the stdin of every attempt."""
    if not _NULL:
        _NULL.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
    return _NULL[0]


_FS_ENCODING = sys.getfilesystemencoding()
_FS_ERRORS = sys.getfilesystemencodeerrors()


def env_entry(name: str, value: str) -> bytes:
    """``NAME=value`` encoded as ``os.fsencode`` would."""
    return f"{name}={value}".encode(_FS_ENCODING, _FS_ERRORS)


class LocalBase:
    """The platform-independent half of a local executor (see the module docstring).

    ``grace`` is used when an attempt gives none (the engine passes
    ``RunOptions.grace``).
    """

    kind = "local"
    queue_reason: str | None = None

    def __init__(self, grace: float = 10.0) -> None:
        self.grace = grace
        self._host = socket.gethostname()
        # Keyed by id(attempt.env), which stays the same object for every
        # attempt of a task (see the contract); the value keeps it alive.
        self._env: dict[int, tuple[Mapping[str, str], dict[str, str]]] = {}
        self._which: dict[tuple[str, str], str | None] = {}
        self._cwd: dict[str | None, str | None] = {}
        self._chdir_ok: dict[str, bool] = {}
        self._here = os.getcwd()
        self._leaders: set[int] = set()
        """The leaders (and so the process groups) of the attempts running now."""
        self._now = False
        """Set by ``kill_now``: whatever is ended from then on (a group, what left
        it, found now or later) gets SIGKILL at once, without a grace period."""

    def _grace(self, grace: float) -> float:
        """``grace``, or none at all once ``kill_now`` was called."""
        return 0.0 if self._now else grace

    # -- per-task preparation (cached: built once per task, not per attempt) ------

    def _new_env(self, key: int, env: dict[str, str]) -> None:
        """A task's base environment was just built (a subclass may derive from it)."""

    def _base_env(self, attempt: Attempt) -> dict[str, str]:
        """This process's environment under the task's (no per-attempt names)."""
        key = id(attempt.env)
        cached = self._env.get(key)
        if cached is None:
            env = dict(os.environ)
            env.update(attempt.env)
            # Per-attempt names are fleetrun's alone (an outer run's must not leak in).
            for name in [n for n in env if is_per_attempt(n)]:
                del env[name]
            cached = self._env[key] = (attempt.env, env)
            self._new_env(key, env)
        return cached[1]

    def _task_cwd(self, cwd: str | None) -> str | None:
        """The attempt's working directory, or None when it is this process's own."""
        if cwd not in self._cwd:
            self._cwd[cwd] = None if cwd is None or os.path.abspath(cwd) == self._here else cwd
        return self._cwd[cwd]

    def _dir_ok(self, cwd: str) -> bool:
        """True when ``cwd`` is a directory (cached; a missing one is left to the shell)."""
        ok = self._chdir_ok.get(cwd)
        if ok is None:
            ok = self._chdir_ok[cwd] = os.path.isdir(cwd)
        return ok

    def _resolve(self, name: str, path: str) -> str | None:
        key = (name, path)
        if key not in self._which:
            self._which[key] = shutil.which(name, path=path)
        return self._which[key]

    def _still_usable(self, cwd: str) -> bool:
        """After a failed spawn: can ``cwd`` still be entered (or did the chdir fail)?"""
        self._chdir_ok[cwd] = ok = os.path.isdir(cwd) and os.access(cwd, os.X_OK)
        return ok

    def _argv(self, command: str, env: Mapping[str, str], cwd: str | None) -> tuple[str, list[str]]:
        """The program and arguments of ``command`` (``cwd``: None, or entered by the shell)."""
        if cwd is None and _PLAIN.fullmatch(command):
            # No quotes, escapes or other specials: shlex.split is plain split here.
            words = command.split()
            if words and words[0] not in _SHELL_ONLY and "=" not in words[0]:
                exe = self._resolve(words[0], env.get("PATH", os.defpath))
                if exe is not None:
                    return exe, words
        if cwd is not None:
            # The spawn does not enter it; the shell does (126: cannot enter it).
            command = f"cd -- {shlex.quote(cwd)} || exit 126\n{command}"
        return "/bin/sh", ["/bin/sh", "-c", command]

    # -- the end of an attempt ----------------------------------------------------

    @staticmethod
    def _note(spec: Attempt, proc: GroupProc, outside: list[str]) -> None:
        """Say in the log what was ended after the command itself ended."""
        ended = proc.left + outside
        if not ended:
            return
        shown = ", ".join(ended[:20]) + (f" and {len(ended) - 20} more" if len(ended) > 20 else "")
        text = spec.redactor.redact(
            f"[fleetrun] ended {len(ended)} process(es) the command left running: {shown}\n"
        )
        try:
            fd = os.open(spec.log_path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except OSError:
            return
        try:
            last = b"\n"
            size = os.fstat(fd).st_size
            if size:
                with open(spec.log_path, "rb") as f:
                    f.seek(size - 1)
                    last = f.read(1)
            os.write(fd, (("\n" if last != b"\n" else "") + text).encode())
        except OSError:
            pass  # the log cannot take the note: the attempt's result stands
        finally:
            os.close(fd)

    @staticmethod
    def _result(spec: Attempt, proc: GroupProc, left: int) -> AttemptResult:
        """How the attempt ended, with its outputs when it succeeded."""
        code = proc.returncode
        assert code is not None
        if code == 0 and not proc.timed_out:
            outputs = read_output_file(spec.output_path, spec.redactor, spec.key)
            return AttemptResult(exit_code=0, outputs=outputs, left_running=left)
        if spec.redactor:
            # A failed attempt's outputs are not used, but what it wrote stays on disk:
            # redacted like everything else there.
            redact_output_file(spec.output_path, spec.redactor)
        if code < 0:
            return AttemptResult(
                exit_code=None, signal=-code, timed_out=proc.timed_out, left_running=left
            )
        return AttemptResult(exit_code=code, timed_out=proc.timed_out, left_running=left)
