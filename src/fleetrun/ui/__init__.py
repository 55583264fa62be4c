"""``fleetrun ui``: a local web application over the record, live.

Runs, a run's grid of tasks by targets, its timeline, waves, pools, outputs and
logs, trends, ``/metrics`` for Prometheus, and actions (retry, cancel, promote)
that need the session token. It reads the journal and the log files as runs
write them, whichever fleetrun process runs them.

Why Starlette and uvicorn: a small, typed ASGI toolkit on the asyncio loop the
rest of fleetrun uses, with server-sent events as a plain streaming response
(live updates need only server-to-page messages, so no WebSocket), static
files from package data, and uvicorn's own graceful shutdown on signals.
aiohttp would do as well, but brings its own HTTP client and event-loop
conventions that fleetrun does not otherwise use; Starlette keeps each route a
plain function of a request, which the tests and the benchmark drive directly.
"""

from fleetrun.ui._app import UiState, create_app
from fleetrun.ui._auth import Access, new_token
from fleetrun.ui._server import UiConfig, serve
from fleetrun.ui._store import check_journal

__all__ = ["Access", "UiConfig", "UiState", "check_journal", "create_app", "new_token", "serve"]
