"""``message``: the decorator of the records the engine builds per attempt.

Events, resolved attempts, handles and results are immutable messages: the
type checker treats a ``@message`` class as a frozen, keyword-only dataclass
(``dataclass_transform(frozen_default=True)``), so assigning a field is a type
error. At run time it is a plain slotted dataclass: a frozen dataclass sets
every field through ``object.__setattr__``, which made building the three
events of each attempt about a quarter of the engine's cost per task
(``bench/bench_overhead.py``). Nothing in fleetrun assigns to a message, and
the type check enforces it; messages are not hashable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar, dataclass_transform

__all__ = ["message", "positional_message"]

_T = TypeVar("_T")


@dataclass_transform(frozen_default=True, kw_only_default=True)
def message(cls: type[_T]) -> type[_T]:
    """A keyword-only message class (see the module doc)."""
    return dataclass(slots=True, kw_only=True)(cls)


@dataclass_transform(frozen_default=True)
def positional_message(cls: type[_T]) -> type[_T]:
    """A message class whose fields may also be given by position (see the module doc)."""
    return dataclass(slots=True)(cls)
