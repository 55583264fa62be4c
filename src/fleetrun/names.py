"""How fleetrun turns names into other names: one rule each, shared by every package.

- ``env_name``: environment variable names built from task, target and output
  names: a task's ``FLEETRUN_OUTPUT_<TASK>_<KEY>`` variables and the
  ``TASK_TARGET_KEY`` lines of ``fleetrun outputs --format env`` both use it,
  so the two always agree;
- ``safe_name``: a task or target name as one path component;
- the ``FLEETRUN_*`` environment variable names that more than one package
  reads or writes (the plan sets them, the executors and the orphan finders
  read them back, the CLI honours ``FLEETRUN_CLUSTER``), and
  ``is_per_attempt``: which of them are set for each attempt.
"""

from __future__ import annotations

import re

__all__ = [
    "ATTEMPT_ENV",
    "ATTEMPT_ID",
    "CLUSTER_ENV",
    "OUTPUT_ENV",
    "RUN_ID_ENV",
    "TARGET_ENV",
    "TASK_ENV",
    "env_name",
    "is_per_attempt",
    "safe_name",
]

RUN_ID_ENV = "FLEETRUN_RUN_ID"
"""The run's id, in every attempt's environment (orphan finders match on it)."""

TASK_ENV = "FLEETRUN_TASK"
"""The task's name, in every attempt's environment."""

TARGET_ENV = "FLEETRUN_TARGET"
"""The target's name (empty for an unfanned task), set per attempt."""

ATTEMPT_ENV = "FLEETRUN_ATTEMPT"
"""The attempt's number (1 for the first), set per attempt."""

ATTEMPT_ID = "FLEETRUN_ATTEMPT_ID"
"""Every process of an attempt carries ``<run id>.<node id>.<attempt>`` under this name,
so what it leaves behind can be found and ended; set per attempt."""

OUTPUT_ENV = "FLEETRUN_OUTPUT"
"""The file an attempt writes its ``key=value`` outputs to, set per attempt; the
outputs of its requirements arrive as ``FLEETRUN_OUTPUT_<TASK>_<KEY>``."""

CLUSTER_ENV = "FLEETRUN_CLUSTER"
"""The scheduler address for ``runs_on: cluster`` tasks (and ``fleetrun cluster``)."""

_PER_ATTEMPT = frozenset({TARGET_ENV, ATTEMPT_ENV, ATTEMPT_ID})

_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")


def is_per_attempt(name: str) -> bool:
    """True for the environment names fleetrun sets for each attempt (an outer
    run's values of them never leak into a task)."""
    return name in _PER_ATTEMPT or name.startswith(OUTPUT_ENV)


def env_name(*parts: str) -> str:
    """An environment variable name from ``parts``: the non-empty parts joined by
    ``_``, every character other than an ASCII letter or digit turned into ``_``,
    upper-cased (``env_name("deploy", "eu-west", "url") == "DEPLOY_EU_WEST_URL"``)."""
    return _NOT_ALNUM.sub("_", "_".join(p for p in parts if p)).upper()


def safe_name(name: str) -> str:
    """``name`` usable as one path component (no separators, never ``.``/``..``)."""
    out = name.replace("/", "_").replace("\0", "_")
    if out in ("", ".", ".."):
        out = "_" + out
    return out
