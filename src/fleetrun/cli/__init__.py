"""The command line: argument parsing, rendering, and exit codes.

This is the only package that prints or exits. Exit codes:
0 all succeeded; 1 some task failed; 2 bad plan or usage; 130 interrupted.
"""

from fleetrun.cli._main import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, cli, main

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "cli", "main"]
