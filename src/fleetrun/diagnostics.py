"""fleetrun's own diagnostics: the ``fleetrun`` logger, silent unless asked.

Every module logs to ``logging.getLogger(__name__)``, under the ``fleetrun``
logger, which has a ``NullHandler`` (set in the package's ``__init__``): a
program that imports fleetrun sees its records only if it configures logging,
and a warning never reaches stderr through logging's last-resort handler.

The command line turns it on (``enable``) with ``-v`` (info), ``-vv``
(debug) or ``FLEETRUN_LOG=debug|info|warning``: one line per record on
stderr, ``time logger level message``. At debug, asyncssh's own records at
info and above are shown too (the connection's side of the story).

What is logged may hold a command line or an environment: every line is
passed through a redactor of the secret values known so far
(``note_secrets``, called wherever a plan's secrets become known), and
messages that carry a command are redacted where they are made as well.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterable, Mapping
from typing import TextIO

from fleetrun.errors import UsageError
from fleetrun.redact import Redactor

LOGGER_NAME = "fleetrun"
ENV_VAR = "FLEETRUN_LOG"
LEVELS: Mapping[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
"""The values ``FLEETRUN_LOG`` takes, and the level each shows from."""
LIBRARIES = ("asyncssh",)
"""Libraries whose records are shown at ``-vv`` (info and above)."""
FORMAT = "%(asctime)s.%(msecs)03d %(name)s %(levelname)s %(message)s"
DATE_FORMAT = "%H:%M:%S"

_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()
_redactor = Redactor()


def note_secrets(values: Iterable[str]) -> None:
    """Add secret values that no diagnostic line may show (a plan was loaded)."""
    global _secrets, _redactor
    new = frozenset(values)
    if new <= _secrets:
        return
    with _lock:
        _secrets = _secrets | new
        _redactor = Redactor(_secrets)


def redact(text: str) -> str:
    """``text`` with every secret noted so far replaced by ``***``."""
    return _redactor.redact(text)


class RedactingFormatter(logging.Formatter):
    """The compact line (time, logger, level, message), traceback included, redacted."""

    def __init__(self) -> None:
        super().__init__(FORMAT, DATE_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record comes.

    A live display (rich's ``Live``) replaces ``sys.stderr`` while it runs so
    that what is written there is printed above the live area, never through
    it; a stream looked up once, before the display started, would tear it.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        """The stream is always the current ``sys.stderr``."""


def level_from(verbose: int, environ: Mapping[str, str]) -> int | None:
    """The level asked for by ``-v`` counted ``verbose`` times and by
    ``FLEETRUN_LOG`` (the more detailed of the two), or None: stay silent.

    An unknown ``FLEETRUN_LOG`` value is a ``UsageError`` naming the values it takes.
    """
    levels: list[int] = []
    if verbose > 0:
        levels.append(logging.INFO if verbose == 1 else logging.DEBUG)
    raw = environ.get(ENV_VAR, "").strip().lower()
    if raw:
        if raw not in LEVELS:
            raise UsageError(
                f"{ENV_VAR}={environ[ENV_VAR]!r}: expected one of {', '.join(LEVELS)} (or unset it)"
            )
        levels.append(LEVELS[raw])
    return min(levels) if levels else None


_handler: StderrHandler | None = None


def enable(level: int | None) -> None:
    """Show fleetrun's records from ``level`` on stderr (None: silent, also for
    libraries whose warnings would otherwise reach stderr through logging's
    last-resort handler and tear a live display). Called once per process, by
    the command line; calling it again replaces the earlier setting."""
    global _handler
    root = logging.getLogger()
    libraries = [logging.getLogger(name) for name in LIBRARIES]
    logger = logging.getLogger(LOGGER_NAME)
    if _handler is not None:
        logger.removeHandler(_handler)
        for lib in libraries:
            lib.removeHandler(_handler)
        _handler = None
    if level is None:
        if not root.handlers:
            root.addHandler(logging.NullHandler())
        return
    handler = _handler = StderrHandler()
    handler.setFormatter(RedactingFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    # Shown once, here: a root handler set by an embedding program must not repeat it.
    logger.propagate = False
    lib_level = logging.INFO if level <= logging.DEBUG else logging.WARNING
    for lib in libraries:
        lib.addHandler(handler)
        lib.setLevel(lib_level)
        lib.propagate = False


__all__ = [
    "ENV_VAR",
    "LEVELS",
    "LOGGER_NAME",
    "RedactingFormatter",
    "StderrHandler",
    "enable",
    "level_from",
    "note_secrets",
    "redact",
]
