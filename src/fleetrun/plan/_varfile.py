"""``--var NAME=VALUE`` and ``--var-file FILE``: variable values from the command line."""

from __future__ import annotations

import os
from collections.abc import Iterable

import yaml

from fleetrun.errors import UsageError
from fleetrun.plan._readfile import UnreadableFile, read_bounded


def parse_var_args(values: Iterable[str]) -> dict[str, str]:
    """``NAME=VALUE`` strings as a mapping (later ones win); ``UsageError`` on a bad one."""
    out: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--var {item!r}: expected NAME=VALUE")
        out[name.strip()] = value
    return out


def read_var_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """A YAML (or JSON) file mapping variable names to scalar values, as strings.

    Raises ``UsageError`` naming the file when it cannot be read (not a regular
    file, or over ``MAX_FILE_BYTES``) or is not such a mapping.
    """
    file = os.fspath(path)
    try:
        data = yaml.safe_load(read_bounded(file).decode("utf-8"))
    except UnreadableFile as e:
        fix = f"; {e.fix}" if e.fix else ""
        raise UsageError(f"--var-file {file}: cannot read it: {e.reason}{fix}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UsageError(f"--var-file {file}: not valid YAML: {e}".splitlines()[0]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"--var-file {file}: expected a mapping of NAME: VALUE")
    out: dict[str, str] = {}
    for k, v in data.items():
        if isinstance(v, (dict, list)):
            raise UsageError(f"--var-file {file}: {k}: expected a scalar value")
        if isinstance(v, bool):
            out[str(k)] = "true" if v else "false"
        else:
            out[str(k)] = "" if v is None else str(v)
    return out
