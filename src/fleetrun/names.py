"""Names derived from plan names, with one rule each, shared by every package.

``env_name`` is the rule for environment variable names built from task,
target and output names: a task's ``FLEETRUN_OUTPUT_<TASK>_<KEY>`` variables
and the ``TASK_TARGET_KEY`` lines of ``fleetrun outputs --format env`` both
use it, so the two always agree.
"""

from __future__ import annotations

import re

__all__ = ["env_name"]

_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")


def env_name(*parts: str) -> str:
    """An environment variable name from ``parts``: the non-empty parts joined by
    ``_``, every character other than an ASCII letter or digit turned into ``_``,
    upper-cased (``env_name("deploy", "eu-west", "url") == "DEPLOY_EU_WEST_URL"``)."""
    return _NOT_ALNUM.sub("_", "_".join(p for p in parts if p)).upper()
