"""Where fleetrun keeps its record on disk: one layout, used by every package.

```
<state dir>/                              .fleetrun beside the plan (or --state-dir)
  state.db                                the journal (SQLite; WAL: state.db-wal, -shm)
  locks/<key>.lock                        one per plan: who is running it
  runs/<run id>/                          one per run: ``RunLayout``
    logs/<task>/<target>.<n>.log          attempt n's output, as it arrived
    outputs/<task>/<target>.<n>.outputs   attempt n's ``$FLEETRUN_OUTPUT`` file
    vars.json                             the run's --var/--var-file values (for a retry)
```

``<task>`` and ``<target>`` are ``safe_name`` of the names; an unfanned task's
files are named after the task (``logs/deploy/deploy.1.log``). The plan
snapshot lives in the journal (``runs.plan_snapshot``), not in a file.

The engine writes attempt files at thousands per second, so the per-attempt
part is plain string work: ``task_logs``/``task_outputs`` once per task, then
``log_file``/``outputs_file`` with the ``stem`` of the instance.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fleetrun.names import safe_name

__all__ = [
    "DB_NAME",
    "LOCKS_DIR",
    "LOGS_DIR",
    "OUTPUTS_DIR",
    "RUNS_DIR",
    "RUN_DIRS",
    "STATE_DIR_NAME",
    "VARS_FILE",
    "RunLayout",
]

STATE_DIR_NAME = ".fleetrun"
"""The state directory's name beside the plan (or in the working directory)."""

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
"""A run's ``--var``/``--var-file`` values, exactly, in its run folder (mode 0600)."""

_LOG_NAME = re.compile(r"^(?P<stem>.+)\.(?P<n>[0-9]+)\.log$")


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

    def task_logs(self, task: str) -> str:
        """``logs/<task>``, the folder of the task's attempt logs."""
        return f"{self.directory}/{LOGS_DIR}/{safe_name(task)}"

    def task_outputs(self, task: str) -> str:
        """``outputs/<task>``, the folder of the task's attempt outputs files."""
        return f"{self.directory}/{OUTPUTS_DIR}/{safe_name(task)}"

    @staticmethod
    def stem(task: str, target: str | None) -> str:
        """The file stem of an instance: its target's safe name, or the task's
        when it is not fanned over targets."""
        return safe_name(target or task)

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
