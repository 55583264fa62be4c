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

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["__version__"]
