"""The Socket.IO events of docs/protocol.md: checks, handlers and answers, as one namespace.

Every client event goes through `IngestNamespace.trigger_event` (python-socketio's public
dispatch seam): the checks every event gets (size, authentication, token expiry, rate limit,
the stream the token allows), then its handler, then the answer — the handler's return value is
a `Reply(event, body)` goes back through the acknowledgement when the client asked for one (see
ingest/acks.py), else as `event`; a plain dict is an acknowledgement only.
Work after the answer (dropping an expired connection) runs when the handler's task is done,
i.e. once python-socketio has sent the acknowledgement.

Broadcasts are not sent from here: they follow each committed batch (ingest/monitors.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar
from uuid import UUID

import asyncpg
import socketio

from ingest import metrics, rooms
from ingest.acks import ClientEvent
from ingest.auth import Action, Principal, decode_token, parse_stream_id
from ingest.beacon import experience_payload, parse_beacon
from ingest.errors import ClientError, Forbidden, RateLimited, Unauthorized, Unavailable
from ingest.presence import Presence
from ingest.ratelimit import LogLimiter, TokenBucket
from ingest.schema import check_size, isoformat, parse_update, stats_payload, stream_ref
from streamstats.settings import Settings

logger = logging.getLogger(__name__)

# Viewer presence calls (Redis with REDIS_URL) give up after this long: during a partition a
# join or get answers `unavailable` instead of hanging with its handler.
PRESENCE_TIMEOUT = 3.0
# Refused connects are logged at most once per 10 s (all counted in /metrics).
_refused_log = LogLimiter(10.0)

T = TypeVar("T")


@dataclass(frozen=True)
class Reply:
    """A handler's successful answer: `{ok: true, **body}` as the acknowledgement if the client
    asked for one, else the event `event` with `body`."""

    event: str
    body: dict[str, Any]


# What a handler returns: a Reply, an acknowledgement only (a dict), or nothing.
Answer = Reply | dict[str, Any] | None


class Store(Protocol):
    """What the handlers need of the node: the write path and the latest-sample read."""

    @property
    def draining(self) -> bool: ...

    def submit(self, row: Any) -> Awaitable[bool]:
        """Queue a sample; the awaitable says whether it was stored before (or ClientError)."""
        ...

    def submit_beacon(self, row: Any) -> Awaitable[bool]:
        """Queue a viewer beacon, like `submit`."""
        ...

    async def latest(self, stream_id: str) -> tuple[asyncpg.Record | None, asyncpg.Record | None]:
        """The stream's latest sample and its recent viewer experience."""
        ...


@dataclass
class Connection:
    """What the server keeps per Socket.IO connection on this node."""

    principal: Principal
    bucket: TokenBucket


# A handler: (sid, connection, payload, the payload's streamId parsed or None) -> answer.
Handler = Callable[[str, Connection, Any, UUID | None], Awaitable[Answer]]


