"""The ingest service as one ASGI app: Socket.IO events, the batch writer, per-batch hooks, HTTP.

Where things are: the events and their answers in ingest/events.py, who receives a broadcast in
ingest/rooms.py, what follows each committed batch in ingest/hooks.py (monitor broadcasts in
ingest/monitors.py, threshold alerts in ingest/alerts.py, quality advice in ingest/advice.py),
the write path in ingest/writer.py.
This module wires them and owns the lifecycle: start, drain, close.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import socketio

import ingest.advice
import ingest.alerts
import ingest.dashboard
import ingest.guard
from ingest import rooms
from ingest.acks import AckAwareServer
from ingest.auth import Action
from ingest.errors import Unavailable
from ingest.events import Connection, Handler, IngestNamespace
from ingest.hooks import CommitHooks
from ingest.http import HttpApp
from ingest.monitors import MonitorBroadcast
from ingest.presence import MemoryPresence, Presence
from ingest.rows import StatsRow
from ingest.schema import WireJson
from ingest.transport import engineio_options
from ingest.writer import BEACONS, BatchWriter
from streamstats.db import CONNECTION_ERRORS, create_pool
from streamstats.errors import DatabaseUnavailable
from streamstats.settings import Settings
from streamstats.sql import queries

logger = logging.getLogger(__name__)

# Reads for `stream:stats:get` give up after this long and answer `unavailable`.
READ_TIMEOUT = 5.0
# `stream:stats:get` answers the viewer experience of beacons stamped this recently.
VIEWER_EXPERIENCE_WINDOW = timedelta(minutes=5)
# Engine.IO drops a connection whose message exceeds this; anything between the 16 KiB event
# limit and this is answered with `too_large` instead.
MAX_MESSAGE_BYTES = 1_000_000


class IngestApp:
    """The ingest service: a python-socketio AsyncServer plus plain HTTP, as one ASGI app."""

    def __init__(
        self,
        settings: Settings,
        *,
        presence: Presence | None = None,
        client_manager: rooms.StreamRooms | None = None,
    ):
        self.settings = settings
        self.presence: Presence = presence if presence is not None else MemoryPresence()
        self.manager = client_manager if client_manager is not None else rooms.StreamRooms()
        self.sio: socketio.AsyncServer = AckAwareServer(
            async_mode="asgi",
            client_manager=self.manager,
            cors_allowed_origins=settings.cors_allowed,
            json=WireJson(settings.max_event_bytes),
            serializer=ingest.guard.StrictPacket,
            max_http_buffer_size=max(MAX_MESSAGE_BYTES, 4 * settings.max_event_bytes),
            logger=False,
            engineio_logger=False,
            **engineio_options(settings.ping_interval, settings.ping_timeout),
        )
        self.events = IngestNamespace(settings, self, self.presence)
        self.sio.register_namespace(self.events)
        self.http = HttpApp(self)
        self.asgi = socketio.ASGIApp(
            self.sio, other_asgi_app=self.http, on_startup=self.start, on_shutdown=self.close
        )
        self.pool: asyncpg.Pool | None = None
        self.writer: BatchWriter | None = None
        # Viewer beacons have a writer (queue, batches, connection) of their own.
        self.beacon_writer: BatchWriter | None = None
        # What runs after each committed batch, in commit order (ingest/hooks.py).
        self.commit_hooks = CommitHooks()
        self.commit_hooks.add_async(MonitorBroadcast(self.sio, self.manager).on_commit, "monitors")
        # Extensions' lifecycle (ingest/alerts.py's LISTEN task): run after start, before close.
        self.on_start: list[Callable[[], Awaitable[None]]] = []
        self.on_close: list[Callable[[], Awaitable[None]]] = []
        self.draining = False
        self._writer_closed = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the pool and start the writer (ASGI lifespan startup)."""
        try:
            self.pool = await create_pool(
                self.settings.database_url, min_size=1, max_size=self.settings.pool_size
            )
        except DatabaseUnavailable as exc:
            # Serve anyway: updates answer `unavailable` and /readyz says 503 until it is back.
            logger.warning("%s; serving without it", exc, extra={"action": "db_unavailable"})
            self.pool = await create_pool(
                self.settings.database_url, min_size=0, max_size=self.settings.pool_size
            )
        self.writer = BatchWriter(self.settings, self.pool, on_commit=self.commit_hooks)
        await self.writer.start()
        self.beacon_writer = BatchWriter(self.settings, self.pool, target=BEACONS)
        await self.beacon_writer.start()
        for hook in self.on_start:
            await hook()
        logger.info("ingest app started", extra={"action": "started"})

    async def drain(self) -> None:
        """Refuse new updates, flush every accepted one, wait until each is acknowledged.

        Updates arriving from now on are answered `unavailable` at once, so clients that keep
        sending never hold the drain: it waits only for what was accepted before.
        """
        self.draining = True
        await self._close_writers()
        await self.events.answered()
        await self.commit_hooks.drain()

    async def close(self) -> None:
        """Close the writer (if not drained), hooks, presence and pool (ASGI lifespan shutdown)."""
        for hook in self.on_close:
            await hook()
        await self._close_writers()
        await self.commit_hooks.close()
        try:
            await self.presence.close()
        except Exception:
            logger.exception("closing presence failed", extra={"action": "presence_error"})
        if self.pool is not None:
            pool, self.pool = self.pool, None
            try:
                await asyncio.wait_for(pool.close(), READ_TIMEOUT)
            except TimeoutError:
                pool.terminate()

    async def _close_writers(self) -> None:
        """Flush and close both writers, at once (each within its rows' deadlines)."""
        if self._writer_closed:
            return
        self._writer_closed = True
        writers = [w for w in (self.writer, self.beacon_writer) if w is not None]
        await asyncio.gather(*(w.close() for w in writers))

    # -- what the events and helpers use (ingest/events.py's Store, ingest/alerts.py's Host) --

    def submit(self, row: StatsRow) -> asyncio.Future[bool]:
        """Queue a sample for the writer; the future says whether it was stored before."""
        return _submit(self.writer, row)

    def submit_beacon(self, row: Any) -> asyncio.Future[bool]:
        """Queue a viewer beacon for its writer; the future says whether it was stored before."""
        return _submit(self.beacon_writer, row)

    async def latest(self, stream_id: str) -> tuple[asyncpg.Record | None, asyncpg.Record | None]:
        """The stream's latest sample and its viewer experience over the last few minutes."""
        if self.pool is None:
            raise Unavailable("the database is unreachable, retry later")
        since = datetime.now(UTC) - VIEWER_EXPERIENCE_WINDOW
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                async with self.pool.acquire() as conn:
                    record: asyncpg.Record | None = await conn.fetchrow(
                        queries["ingest_latest"], UUID(stream_id)
                    )
                    experience: asyncpg.Record | None = await conn.fetchrow(
                        queries["viewer_experience_window"], UUID(stream_id), since
                    )
                    return record, experience
        except CONNECTION_ERRORS as exc:  # TimeoutError included
            logger.warning("latest read failed: %s", exc, extra={"action": "read_unavailable"})
            raise Unavailable("the database is unreachable, retry later") from exc

    def add_handler(self, event: str, handler: Handler, action: Action | None = None) -> None:
        """Answer `event` with `handler`, behind the checks every event gets (ingest/events.py).

        `action`: the permission needed on the payload's `streamId` (None: no stream check).
        """
        self.events.add_handler(event, handler, action)

    async def send(self, sid: str, event: str, data: dict[str, Any]) -> None:
        """Emit to one client of this node (not through the Redis manager's queue)."""
        await self.sio.emit(event, data, to=sid, ignore_queue=True)

    async def digest_only(self, sid: str, on: bool) -> None:
        """Per-sample broadcasts for this client only of the streams it subscribes to (or all)."""
        await rooms.digest_only(self.sio, sid, on)

    @property
    def connections(self) -> Mapping[str, Connection]:
        """This node's authenticated connections by sid."""
        return self.events.connections

    async def broadcast(
        self,
        event: str,
        payloads: list[dict[str, Any]],
        *,
        streamers: bool,
        local: bool = False,
    ) -> None:
        """Send each payload to its stream's monitors (and streamers): see ingest/rooms.py."""
        await rooms.broadcast(self.sio, event, payloads, streamers=streamers, local=local)

    def connections_by_role(self) -> Mapping[str, int]:
        """Socket.IO connections on this node by role (for /metrics)."""
        counts: dict[str, int] = {}
        for connection in self.events.connections.values():
            role = connection.principal.role
            counts[role] = counts.get(role, 0) + 1
        return counts

    def local_viewers(self) -> int | None:
        """Viewer memberships this node holds, if its presence knows (for /metrics)."""
        viewers = getattr(self.presence, "local_viewers", None)
        return viewers if isinstance(viewers, int) else None


