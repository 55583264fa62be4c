"""Where fleetrun keeps its record on disk: one layout, used by every package.

```
<state dir>/                              .fleetrun beside the plan (or --state-dir)
  state.db                                the journal (SQLite; WAL: state.db-wal, -shm)
  locks/<key>.lock                        one per plan: who is running it
  runs/<run id>/                          one per run: ``RunLayout``
    logs/<task>/<target>.<n>.log          attempt n's output, as it arrived
    outputs/<task>/<target>.<n>.outputs   attempt n's ``$FLEETRUN_OUTPUT`` file
    vars.json                             the run's --var/--var-file values (for a retry)
    promote                               the wave the last `fleetrun promote` approved
```

``<task>`` and ``<target>`` are ``disk_name`` of the names; an unfanned task's
files are named after the task (``logs/deploy/deploy.1.log``). The plan
snapshot lives in the journal (``runs.plan_snapshot``), not in a file.

Names are free text, file systems are not: ``disk_name`` gives every name a
component of its own, also where the file system folds case (``EU``/``eu``),
normalizes Unicode (NFC/NFD) or limits a component to 255 bytes. A name of
lower-case ASCII letters, digits and ``_.@+=,-`` (not starting with ``.``), of
at most ``MAX_NAME_BYTES`` bytes, is its own file name (``eu-west``,
``prod_eu``); any other name is a readable ASCII slug of it, ``~`` and a hash
of its exact UTF-8 bytes (``prod/eu`` -> ``prod_eu~7394b101994b``, ``EU`` ->
``EU~…``). Names kept as they are never hold ``~`` and hashes are lower-case
hex, so no two names meet on any of those file systems.

The journal records each attempt's log path, so runs recorded with an older
spelling (the name with ``/`` and NUL turned into ``_``) are read by their
recorded paths; ``legacy_stem`` is that spelling, for logs of such a run that
the journal never recorded.

The engine writes attempt files at thousands per second, so the per-attempt
part is plain string work: ``task_logs``/``task_outputs`` once per task, then
``log_file``/``outputs_file`` with the ``stem`` of the instance.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from fleetrun.names import safe_name

__all__ = [
    "DB_NAME",
    "LOCKS_DIR",
    "LOGS_DIR",
    "MAX_NAME_BYTES",
    "OUTPUTS_DIR",
    "RUNS_DIR",
    "RUN_DIRS",
    "STATE_DIR_NAME",
    "VARS_FILE",
    "RunLayout",
    "disk_name",
]

STATE_DIR_NAME = ".fleetrun"
"""The state directory's name beside the plan (or in the working directory)."""

POOLS_DIR_ENV = "FLEETRUN_POOLS_DIR"
"""Where the shared pools' coordination file lives, when set (tests, several users)."""


def shared_pools_dir(create: bool = True) -> Path:
    """The directory of the shared pools' coordination file (``pools.db``), one for
    every run of this user on this machine, whatever the plan's state directory:
    ``$FLEETRUN_POOLS_DIR``, else ``$XDG_STATE_HOME/fleetrun``, else
    ``~/.local/state/fleetrun``. Made owner-only (0700) when missing, unless
    not ``create`` (a reader)."""
    given = os.environ.get(POOLS_DIR_ENV)
    if given:
        where = Path(given)
    else:
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        where = Path(base) / "fleetrun"
    if create:
        with contextlib.suppress(OSError):  # opening pools.db then says what is wrong
            where.mkdir(mode=0o700, parents=True)
    return where


DB_NAME = "state.db"
"""The journal's file name inside the state directory."""

RUNS_DIR = "runs"
"""Under the state directory: one folder per run (``RunLayout``)."""

LOCKS_DIR = "locks"
"""Under the state directory: one lock file per plan."""

LOGS_DIR = "logs"
"""Under a run's folder: ``<task>/<target>.<n>.log`` per attempt."""

OUTPUTS_DIR = "outputs"
"""Under a run's folder: ``<task>/<target>.<n>.outputs`` per attempt."""

RUN_DIRS = (LOGS_DIR, OUTPUTS_DIR)
"""The folders a run's folder holds from its start (the engine adds ``<task>`` below)."""

VARS_FILE = "vars.json"
PROMOTE_FILE = "promote"
"""A run's ``--var``/``--var-file`` values, exactly, in its run folder (mode 0600)."""

MAX_NAME_BYTES = 100
"""Most bytes of a ``disk_name`` (a component takes 255: room for ``.<n>.outputs``)."""

