"""The Socket.IO ingest app: docs/protocol.md's events, rooms, acknowledgements and broadcasts.

Rooms (other modules emit to them):
- `streamer:<streamId>`: the connections of streamers whose token names the stream;
- `monitor:<streamId>`: monitors (moderator/analyst/admin) whose token is limited to the stream
  and who are subscribed to it;
- `monitors:all`: monitors without a `streams` claim. One who unsubscribes from a stream stays
  there and is skipped when that stream is broadcast (a per-connection exclusion);
- `viewer:<streamId>`: viewers who joined the stream (they never receive monitor traffic).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Generator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
import socketio
from socketio.async_pubsub_manager import AsyncPubSubManager

import ingest.alerts
import ingest.dashboard
import ingest.guard
from ingest import metrics
from ingest.auth import Action, Principal, decode_token, parse_stream_id
from ingest.beacon import experience_payload, parse_beacon
from ingest.errors import ClientError, Forbidden, RateLimited, Unauthorized, Unavailable
from ingest.http import HttpApp
from ingest.presence import MemoryPresence, Presence
from ingest.ratelimit import LogLimiter, TokenBucket
from ingest.rows import StatsRow
from ingest.schema import (
    ValidUpdate,
    WireJson,
    check_size,
    isoformat,
    parse_update,
    stats_payload,
    stream_ref,
)
from ingest.writer import BEACONS, BatchWriter
from streamstats.db import CONNECTION_ERRORS, create_pool
from streamstats.errors import DatabaseUnavailable
from streamstats.settings import Settings
from streamstats.sql import queries

logger = logging.getLogger(__name__)

ALL_MONITORS = "monitors:all"
# Reads for `stream:stats:get` give up after this long and answer `unavailable`.
READ_TIMEOUT = 5.0
# Viewer presence calls (Redis with REDIS_URL) give up after this long: during a partition a
# join or get answers `unavailable` instead of hanging with its handler.
PRESENCE_TIMEOUT = 3.0
# `stream:stats:get` answers the viewer experience of beacons stamped this recently.
VIEWER_EXPERIENCE_WINDOW = timedelta(minutes=5)
# Engine.IO drops a connection whose message exceeds this; anything between the 16 KiB event
# limit and this is answered with `too_large` instead.
MAX_MESSAGE_BYTES = 1_000_000
# Refused connects are logged at most once per 10 s (all counted in /metrics).
_refused_log = LogLimiter(10.0)

AfterCommit = Callable[[StatsRow, bool], Awaitable[None]]
# What a handler returns: the acknowledgement, or None when it answered with an event.
Answer = dict[str, Any] | None
# A handler: (sid, connection, payload, the payload's streamId parsed or None) -> answer.
Handler = Callable[[str, "Connection", Any, UUID | None], Awaitable[Answer]]
T = TypeVar("T")


def streamer_room(stream_id: str) -> str:
    return f"streamer:{stream_id}"


def monitor_room(stream_id: str) -> str:
    return f"monitor:{stream_id}"


def viewer_room(stream_id: str) -> str:
    return f"viewer:{stream_id}"


# Whether the event being handled came with an acknowledgement callback (set per handler task).
_ack_requested: contextvars.ContextVar[bool] = contextvars.ContextVar("ack", default=False)
# Work a handler leaves for after its answer is sent, in the same task (set per handler task).
_after_answer: contextvars.ContextVar[Callable[[], Awaitable[None]] | None] = (
    contextvars.ContextVar("after_answer", default=None)
)


class _Server(socketio.AsyncServer):
    """AsyncServer that tells handlers whether the client wants an acknowledgement.

    python-socketio sends a handler's return value as the acknowledgement but does not say
    whether one was asked for; docs/protocol.md answers with an event when it was not. It also
    counts handlers in flight, so a drain can wait until every answer is sent, and runs what a
    handler left in `_after_answer` once the answer is out (a broadcast), without a task of
    its own.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.in_flight = 0
        self.idle = asyncio.Event()
        self.idle.set()
        # Connections to drop once the answer to their current event has been sent.
        self.expired: set[str] = set()

    async def _handle_event_internal(
        self, server: Any, sid: str, eio_sid: str, data: Any, namespace: str, id: Any
    ) -> None:
        _ack_requested.set(id is not None)
        _after_answer.set(None)
        self.in_flight += 1
        self.idle.clear()
        try:
            await super()._handle_event_internal(server, sid, eio_sid, data, namespace, id)
            after = _after_answer.get()
            if after is not None:
                try:
                    await after()
                except Exception:
                    logger.exception("after-answer work failed", extra={"action": "hook_error"})
            if sid in self.expired:
                # After the acknowledgement above, so the client hears why it is dropped.
                self.expired.discard(sid)
                await self.disconnect(sid, namespace=namespace)
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self.idle.set()


