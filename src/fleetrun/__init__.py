"""fleetrun: run multi-phase operations across a fleet of targets.

The library is organised by concern (see the README):

- ``fleetrun.plan``: plan file -> validated model -> expanded task graph (pure)
- ``fleetrun.engine``: scheduler, limits, retries, typed events
- ``fleetrun.executors``: run one attempt of one task instance
- ``fleetrun.state``: the SQLite journal
- ``fleetrun.report``: console output and reports
- ``fleetrun.cli``: the command line (the only place that prints or exits)

Diagnostics go to the ``fleetrun`` logger, silent unless a handler is added
(``fleetrun -v`` adds one; see ``fleetrun.diagnostics``).
"""

import os as _os
import signal as _signal
import sys as _sys


def _interrupted_while_starting(signum: int, frame: object) -> None:
    # Ctrl-C while the modules load: exit 130 at once, quietly. Nothing is
    # written yet, so there is nothing to clean up; raising SystemExit here
    # could land in a callback whose exceptions Python reports and ignores (an
    # import lock's weakref callback), and the program would go on.
    _os._exit(130)


def _is_the_program() -> bool:
    """Whether fleetrun is the program (the console script, or ``python -m fleetrun``,
    whose package is imported while ``sys.argv[0]`` is still ``-m``), not a library."""
    argv = list(getattr(_sys, "orig_argv", ()))
    if "-m" in argv[:-1] and argv[argv.index("-m") + 1] == "fleetrun":
        return True
    return "fleetrun" in _sys.argv[0]


# Installed before any import that takes time, only when fleetrun is the program;
# ``cli.main`` hands SIGINT back to Python once the modules are loaded.
if _is_the_program() and _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
    _signal.signal(_signal.SIGINT, _interrupted_while_starting)

import logging  # noqa: E402

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["__version__"]
