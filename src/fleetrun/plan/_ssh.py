"""Reading ``ssh`` settings: a target's ``ssh`` attribute and the plan's ``ssh:`` defaults.

A target's ``ssh`` is ``[user@]host[:port]`` or a mapping of ``SSH_KEYS``; the
plan's ``ssh:`` is a mapping of the same keys (usually without ``host``) that
every target's settings are laid over. Paths (``identity_file``,
``config_file``, ``known_hosts``) are made absolute relative to the plan's
directory (``~`` is left for the executor to expand); ``known_hosts`` may
also be ``accept-new`` or ``accept-new:PATH``. The values are checked by the
plan's models (``_spec.SSHSpec``, ``destination``), so that the executor only
normalises (``fleetrun.executors.SSHSpec``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from fleetrun.plan._fields import Ctx
from fleetrun.plan._model import Scalar
from fleetrun.plan._spec import PlanSpec, SSHSpec, TargetSpec, destination
from fleetrun.plan._validate import validate_key
from fleetrun.plan._yaml import YMap

ACCEPT_NEW = "accept-new"


def read_ssh(
    ctx: Ctx, m: YMap, name: str, key: str, base_dir: Path, *, target: bool
) -> dict[str, Scalar] | None:
    """The ``ssh`` value of the mapping ``m`` (the plan, or a target's attributes),
    checked by its model's field; None after reporting a problem."""
    model = TargetSpec if target else PlanSpec
    spec = validate_key(ctx, model, m, name, key)
    if isinstance(spec, str):
        return dict(destination(spec) or {})
    if not isinstance(spec, SSHSpec):
        return None
    out: dict[str, Scalar] = {}
    for k in (k for k in SSHSpec.model_fields if k in spec.model_fields_set):
        value = getattr(spec, k)
        if k in ("identity_file", "config_file"):
            value = _absolute(value, base_dir)
        elif k == "known_hosts" and value != ACCEPT_NEW:
            if value.startswith(ACCEPT_NEW + ":"):
                value = ACCEPT_NEW + ":" + _absolute(value[len(ACCEPT_NEW) + 1 :], base_dir)
            else:
                value = _absolute(value, base_dir)
        if k != "host":
            out[k] = value
    for dk, dv in (destination(spec.host) or {}).items() if spec.host is not None else ():
        out.setdefault(dk, dv)
    return out


def merge_ssh(
    defaults: Mapping[str, Scalar] | None, own: Mapping[str, Scalar] | None
) -> dict[str, Scalar] | None:
    """A target's settings over the plan's defaults (None when neither is given)."""
    if defaults is None and own is None:
        return None
    return {**(defaults or {}), **(own or {})}


def _absolute(path: str, base_dir: Path) -> str:
    if path.startswith("~") or Path(path).is_absolute():
        return path
    return str(base_dir / path)