@dataclass
class Connection:
    """What the server keeps per Socket.IO connection on this node."""

    principal: Principal
    bucket: TokenBucket
    # Streams an all-access monitor unsubscribed from.
    excluded: set[str] = field(default_factory=set)


class IngestApp:
    """The ingest service: a python-socketio AsyncServer plus plain HTTP, as one ASGI app."""

    def __init__(
        self,
        settings: Settings,
        *,
        presence: Presence | None = None,
        client_manager: socketio.AsyncManager | None = None,
    ):
        self.settings = settings
        self._secret = settings.require_jwt_secret()
        self.sio: socketio.AsyncServer = _Server(
            async_mode="asgi",
            client_manager=client_manager,
            cors_allowed_origins=settings.cors_allowed,
            json=WireJson(settings.max_event_bytes),
            serializer=ingest.guard.StrictPacket,
            max_http_buffer_size=max(MAX_MESSAGE_BYTES, 4 * settings.max_event_bytes),
            logger=False,
            engineio_logger=False,
        )
        self.http = HttpApp(self)
        self.asgi = socketio.ASGIApp(
            self.sio, other_asgi_app=self.http, on_startup=self.start, on_shutdown=self.close
        )
        self.presence: Presence = presence if presence is not None else MemoryPresence()
        self.pool: asyncpg.Pool | None = None
        self.writer: BatchWriter | None = None
        # Viewer beacons have a writer (queue, batches, connection) of their own.
        self.beacon_writer: BatchWriter | None = None
        self.after_commit: list[AfterCommit] = []
        # Extensions' lifecycle (ingest/alerts.py's LISTEN task): run after start, before close.
        self.on_start: list[Callable[[], Awaitable[None]]] = []
        self.on_close: list[Callable[[], Awaitable[None]]] = []
        self.connections: dict[str, Connection] = {}
        self.draining = False
        self._writer_closed = False
        # Unsubscribed all-access monitors per stream: skipped when it is broadcast.
        self._excluded: dict[str, set[str]] = {}
        self._skip_unsubscribed(self.sio.manager)
        self._tasks: set[asyncio.Task[None]] = set()
        self._register()

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
        self.writer = BatchWriter(self.settings, self.pool)
        await self.writer.start()
        self.beacon_writer = BatchWriter(self.settings, self.pool, target=BEACONS)
        await self.beacon_writer.start()
        for hook in self.on_start:
            await hook()
        logger.info("ingest app started", extra={"action": "started"})

    async def drain(self) -> None:
        """Refuse new updates, flush every accepted one, wait until each is acknowledged."""
        self.draining = True
        await self._close_writers()
        server = self.sio
        assert isinstance(server, _Server)
        while server.in_flight or self._tasks:
            await server.idle.wait()
            if self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Close the writer (if not drained), presence and pool (ASGI lifespan shutdown)."""
        for hook in self.on_close:
            await hook()
        await self._close_writers()
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

    # -- emitting --------------------------------------------------------------------------

    async def emit_to_stream(
        self,
        event: str,
        data: dict[str, Any],
        stream_id: str,
        *,
        streamers: bool,
        local: bool = False,
    ) -> None:
        """Emit to the monitors allowed to see the stream (and its streamers), each client once.

        `local`: only to this node's clients, even with the Redis manager (which would otherwise
        publish to every node): for events every node receives on its own, like job alerts.
        """
        rooms = [monitor_room(stream_id), ALL_MONITORS]
        if streamers:
            rooms.append(streamer_room(stream_id))
        # A list of rooms reaches a client in several of them once (python-socketio merges
        # them); monitors that unsubscribed are dropped where rooms become clients, see
        # _skip_unsubscribed.
        await self.sio.emit(event, data, to=rooms, ignore_queue=local)

    def _skip_unsubscribed(self, manager: Any) -> None:
        """Leave this node's unsubscribed all-access monitors out of their streams' broadcasts.

        Decided where the manager turns rooms into clients, on every node: with the Redis
        manager each node resolves a broadcast for its own clients, so a skip list made by the
        emitting node would only know that node's connections.
        """
        resolve = manager.get_participants

        def get_participants(namespace: str, room: Any) -> Iterator[tuple[str, Any]]:
            excluded: Collection[str] = ()
            if isinstance(room, list) and ALL_MONITORS in room and room[0].startswith("monitor:"):
                excluded = self._excluded.get(room[0].removeprefix("monitor:"), ())
            for sid, eio_sid in resolve(namespace, room):
                if sid not in excluded:
                    yield sid, eio_sid

        manager.get_participants = get_participants

    def _expire(self, sid: str) -> None:
        """Disconnect the client after answering its current event (see _Server)."""
        server = self.sio
        assert isinstance(server, _Server)
        server.expired.add(sid)
        logger.info("token expired", extra={"action": "token_expired", "sid": sid})

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, sid: str, event: str, body: dict[str, Any]) -> Answer:
        """Success: through the acknowledgement callback if the client gave one, else `event`."""
        if _ack_requested.get():
            return {"ok": True, **body}
        # The client is on this node: no need to go through the Redis manager's queue.
        await self.sio.emit(event, body, to=sid, ignore_queue=True)
        return None

    async def _refuse(
        self, sid: str, event: str, error: ClientError, stream_id: str | None
    ) -> Answer:
        """Failure: `{ok: false, error}` to the callback, else an `error` event."""
        body = error.payload()
        if _ack_requested.get():
            return {"ok": False, "error": body}
        message: dict[str, Any] = {**body, "event": event}
        if stream_id is not None:
            message["streamId"] = stream_id
        await self.sio.emit("error", message, to=sid, ignore_queue=True)
        return None

    # -- handlers --------------------------------------------------------------------------

    def _register(self) -> None:
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        for event, handler in (
            ("stream:stats:update", self._on_update),
            ("stream:stats:get", self._on_get),
            ("stream:stats:subscribe", self._on_subscribe),
            ("stream:stats:unsubscribe", self._on_unsubscribe),
            ("stream:viewer:stats", self._on_beacon),
            ("stream:join", self._on_join),
            ("stream:leave", self._on_leave),
        ):
            self.sio.on(event, self._guarded(event, handler))

    def add_handler(self, event: str, handler: Handler, action: Action | None = None) -> None:
        """Answer `event` with `handler`, behind the checks every event gets.

        `action`: the permission needed on the payload's `streamId` (None: no stream check).
        """
        if action is not None:
            _EVENT_ACTION[event] = action
        self.sio.on(event, self._guarded(event, handler))

    def _guarded(self, event: str, handler: Handler) -> Callable[..., Awaitable[Answer]]:
        """Wrap a handler with the checks every event gets and the answer/error plumbing."""

        async def run(sid: str, *args: Any) -> Answer:
            data = args[0] if len(args) == 1 else None
            # Parsed once per event: the update handler stores this UUID as it is.
            stream = parse_stream_id(data.get("streamId")) if isinstance(data, dict) else None
            hint = None if stream is None else str(stream)
            try:
                check_size(data)
                connection = self.connections.get(sid)
                if connection is None:
                    raise Unauthorized("the connection is not authenticated")
                if connection.principal.expired():
                    # A token is checked at connect; an open socket must not outlive it.
                    self._expire(sid)
                    raise Unauthorized("the token has expired: reconnect with a fresh one")
                if not connection.bucket.allow():
                    raise RateLimited(
                        f"more than {self.settings.rate_limit:g} events/s on this connection"
                    )
                if hint is not None and not _stream_allowed(connection.principal, event, hint):
                    # Decided before validation: nothing about a foreign stream is revealed.
                    raise Forbidden(
                        f"a {connection.principal.role} token may not use {event} on stream {hint}"
                    )
                return await handler(sid, connection, data, stream)
            except ClientError as error:
                if event == "stream:stats:update":
                    metrics.event("rejected", error.code)
                return await self._refuse(sid, event, error, hint)
            except Exception:
                logger.exception("%s failed", event, extra={"action": "handler_error"})
                return await self._refuse(
                    sid, event, Unavailable("the server failed to handle the event"), hint
                )

        return run

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        try:
            principal = decode_token(
                token, self._secret, clock_skew=self.settings.token_clock_skew.total_seconds()
            )
        except Unauthorized as exc:
            metrics.connect_refused()
            held = _refused_log.allow()
            if held is not None:  # a client may retry at will: the log gets a sample
                logger.info(
                    "connection refused: %s (%d more since the last such line)",
                    exc,
                    held,
                    extra={"action": "connect_refused", "sid": sid},
                )
            raise socketio.exceptions.ConnectionRefusedError(str(exc), exc.payload()) from None
        self.connections[sid] = Connection(principal, TokenBucket(self.settings.rate_limit))
        rooms: list[str] = []
        if principal.role == "streamer":
            rooms = [streamer_room(s) for s in principal.streams or ()]
        elif principal.is_monitor:
            rooms = (
                [ALL_MONITORS]
                if principal.streams is None
                else [monitor_room(s) for s in principal.streams]
            )
        for room in rooms:
            await self.sio.enter_room(sid, room)
        logger.debug(
            "%s %s connected",
            principal.role,
            principal.sub,
            extra={"action": "connect", "sid": sid, "role": principal.role},
        )

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        connection = self.connections.pop(sid, None)
        if connection is not None:
            for stream_id in connection.excluded:
                self._unexclude(stream_id, sid)
        # Logged by _presence; during a partition the sid may stay in Redis' set until it expires.
        with contextlib.suppress(Unavailable):
            await self._presence(self.presence.leave_all(sid))

    async def _on_update(
        self, sid: str, connection: Connection, data: Any, stream: UUID | None
    ) -> Answer:
        received = time.perf_counter()
        principal = connection.principal
        if not principal.can("update"):
            raise Forbidden(f"a {principal.role} may not send stream:stats:update")
        if self.draining or self.writer is None:
            raise Unavailable("the server is shutting down: nothing was stored, retry later")
        update = parse_update(
            data, now=datetime.now(UTC), retention=self.settings.raw_retention, stream=stream
        )
        duplicate = await self.writer.submit(update.row)
        # Before any await: handlers resume in commit order, so the alert hooks see the samples
        # of a stream in that order.
        self._run_after_commit(update.row, duplicate)
        if not duplicate and self._may_be_monitored(update.stream_id):
            # Sent once the acknowledgement is out, in this handler's task (see _Server).
            _after_answer.set(lambda: self._broadcast(update))
        result = {
            "streamId": update.stream_id,
            "timestamp": update.timestamp,
            "quality": update.row.quality,
            "duplicate": duplicate,
        }
        answer = await self._answer(sid, "stream:stats:received", result)
        metrics.event("duplicate" if duplicate else "stored")
        metrics.acknowledged(time.perf_counter() - received)
        return answer

    async def _on_beacon(
        self, sid: str, connection: Connection, data: Any, stream: UUID | None
    ) -> Answer:
        principal = connection.principal
        if not principal.can("beacon"):
            raise Forbidden(f"a {principal.role} may not send stream:viewer:stats")
        if self.draining or self.beacon_writer is None:
            raise Unavailable("the server is shutting down: nothing was stored, retry later")
        beacon = parse_beacon(
            data, now=datetime.now(UTC), retention=self.settings.raw_retention, stream=stream
        )
        duplicate = await self.beacon_writer.submit(beacon.row)
        result = {
            "streamId": beacon.stream_id,
            "viewId": beacon.view_id,
            "timestamp": beacon.timestamp,
            "duplicate": duplicate,
        }
        return await self._answer(sid, "stream:viewer:received", result)

    def _may_be_monitored(self, stream_id: str) -> bool:
        """Whether a monitor could receive the stream's broadcast (with Redis: always)."""
        manager = self.sio.manager
        if isinstance(manager, AsyncPubSubManager):
            return True  # monitors on other nodes are not known here
        rooms = manager.rooms.get("/", {})
        return bool(rooms.get(monitor_room(stream_id)) or rooms.get(ALL_MONITORS))

    async def _broadcast(self, update: ValidUpdate) -> None:
        broadcast = {
            "streamId": update.stream_id,
            "stats": update.stats,
            "timestamp": update.timestamp,
            "quality": update.row.quality,
        }
        await self.emit_to_stream(
            "stream:stats:update", broadcast, update.stream_id, streamers=False
        )

    def _run_after_commit(self, row: StatsRow, duplicate: bool) -> None:
        """Run the after-commit hooks up to their first suspension; only the rest gets a task.

        A hook that does not suspend (the usual case: the alert tracker sees no transition)
        costs no task at all.
        """
        for hook in self.after_commit:
            coro = hook(row, duplicate)
            if not isinstance(coro, Coroutine):
                self._spawn(coro)
                continue
            try:
                pending = coro.send(None)
            except StopIteration:
                continue
            except Exception:
                logger.exception("after-commit hook failed", extra={"action": "hook_error"})
                continue
            self._spawn(self._finish_hook(coro, pending))

    async def _finish_hook(self, coro: Coroutine[Any, Any, None], pending: Any) -> None:
        try:
            await _Resumed(coro, pending)
        except Exception:
            logger.exception("after-commit hook failed", extra={"action": "hook_error"})

    async def _on_get(
        self, sid: str, connection: Connection, data: Any, _stream: UUID | None
    ) -> Answer:
        principal = connection.principal
        if not principal.can("get"):
            raise Forbidden(f"a {principal.role} may not send stream:stats:get")
        stream_id = stream_ref(data)
        record, experience = await self._latest(stream_id)
        # Without presence the whole answer is `unavailable`: a count of this node's viewers
        # only would be silently wrong with several nodes, and docs/protocol.md promises a number.
        viewers = await self._presence(self.presence.count(stream_id))
        stats = None
        if record is not None:
            stats = {**stats_payload(record), "lastUpdated": isoformat(record["time"])}
        result = {
            "streamId": stream_id,
            "stats": stats,
            "quality": record["quality"] if record is not None else None,
            "viewerCount": viewers,
            "viewerExperience": experience_payload(experience),
        }
        return await self._answer(sid, "stream:stats:current", result)

    async def _presence(self, call: Awaitable[T]) -> T:
        """A presence call bounded by PRESENCE_TIMEOUT; any failure becomes Unavailable."""
        try:
            async with asyncio.timeout(PRESENCE_TIMEOUT):
                return await call
        except Exception as exc:  # TimeoutError, Redis and socket errors
            logger.warning("presence failed: %r", exc, extra={"action": "presence_error"})
            raise Unavailable("viewer presence is unreachable, retry later") from exc

    async def _latest(self, stream_id: str) -> tuple[asyncpg.Record | None, asyncpg.Record | None]:
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

    async def _on_subscribe(
        self, sid: str, connection: Connection, data: Any, _stream: UUID | None
    ) -> Answer:
        stream_id = self._monitored(connection, "stream:stats:subscribe", data)
        if connection.principal.streams is None:
            connection.excluded.discard(stream_id)
            self._unexclude(stream_id, sid)
        else:
            await self.sio.enter_room(sid, monitor_room(stream_id))
        return {"ok": True, "streamId": stream_id, "subscribed": True}

    async def _on_unsubscribe(
        self, sid: str, connection: Connection, data: Any, _stream: UUID | None
    ) -> Answer:
        stream_id = self._monitored(connection, "stream:stats:unsubscribe", data)
        if connection.principal.streams is None:
            connection.excluded.add(stream_id)
            self._excluded.setdefault(stream_id, set()).add(sid)
        else:
            await self.sio.leave_room(sid, monitor_room(stream_id))
        return {"ok": True, "streamId": stream_id, "subscribed": False}

    def _monitored(self, connection: Connection, event: str, data: Any) -> str:
        if not connection.principal.can("monitor"):
            raise Forbidden(f"a {connection.principal.role} may not send {event}")
        return stream_ref(data)

    def _unexclude(self, stream_id: str, sid: str) -> None:
        sids = self._excluded.get(stream_id)
        if sids is not None:
            sids.discard(sid)
            if not sids:
                del self._excluded[stream_id]

    async def _on_join(
        self, sid: str, connection: Connection, data: Any, _stream: UUID | None
    ) -> Answer:
        stream_id = self._watched(connection, "stream:join", data)
        # On failure the node still records the join (disconnect forgets it) and its
        # heartbeat restores the set in Redis; the viewer is told `unavailable` and may retry.
        await self._presence(self.presence.join(stream_id, sid))
        if sid not in self.connections:
            # Disconnected while joining: disconnect's leave_all may have run before the join.
            await self._presence(self.presence.leave(stream_id, sid))
        else:
            await self.sio.enter_room(sid, viewer_room(stream_id))
        return {"ok": True, "streamId": stream_id}

    async def _on_leave(
        self, sid: str, connection: Connection, data: Any, _stream: UUID | None
    ) -> Answer:
        stream_id = self._watched(connection, "stream:leave", data)
        await self._presence(self.presence.leave(stream_id, sid))
        await self.sio.leave_room(sid, viewer_room(stream_id))
        return {"ok": True, "streamId": stream_id}

    def _watched(self, connection: Connection, event: str, data: Any) -> str:
        if not connection.principal.can("watch"):
            raise Forbidden(f"a {connection.principal.role} may not send {event}")
        return stream_ref(data)