class IngestNamespace(socketio.AsyncNamespace):
    """The `/` namespace: connect/disconnect and the protocol's events."""

    def __init__(self, settings: Settings, store: Store, presence: Presence):
        super().__init__("/")
        # The permission each event needs on the stream its payload names (None: no check).
        self._actions: dict[str, Action | None] = dict(_EVENT_ACTION)
        self.settings = settings
        self.store = store
        self.presence = presence
        self._secret = settings.require_jwt_secret()
        self.connections: dict[str, Connection] = {}
        # Handler tasks not finished yet (each ends once its answer is sent): a drain waits for
        # those that were running when it started.
        self._handling: set[asyncio.Task[Any]] = set()
        self._later: set[asyncio.Task[None]] = set()
        self._handlers: dict[str, Handler] = {
            "stream:stats:update": self._on_update,
            "stream:stats:get": self._on_get,
            "stream:stats:subscribe": self._on_subscribe,
            "stream:stats:unsubscribe": self._on_unsubscribe,
            "stream:viewer:stats": self._on_beacon,
            "stream:join": self._on_join,
            "stream:leave": self._on_leave,
        }

    def add_handler(self, event: str, handler: Handler, action: Action | None = None) -> None:
        """Answer `event` with `handler`, behind the checks every event gets."""
        self._handlers[event] = handler
        self._actions[event] = action

    # -- dispatch --------------------------------------------------------------------------

    async def trigger_event(self, event: str, *args: Any) -> Any:
        if len(args) > 1 and isinstance(args[1], ClientEvent):
            sid, call, *payload = args
            handler = self._handlers.get(event)
            if handler is None:
                # Unknown events, and clients' events named `connect` or `disconnect`, are
                # ignored: only the library's own calls (without ClientEvent) reach those.
                return self.server.not_handled
            return await self._handle(event, handler, sid, call, payload)
        if event == "connect":
            return await self._on_connect(*args)
        if event == "disconnect":
            return await self._on_disconnect(args[0])
        return self.server.not_handled

    async def _handle(
        self, event: str, handler: Handler, sid: str, call: ClientEvent, payload: list[Any]
    ) -> dict[str, Any] | None:
        task = asyncio.current_task()
        if task is not None:
            self._handling.add(task)
            task.add_done_callback(self._handling.discard)
        data = payload[0] if len(payload) == 1 else None
        # Parsed once per event: the update handler stores this UUID as it is.
        stream = parse_stream_id(data.get("streamId")) if isinstance(data, dict) else None
        hint = None if stream is None else str(stream)
        try:
            check_size(data)
            connection = self.connections.get(sid)
            if connection is None:
                raise Unauthorized("the connection is not authenticated")
            if connection.principal.expired():
                # A token is checked at connect; an open socket must not outlive it. Dropped
                # once this answer is out, so the client hears why.
                logger.info("token expired", extra={"action": "token_expired", "sid": sid})
                self._when_answered(lambda: self.disconnect(sid))
                raise Unauthorized("the token has expired: reconnect with a fresh one")
            if not connection.bucket.allow():
                raise RateLimited(
                    f"more than {self.settings.rate_limit:g} events/s on this connection"
                )
            action = self._actions.get(event)
            if hint is not None and not _stream_allowed(connection.principal, action, hint):
                # Decided before validation: nothing about a foreign stream is revealed.
                raise Forbidden(
                    f"a {connection.principal.role} token may not use {event} on stream {hint}"
                )
            answer = await handler(sid, connection, data, stream)
            if isinstance(answer, Reply):
                return await self._answer(sid, call, answer.event, answer.body)
            return answer
        except ClientError as error:
            if event == "stream:stats:update":
                metrics.event("rejected", error.code)
            return await self._refuse(sid, call, event, error, hint)
        except Exception:
            logger.exception("%s failed", event, extra={"action": "handler_error"})
            failed = Unavailable("the server failed to handle the event")
            return await self._refuse(sid, call, event, failed, hint)

    def _when_answered(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run `work` once the current event's answer has been sent (its task is done)."""

        def start(_: asyncio.Task[Any]) -> None:
            later = asyncio.ensure_future(work())
            self._later.add(later)
            later.add_done_callback(self._later.discard)

        task = asyncio.current_task()
        assert task is not None
        task.add_done_callback(start)

    async def answered(self) -> None:
        """Wait until every event being handled now has been answered (for a drain)."""
        pending = set(self._handling)
        if pending:
            await asyncio.wait(pending)

    async def _answer(
        self, sid: str, call: ClientEvent, event: str, body: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Success: through the acknowledgement callback if the client gave one, else `event`."""
        if call.ack:
            return {"ok": True, **body}
        # The client is on this node: no need to go through the Redis manager's queue.
        await self.emit(event, body, to=sid, ignore_queue=True)
        return None

    async def _refuse(
        self, sid: str, call: ClientEvent, event: str, error: ClientError, stream_id: str | None
    ) -> dict[str, Any] | None:
        """Failure: `{ok: false, error}` to the callback, else an `error` event."""
        body = error.payload()
        if call.ack:
            return {"ok": False, "error": body}
        message: dict[str, Any] = {**body, "event": event}
        if stream_id is not None:
            message["streamId"] = stream_id
        await self.emit("error", message, to=sid, ignore_queue=True)
        return None

    # -- connect / disconnect --------------------------------------------------------------

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
        for room in rooms.rooms_at_connect(principal):
            await self.enter_room(sid, room)
        logger.debug(
            "%s %s connected",
            principal.role,
            principal.sub,
            extra={"action": "connect", "sid": sid, "role": principal.role},
        )

    async def _on_disconnect(self, sid: str) -> None:
        self.connections.pop(sid, None)
        # Logged by presence_call; in a partition the sid may stay in Redis until it expires.
        with contextlib.suppress(Unavailable):
            await self.presence_call(self.presence.leave_all(sid))

    # -- handlers --------------------------------------------------------------------------

    async def _on_update(
        self, sid: str, connection: Connection, data: Any, stream: UUID | None
    ) -> Answer:
        received = time.perf_counter()
        principal = connection.principal
        if not principal.can("update"):
            raise Forbidden(f"a {principal.role} may not send stream:stats:update")
        if self.store.draining:
            # Answered at once, whatever else is in flight: a drain never waits for these.
            raise Unavailable("the server is shutting down: nothing was stored, retry later")
        update = parse_update(
            data, now=datetime.now(UTC), retention=self.settings.raw_retention, stream=stream
        )
        duplicate = await self.store.submit(update.row)
        result = {
            "streamId": update.stream_id,
            "timestamp": update.timestamp,
            "quality": update.row.quality,
            "duplicate": duplicate,
        }
        metrics.event("duplicate" if duplicate else "stored")
        metrics.acknowledged(time.perf_counter() - received)
        return Reply("stream:stats:received", result)

    async def _on_beacon(
        self, sid: str, connection: Connection, data: Any, stream: UUID | None
    ) -> Answer:
        principal = connection.principal
        if not principal.can("beacon"):
            raise Forbidden(f"a {principal.role} may not send stream:viewer:stats")
        if self.store.draining:
            raise Unavailable("the server is shutting down: nothing was stored, retry later")
        beacon = parse_beacon(
            data, now=datetime.now(UTC), retention=self.settings.raw_retention, stream=stream
        )
        duplicate = await self.store.submit_beacon(beacon.row)
        result = {
            "streamId": beacon.stream_id,
            "viewId": beacon.view_id,
            "timestamp": beacon.timestamp,
            "duplicate": duplicate,
        }
        return Reply("stream:viewer:received", result)

    async def _on_get(self, sid: str, connection: Connection, data: Any, _: UUID | None) -> Answer:
        principal = connection.principal
        if not principal.can("get"):
            raise Forbidden(f"a {principal.role} may not send stream:stats:get")
        stream_id = stream_ref(data)
        record, experience = await self.store.latest(stream_id)
        # Without presence the whole answer is `unavailable`: a count of this node's viewers
        # only would be silently wrong with several nodes, and docs/protocol.md promises a number.
        viewers = await self.presence_call(self.presence.count(stream_id))
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
        return Reply("stream:stats:current", result)

    async def presence_call(self, call: Awaitable[T]) -> T:
        """A presence call bounded by PRESENCE_TIMEOUT; any failure becomes Unavailable."""
        try:
            async with asyncio.timeout(PRESENCE_TIMEOUT):
                return await call
        except Exception as exc:  # TimeoutError, Redis and socket errors
            logger.warning("presence failed: %r", exc, extra={"action": "presence_error"})
            raise Unavailable("viewer presence is unreachable, retry later") from exc

    async def _on_subscribe(
        self, sid: str, connection: Connection, data: Any, _: UUID | None
    ) -> Answer:
        stream_id = self._monitored(connection, "stream:stats:subscribe", data)
        await rooms.subscribe(self.server, sid, connection.principal, stream_id, on=True)
        return {"ok": True, "streamId": stream_id, "subscribed": True}

    async def _on_unsubscribe(
        self, sid: str, connection: Connection, data: Any, _: UUID | None
    ) -> Answer:
        stream_id = self._monitored(connection, "stream:stats:unsubscribe", data)
        await rooms.subscribe(self.server, sid, connection.principal, stream_id, on=False)
        return {"ok": True, "streamId": stream_id, "subscribed": False}

    def _monitored(self, connection: Connection, event: str, data: Any) -> str:
        if not connection.principal.can("monitor"):
            raise Forbidden(f"a {connection.principal.role} may not send {event}")
        return stream_ref(data)

    async def _on_join(self, sid: str, connection: Connection, data: Any, _: UUID | None) -> Answer:
        stream_id = self._watched(connection, "stream:join", data)
        # On failure the node still records the join (disconnect forgets it) and its
        # heartbeat restores the set in Redis; the viewer is told `unavailable` and may retry.
        await self.presence_call(self.presence.join(stream_id, sid))
        if sid not in self.connections:
            # Disconnected while joining: disconnect's leave_all may have run before the join.
            await self.presence_call(self.presence.leave(stream_id, sid))
        else:
            await self.enter_room(sid, rooms.viewer_room(stream_id))
        return {"ok": True, "streamId": stream_id}

    async def _on_leave(
        self, sid: str, connection: Connection, data: Any, _: UUID | None
    ) -> Answer:
        stream_id = self._watched(connection, "stream:leave", data)
        await self.presence_call(self.presence.leave(stream_id, sid))
        await self.leave_room(sid, rooms.viewer_room(stream_id))
        return {"ok": True, "streamId": stream_id}

    def _watched(self, connection: Connection, event: str, data: Any) -> str:
        if not connection.principal.can("watch"):
            raise Forbidden(f"a {connection.principal.role} may not send {event}")
        return stream_ref(data)


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


def _stream_allowed(principal: Principal, action: Action | None, stream_id: str) -> bool:
    """False only when the role may do the action, but not on this stream (checked later)."""
    return action is None or not principal.can(action) or principal.may(action, stream_id)
