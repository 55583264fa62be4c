"""How fleetrun turns names into other names: one rule each, shared by every package.

- ``env_name``: environment variable names built from task, target and output
  names: a task's ``FLEETRUN_OUTPUT_<TASK>_<KEY>`` variables and the
  ``TASK_TARGET_KEY`` lines of ``fleetrun outputs --format env`` both use it,
  so the two always agree;
- ``safe_name``: a task or target name as one path component.
"""

from __future__ import annotations

import re

__all__ = ["env_name", "safe_name"]

_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")


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