class _Resumed:
    """Awaits the rest of a coroutine that was started by hand and is suspended on `pending`.

    Does what `await` does, from the second step on: hands what the coroutine yields to the
    task and what the task sends or throws back to the coroutine.
    """

    def __init__(self, coro: Coroutine[Any, Any, None], pending: Any):
        self._coro = coro
        self._pending = pending

    def __await__(self) -> Generator[Any, Any, None]:
        coro, pending = self._coro, self._pending
        while True:
            try:
                sent = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                try:
                    pending = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    pending = coro.send(sent)
                except StopIteration:
                    return


# The permission each event needs on the stream it names.
_EVENT_ACTION: dict[str, Action] = {
    "stream:stats:update": "update",
    "stream:stats:get": "get",
    "stream:stats:subscribe": "monitor",
    "stream:stats:unsubscribe": "monitor",
    "stream:viewer:stats": "beacon",
    "stream:join": "watch",
    "stream:leave": "watch",
}


def _stream_allowed(principal: Principal, event: str, stream_id: str) -> bool:
    """False only when the role may do the event but not on this stream (role checks come later)."""
    action = _EVENT_ACTION.get(event)
    return action is None or not principal.can(action) or principal.may(action, stream_id)


def create_app(
    settings: Settings,
    *,
    presence: Presence | None = None,
    client_manager: socketio.AsyncManager | None = None,
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
            client_manager = socketio.AsyncRedisManager(
                settings.redis_url,
                redis_options={
                    "socket_timeout": REDIS_TIMEOUT,
                    "socket_connect_timeout": REDIS_TIMEOUT,
                },
            )
    app = IngestApp(settings, presence=presence, client_manager=client_manager)
    ingest.alerts.install(app)
    ingest.dashboard.install(app)
    ingest.guard.install(app)
    return app
