"""How fleetrun turns names into other names: one rule each, used everywhere.

- ``env_name``: a task or output name as part of an environment variable
  (``FLEETRUN_OUTPUT_<TASK>_<KEY>``; ``fleetrun outputs --format env`` too);
- ``safe_name``: a task or target name as one path component.
"""

from __future__ import annotations

import re

_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")


def env_name(name: str) -> str:
    """``name`` upper-cased with every non-alphanumeric character turned into ``_``."""
    return _NOT_ALNUM.sub("_", name).upper()


def safe_name(name: str) -> str:
    """``name`` usable as one path component (no separators, never ``.``/``..``)."""
    out = name.replace("/", "_").replace("\0", "_")
    if out in ("", ".", ".."):
        out = "_" + out
    return out


__all__ = ["env_name", "safe_name"]
