"""Which runs a command means: one rule for ``retry``, ``apply --resume`` and every
command that reads the record (``history``, ``show``, ``logs``, ``outputs``,
``report``, ``watch``), and how a run is named to a person.

A run is recorded under its plan file's resolved path; a ``fleetrun exec`` run
under that path plus ``EXEC_SUFFIX`` (an exec of a plan is a plan of its own,
with its own lock, so a retry of the plan never re-runs an exec). With
``--plan FILE``:

- a listing (``select_runs``) holds every run of FILE, its exec runs included;
- one run (``select_run``) is RUN when given, else the latest run of FILE's
  plan, else (a file that only ``fleetrun exec`` ran) its latest exec run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from fleetrun.errors import RunNotFoundError
from fleetrun.state import EXEC_SUFFIX, JournalReader, RunRecord


def plan_key(plan: str | None) -> str | None:
    """The path a plan file's runs are recorded under (None: no plan given)."""
    return str(Path(plan).resolve()) if plan else None


def select_run(reader: JournalReader, ref: str | None, plan: str | None) -> RunRecord:
    """The run a command means: ``ref`` (an id or a unique prefix), else the latest
    run of ``plan`` (of any plan when None); a plan file with no runs of its own
    but ``fleetrun exec`` runs: the latest of those. ``RunNotFoundError`` when
    there is none."""
    key = plan_key(plan)
    try:
        return reader.run(ref, plan_path=key)
    except RunNotFoundError:
        if key is None or ref is not None:
            raise
        try:
            return reader.run(None, plan_path=key + EXEC_SUFFIX)
        except RunNotFoundError:
            pass
        raise


def select_runs(
    reader: JournalReader, plan: str | None, limit: int | None = None
) -> list[RunRecord]:
    """The runs on record, newest first: every run when ``plan`` is None, else the
    runs of that plan file, its ``fleetrun exec`` runs included."""
    key = plan_key(plan)
    if key is None:
        return reader.runs(None, limit)
    runs = reader.runs(key, limit) + reader.runs(key + EXEC_SUFFIX, limit)
    runs.sort(key=lambda r: (r.started_at, r.id), reverse=True)
    return runs[:limit] if limit is not None else runs


def vars_text(values: Mapping[str, str]) -> str:
    """``NAME=VALUE`` words, space-separated, in name order; ``-`` for none."""
    return " ".join(f"{k}={v}" for k, v in sorted(values.items())) or "-"


def describe_run(run: RunRecord) -> str:
    """A run in a few words, to say which one a command continues: what it was,
    of which plan file, how it ended and with which variables (secret ones
    masked): ``an apply of plan.yaml that failed, with action=stop``."""
    article = "an" if run.label[0] in "aeiou" else "a"
    variables = run.variables
    with_vars = f"with {vars_text(variables)}" if variables else "with no variables"
    return f"{article} {run.label} of {Path(run.plan_file).name} that {run.status}, {with_vars}"
