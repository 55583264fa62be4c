"""How an attempt ended, in words: the one place that writes them.

The engine settles a failed instance with these words (``InstanceSettled.
reason``, the record's reason), and every console, summary, report and view
writes an ending with them too, so a failure says its cause once and the same
way everywhere:

- an executor's or fleetrun's own reason when there is one (a connection
  refused, an output refused, a worker lost): the command never reported an
  ending, so the reason *is* the ending;
- ``timed out after 30s``;
- ``killed by signal 9 (SIGKILL)``;
- ``exit 3``;
- ``ended without an exit code`` when nothing at all is known.

Log lines shown under a failure that only repeat its reason (an executor
writes its reason into the log too) are left out (``distinct_tail``).
"""

from __future__ import annotations

import signal as _signal
from collections.abc import Sequence

NO_EXIT_CODE = "ended without an exit code"
"""The words for an ending with no exit code, no signal and no reason."""


def ending_text(
    exit_code: int | None,
    signal: int | None = None,
    timed_out: bool = False,
    reason: str | None = None,
    timeout: float | None = None,
) -> str:
    """How an attempt ended, in a few words (see the module doc); ``timeout``: the
    task's limit in seconds, named when the attempt timed out."""
    if reason:
        return reason
    if timed_out:
        return f"timed out after {timeout:g}s" if timeout is not None else "timed out"
    if exit_code is not None:
        return f"exit {exit_code}"
    if signal is not None:
        return f"killed by signal {signal}" + _signal_name(signal)
    return NO_EXIT_CODE


def _signal_name(number: int) -> str:
    try:
        return f" ({_signal.Signals(number).name})"
    except ValueError:
        return ""


def repeats(line: str, said: str) -> bool:
    """Whether ``line`` only says again what ``said`` says (one holds the other)."""
    a, b = line.strip(), said.strip()
    return bool(a) and bool(b) and (a in b or b in a)


def distinct_tail(tail: Sequence[str], said: str) -> tuple[str, ...]:
    """The lines of ``tail`` that do not repeat ``said``."""
    return tuple(t for t in tail if not repeats(t, said))
