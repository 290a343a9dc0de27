"""Plain HTTP next to Socket.IO on the ingest port: `/healthz`, `/readyz`; routes are a dict."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from ingest import metrics
from ingest.metrics import NodeStatus
from streamstats.db import CONNECTION_ERRORS
from streamstats.sql import queries

logger = logging.getLogger(__name__)

# How long /readyz waits for the database before calling it unreachable.
PING_TIMEOUT = 2.0
# A writer commit this recent already shows the database answering: no ping then. Under load
# a ping waits for a pool connection and for turns of a busy event loop, and its timeout would
# report a database that just committed a batch as unreachable.
RECENT_COMMIT = 1.0


class Response(NamedTuple):
    status: int
    body: bytes
    content_type: str = "application/json"


def json_response(status: int, body: dict[str, Any]) -> Response:
    return Response(status, json.dumps(body).encode())


Handler = Callable[[NodeStatus], Awaitable[Response]]


async def healthz(app: NodeStatus) -> Response:
    """200 while the process serves requests."""
    return json_response(200, {"status": "ok"})


async def readyz(app: NodeStatus) -> Response:
    """200 when the database answers and the writer keeps up; 503 saying why otherwise."""
    problems = await readiness_problems(app)
    if problems:
        return json_response(503, {"status": "unavailable", "problems": problems})
    return json_response(200, {"status": "ready"})


async def readiness_problems(app: NodeStatus) -> list[str]:
    """Why this node should get no new clients (empty: ready); /readyz and /metrics share it."""
    problems: list[str] = []
    if app.pool is None:
        problems.append("database: no connection pool (the server is starting or stopping)")
    elif app.writer is None or not app.writer.committed_within(RECENT_COMMIT):
        try:
            async with asyncio.timeout(PING_TIMEOUT):
                async with app.pool.acquire() as conn:
                    await conn.fetchval(queries["ingest_ping"])
        except CONNECTION_ERRORS as exc:  # TimeoutError included
            problems.append(f"database: unreachable ({type(exc).__name__}: {exc})")
    if app.writer is None:
        problems.append("writer: not started")
    elif (problem := app.writer.problem) is not None:
        problems.append(f"writer: {problem}")
    beacons = app.beacon_writer
    if beacons is not None and (problem := beacons.problem) is not None:
        problems.append(f"beacon writer: {problem}")
    if app.draining:
        problems.append("server: shutting down")
    return problems


async def metrics_page(app: NodeStatus) -> Response:
    """`GET /metrics`: this node's state read now, then every metric in the text format."""
    ready = not await readiness_problems(app)
    return Response(200, await metrics.page(app, ready=ready), metrics.CONTENT_TYPE)


# Path → handler; other modules add their pages here.
ROUTES: dict[str, Handler] = {"/healthz": healthz, "/readyz": readyz, "/metrics": metrics_page}


class HttpApp:
    """The ASGI app for every path Socket.IO does not own."""

    def __init__(self, app: NodeStatus, routes: dict[str, Handler] | None = None):
        self.app = app
        self.routes = dict(ROUTES if routes is None else routes)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        handler = self.routes.get(scope["path"])
        if handler is None:
            response = json_response(404, {"error": "not found"})
        elif scope["method"] not in ("GET", "HEAD"):
            response = json_response(405, {"error": "method not allowed"})
        else:
            try:
                response = await handler(self.app)
            except Exception:
                logger.exception("%s failed", scope["path"], extra={"action": "http_error"})
                response = json_response(500, {"error": "internal error"})
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    (b"content-type", response.content_type.encode()),
                    (b"content-length", str(len(response.body)).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        body = b"" if scope["method"] == "HEAD" else response.body
        await send({"type": "http.response.body", "body": body})