_LOG_NAME = re.compile(r"^(?P<stem>.+)\.(?P<n>[0-9]+)\.log$")
_KEPT = re.compile(r"[a-z0-9_@+=,-][a-z0-9_.@+=,-]*")
_NOT_SLUG = re.compile(r"[^A-Za-z0-9_.@+=,-]")
_HASH_CHARS = 12  # hex digits: 48 bits of the name's SHA-256


def disk_name(name: str) -> str:
    """``name`` (a task or target name) as a path component of its own.

    The same name always gives the same component, and two different names
    never give components that a file system could take for one another:
    the result is ASCII, at most ``MAX_NAME_BYTES`` bytes, and either the name
    itself (lower-case plain names) or a slug of it plus ``~`` and a hash of
    the exact name (see the module docstring).
    """
    if len(name) <= MAX_NAME_BYTES and _KEPT.fullmatch(name):
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]
    slug = _NOT_SLUG.sub("_", name).lstrip(".")[: MAX_NAME_BYTES - _HASH_CHARS - 1]
    return f"{slug}~{digest}"


@dataclass(frozen=True, slots=True)
class RunLayout:
    """The paths of one run's folder, ``<state dir>/runs/<run id>``.

    Paths of the folder itself are ``Path``s; the per-task and per-attempt ones
    are ``str`` (built once per task, then joined per attempt with no ``Path``
    work), the same text either way.
    """

    directory: Path

    @classmethod
    def of(cls, state_dir: Path, run_id: str) -> RunLayout:
        """The layout of run ``run_id`` in ``state_dir``."""
        return cls(state_dir / RUNS_DIR / run_id)

    @property
    def logs(self) -> Path:
        """``logs/``: one folder per task."""
        return self.directory / LOGS_DIR

    @property
    def outputs(self) -> Path:
        """``outputs/``: one folder per task."""
        return self.directory / OUTPUTS_DIR

    @property
    def vars_file(self) -> Path:
        """``vars.json``: the run's command-line variables."""
        return self.directory / VARS_FILE

    @property
    def promote_file(self) -> Path:
        """``promote``: the rollout wave the last ``fleetrun promote`` approved."""
        return self.directory / PROMOTE_FILE

    def task_logs(self, task: str) -> str:
        """``logs/<task>``, the folder of the task's attempt logs."""
        return f"{self.directory}/{LOGS_DIR}/{disk_name(task)}"

    def task_outputs(self, task: str) -> str:
        """``outputs/<task>``, the folder of the task's attempt outputs files."""
        return f"{self.directory}/{OUTPUTS_DIR}/{disk_name(task)}"

    @staticmethod
    def stem(task: str, target: str | None) -> str:
        """The file stem of an instance: its target's ``disk_name``, or the task's
        when it is not fanned over targets."""
        return disk_name(target or task)

    def legacy_names(self, task: str, target: str | None) -> tuple[str, str]:
        """``(task_logs, stem)`` as runs recorded before ``disk_name`` spelled them
        (``/`` and NUL turned into ``_``; different names could meet)."""
        return f"{self.directory}/{LOGS_DIR}/{safe_name(task)}", safe_name(target or task)

    @staticmethod
    def log_file(task_logs: str, stem: str, n: int) -> str:
        """Attempt ``n``'s log in the folder ``task_logs``: ``<stem>.<n>.log``."""
        return f"{task_logs}/{stem}.{n}.log"

    @staticmethod
    def outputs_file(task_outputs: str, stem: str, n: int) -> str:
        """Attempt ``n``'s outputs file in ``task_outputs``: ``<stem>.<n>.outputs``."""
        return f"{task_outputs}/{stem}.{n}.outputs"

    def log(self, task: str, target: str | None, n: int) -> Path:
        """The log of attempt ``n`` of ``task`` on ``target``."""
        return Path(self.log_file(self.task_logs(task), self.stem(task, target), n))

    def attempt_outputs(self, task: str, target: str | None, n: int) -> Path:
        """The outputs file of attempt ``n`` of ``task`` on ``target``."""
        return Path(self.outputs_file(self.task_outputs(task), self.stem(task, target), n))

    @staticmethod
    def parse_log_name(name: str) -> tuple[str, int] | None:
        """``(stem, n)`` of a log file's name (``eu.3.log``), None for another file."""
        m = _LOG_NAME.match(name)
        return None if m is None else (m["stem"], int(m["n"]))
