"""Names a package loads on first use (a module ``__getattr__``, PEP 562).

A package lists the names whose modules are costly to import (the live view,
the plan reader, the SSH and cluster executors) and which command does not
need them: ``fleetrun show`` starts without pydantic, a plain ``apply``
without rich. The first lookup imports the module and keeps the value in the
package, so later lookups do not come here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(
    package: str, names: Mapping[str, str | tuple[str, str]], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``, whose globals are ``namespace``:
    each of ``names`` is defined in the submodule it maps to (``"_module"``, or
    ``("_module", "attribute")`` under another name)."""

    def getattr_(name: str) -> Any:
        where = names.get(name)
        if where is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, attribute = (where, name) if isinstance(where, str) else where
        value = getattr(importlib.import_module(f"{package}.{module}"), attribute)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted([*namespace, *names])

    return getattr_, dir_