def _submit(writer: BatchWriter | None, row: Any) -> asyncio.Future[bool]:
    if writer is None:
        raise Unavailable("the server is starting: nothing was stored, retry later")
    return writer.submit(row)


def create_app(
    settings: Settings,
    *,
    presence: Presence | None = None,
    client_manager: rooms.StreamRooms | None = None,
) -> IngestApp:
    """The ingest app for these settings: with `REDIS_URL`, presence and broadcasts span nodes."""
    if settings.redis_url:
        from ingest.presence_redis import REDIS_TIMEOUT, RedisPresence

        if presence is None:
            ttl = settings.presence_ttl.total_seconds()
            presence = RedisPresence.from_url(settings.redis_url, ttl=ttl)
        if client_manager is None:
            # Bounded like presence: a partition fails a publish instead of hanging it. The
            # manager's blocking pub/sub read is not subject to socket_timeout.
            client_manager = rooms.RedisStreamRooms(
                settings.redis_url,
                redis_options={
                    "socket_timeout": REDIS_TIMEOUT,
                    "socket_connect_timeout": REDIS_TIMEOUT,
                },
            )
    app = IngestApp(settings, presence=presence, client_manager=client_manager)
    ingest.alerts.install(app)
    ingest.dashboard.install(app)
    ingest.advice.install(app)
    ingest.guard.install(app)
    return app
