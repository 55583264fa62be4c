"""The web application: its routes, on Starlette.

Pages are one HTML shell (``static/page.html``) whose script (``app.js``)
draws the page the path names from the JSON API; nothing on a page is
rendered from user data on the server, and the script builds the document
with ``textContent``, so markup in a target name, a task name or a log line
shows as text. Live updates come as server-sent events from ``/api/events``.

| route | what |
|---|---|
| ``GET /``, ``/runs/ID``, ``/runs/ID/attempt``, ``/trends`` | the pages |
| ``GET /api/runs?plan=&status=`` | the runs, newest first |
| ``GET /api/runs/ID`` / ``.../timeline`` | a run's grid, waves, pools, outputs / timeline |
| ``GET /api/runs/ID/attempt?key=&n=`` | an attempt (without ``key``: the first failed) |
| ``GET /api/runs/ID/log?key=&n=&offset=`` / ``.../search?q=`` | its log, in pieces / searched |
| ``GET /api/trends?plan=&task=`` | a task's durations across the plan's runs |
| ``GET /api/events`` | live updates (server-sent events) |
| ``POST /api/runs/ID/retry`` / ``cancel`` / ``promote`` | the actions (need the token) |
| ``GET /metrics`` | Prometheus text format |

Blocking work (SQLite, files, plans, child processes) runs on worker threads,
and so does encoding the JSON (a run of 50,000 instances is megabytes of it):
the event loop only passes bytes on, so live updates never wait behind a page.

A run's page data and timeline are kept, encoded, once the run has ended,
keyed by what would change them (``Store.fingerprint``); a run still going is
read afresh on every request, since it changes without an event (its clock,
its running bars).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from fleetrun.errors import RunNotFoundError, StateError
from fleetrun.state import RunRecord
from fleetrun.ui._actions import ActionRefused, Actions
from fleetrun.ui._auth import Access, Guard
from fleetrun.ui._live import Changes, Hub, poll_forever
from fleetrun.ui._logs import PIECE, attempt_data, find_attempt, read_piece, search_log
from fleetrun.ui._metrics import JournalCollector
from fleetrun.ui._plans import Plans
from fleetrun.ui._run import run_data, timeline_data
from fleetrun.ui._runs import runs_data, trends_data
from fleetrun.ui._store import Stores

T = TypeVar("T")


@dataclass
class UiState:
    """What the routes share: the journals, the plans, the live hub, the actions."""

    stores: Stores
    access: Access
    plans: Plans = field(default_factory=Plans)
    hub: Hub = field(default_factory=Hub)
    actions: Actions = field(default_factory=Actions)
    stop: asyncio.Event = field(default_factory=asyncio.Event)


def _page_html() -> bytes:
    return resources.files("fleetrun.ui").joinpath("static/page.html").read_bytes()


def _error(e: Exception) -> JSONResponse:
    status = 404 if isinstance(e, RunNotFoundError) else 409
    return JSONResponse({"error": str(e)}, status_code=status)


def _int(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        return None


def create_app(state: UiState) -> Guard:
    """The ASGI application for ``state``, behind its ``Guard``."""
    page = _page_html()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JournalCollector(state.stores, state.plans, lambda: state.hub.clients))

    async def blocking(fn: Callable[[], T]) -> T:
        return await run_in_threadpool(fn)

    async def json_of(fn: Callable[[], Any]) -> Response:
        try:
            return await blocking(lambda: JSONResponse(fn()))
        except (StateError, ActionRefused) as e:
            return _error(e)

    async def encoded(fn: Callable[[], bytes]) -> Response:
        try:
            return Response(await blocking(fn), media_type="application/json")
        except StateError as e:
            return _error(e)

    async def show_page(_: Request) -> Response:
        return Response(page, media_type="text/html; charset=utf-8")

    async def icon(_: Request) -> Response:
        data = resources.files("fleetrun.ui").joinpath("static/icon.svg").read_bytes()
        return Response(data, media_type="image/svg+xml")

    async def api_runs(request: Request) -> Response:
        q = request.query_params
        return await json_of(
            lambda: runs_data(state.stores, state.plans, q.get("plan") or None,
                              q.get("status") or None)
        )  # fmt: skip

    def _run_json(run_id: str, what: str, build: Callable[..., dict[str, Any]]) -> bytes:
        store, run = state.stores.locate(run_id)

        def body(run: RunRecord) -> bytes:
            return bytes(JSONResponse(build(store, run, state.plans)).body)

        if run.ended_at is None:
            return body(run)  # still going: never kept
        # The key is read before the record the data is made from, so what is
        # kept is never older than its key.
        key = (what, run.id, store.fingerprint(run.id))
        return store.cached(key, lambda: body(store.reader().run(run.id)), size=32)

    async def api_run(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        return await encoded(lambda: _run_json(run_id, "run", run_data))

    async def api_timeline(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        return await encoded(lambda: _run_json(run_id, "timeline", timeline_data))

    def _attempt(request: Request) -> Any:
        q = request.query_params
        store, run = state.stores.locate(request.path_params["run_id"])
        return store, run, find_attempt(store, run, q.get("key"), _int(q.get("n")))

    async def api_attempt(request: Request) -> Response:
        def build() -> dict[str, Any]:
            store, run, a = _attempt(request)
            return attempt_data(store, run, a, state.plans)

        return await json_of(build)

    async def api_log(request: Request) -> Response:
        def build() -> dict[str, Any]:
            store, run, a = _attempt(request)
            q = request.query_params
            redactor = state.plans.of(run).redactor
            return read_piece(store, a, redactor, _int(q.get("offset")),
                              _int(q.get("limit")) or PIECE, _int(q.get("before")))  # fmt: skip

        return await json_of(build)

    async def api_search(request: Request) -> Response:
        def build() -> dict[str, Any]:
            store, run, a = _attempt(request)
            redactor = state.plans.of(run).redactor
            return search_log(store, a, redactor, request.query_params.get("q", "")[:200])

        return await json_of(build)

    async def api_trends(request: Request) -> Response:
        q = request.query_params
        return await json_of(
            lambda: trends_data(state.stores, q.get("plan", ""), q.get("task") or None)
        )

    async def api_events(_: Request) -> Response:
        return StreamingResponse(
            state.hub.stream(),
            media_type="text/event-stream",
            headers={"x-accel-buffering": "no"},
        )

    def _act(name: str) -> Callable[[Request], Any]:
        async def act(request: Request) -> Response:
            def build() -> dict[str, Any]:
                store, run = state.stores.locate(request.path_params["run_id"])
                if name == "retry":
                    text, new_run = state.actions.retry(store, run.id)
                    return {"message": text, "run": new_run}
                if name == "cancel":
                    return {"message": state.actions.cancel(store, run.id)}
                return {"message": state.actions.promote(store, run.id)}

            return await json_of(build)

        return act

    async def metrics(_: Request) -> Response:
        data = await blocking(lambda: generate_latest(registry))
        return Response(data, media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        changes = Changes(state.stores)
        poller = asyncio.create_task(poll_forever(changes, state.hub, state.stop))
        try:
            yield
        finally:
            state.stop.set()
            state.hub.closing.set()
            await poller
            await blocking(state.actions.close)

    static = StaticFiles(packages=[("fleetrun.ui", "static")])
    routes = [
        Route("/", show_page),
        Route("/runs/{run_id}", show_page),
        Route("/runs/{run_id}/attempt", show_page),
        Route("/trends", show_page),
        Route("/favicon.ico", icon),
        Route("/api/runs", api_runs),
        Route("/api/runs/{run_id}", api_run),
        Route("/api/runs/{run_id}/timeline", api_timeline),
        Route("/api/runs/{run_id}/attempt", api_attempt),
        Route("/api/runs/{run_id}/log", api_log),
        Route("/api/runs/{run_id}/search", api_search),
        Route("/api/trends", api_trends),
        Route("/api/events", api_events),
        Route("/api/runs/{run_id}/retry", _act("retry"), methods=["POST"]),
        Route("/api/runs/{run_id}/cancel", _act("cancel"), methods=["POST"]),
        Route("/api/runs/{run_id}/promote", _act("promote"), methods=["POST"]),
        Route("/metrics", metrics),
        Mount("/static", app=static, name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    return Guard(app, state.access)
