"""How a plan's value is echoed in a message: as the plan writes it.

Apart from the YAML reader (``_yaml``), so that the modules a read command
loads (expressions, units) do not load a YAML library to word a message.
"""

from __future__ import annotations

import math


def as_written(value: object) -> str:
    """A plan's value echoed in a message as the plan writes it: text quoted with
    its backslashes as they are (``'Retry-After: \\d+'``, not doubled), ``true``,
    ``false``, ``null``, ``.inf``, ``.nan``, numbers in digits. Text holding both
    quotes, a backslash beside a single quote, or a character that cannot be
    shown is quoted by ``repr`` (its escapes are then the way to show it)."""
    if value is None or isinstance(value, bool):
        return "null" if value is None else "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else ".inf" if value > 0 else "-.inf"
    if isinstance(value, str):
        if value.isprintable() and "'" not in value:
            return f"'{value}'"
        if value.isprintable() and '"' not in value and "\\" not in value:
            return f'"{value}"'
        return repr(value)
    return str(value)
