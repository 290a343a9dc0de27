"""`stream:stats:digest`: one message per interval per dashboard with every stream that changed.

An overview of 10,000 streams would otherwise receive ~2,000 broadcasts a second. Instead each
node keeps the latest committed row of every stream (`Digests.on_commit`, once per committed
batch) numbered by a change counter; each subscriber remembers the counter it was last sent and,
every interval, gets the rows changed since, that its token may see. Nothing is kept while no
subscriber is connected to this node.

Across nodes (`REDIS_URL`): a node publishes each committed batch's rows on one Redis channel,
and a node with subscribers listens to it, so its digests hold the rows committed anywhere.
Each subscriber is served by the node it is connected to only, so each dashboard gets each
digest once, and each row reaches each node once (a node ignores its own messages).

Viewer counts are read from presence once a second for the live streams (one batched call), and
a stream whose count changed is part of the next digest even if it sent no row.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from ingest.auth import Principal
from ingest.rows import COLUMNS, StatsRow
from ingest.schema import isoformat, stats_payload

logger = logging.getLogger(__name__)

DIGEST_EVENT = "stream:stats:digest"
DEFAULT_INTERVAL_MS = 1000
MIN_INTERVAL_MS = 250
MAX_INTERVAL_MS = 60_000
# A stream silent this long is no longer live: its viewers are not polled, its row is dropped.
LIVE_FOR = timedelta(minutes=5)
VIEWERS_EVERY = 1.0  # seconds between viewer-count reads while someone subscribes
CHANNEL = "streamstats:digest"
RECONNECT_MAX_SECONDS = 5.0


class Emit(Protocol):
    """Send one event to one client of this node."""

    def __call__(self, event: str, data: dict[str, Any], sid: str) -> Awaitable[None]: ...


class ViewerCounts(Protocol):
    """Live viewer counts of several streams, across nodes (ingest/presence.py)."""

    async def counts(self, stream_ids: list[str]) -> dict[str, int]: ...


@dataclass
class Subscriber:
    sid: str
    principal: Principal
    interval: float  # seconds
    # The change counter this subscriber has been sent up to.
    sent: int
    task: asyncio.Task[None] | None = None


@dataclass
class _Stream:
    row: StatsRow
    # The stream's digest item, built once per change and shared by every subscriber.
    item: dict[str, Any] | None = None
    viewers: int | None = None


@dataclass
class Digests:
    """The digest state of one node; see the module docstring."""

    emit: Emit
    viewers: ViewerCounts
    # True while `sid` is still connected (a closed connection's subscription ends with it).
    connected: Callable[[str], bool]
    bus: RedisBus | None = None
    _streams: dict[str, _Stream] = field(default_factory=dict)
    # Stream id -> change counter, oldest change first.
    _changes: OrderedDict[str, int] = field(default_factory=OrderedDict)
    _counter: int = 0
    _subscribers: dict[str, Subscriber] = field(default_factory=dict)
    _viewer_task: asyncio.Task[None] | None = None

    # -- changes ---------------------------------------------------------------------------

    def on_commit(self, rows: Iterable[StatsRow]) -> None:
        """A committed batch's new rows (duplicates left out): publish, and keep if subscribed."""
        rows = list(rows)
        if not rows:
            return
        if self.bus is not None:
            self.bus.publish(rows)
        if self._subscribers:
            self.take(rows)

    def take(self, rows: Iterable[StatsRow]) -> None:
        """Record rows as the streams' latest, unless an as new or newer row is already kept."""
        for row in rows:
            stream_id = str(row.stream_id)
            known = self._streams.get(stream_id)
            if known is not None and known.row.time >= row.time:
                continue
            if known is None:
                self._streams[stream_id] = _Stream(row)
            else:
                known.row, known.item = row, None
            self._changed(stream_id)

    def _changed(self, stream_id: str) -> None:
        self._counter += 1
        self._changes[stream_id] = self._counter
        self._changes.move_to_end(stream_id)

    # -- subscriptions ---------------------------------------------------------------------

    async def subscribe(self, sid: str, principal: Principal, interval_ms: float) -> None:
        """Start (or re-time) this connection's digests; the first comes one interval from now."""
        current = self._subscribers.get(sid)
        if current is not None:
            current.interval = interval_ms / 1000
            return
        if not self._subscribers and self.bus is not None:
            await self.bus.listen(self.take)
        subscriber = Subscriber(sid, principal, interval_ms / 1000, sent=self._counter)
        self._subscribers[sid] = subscriber
        subscriber.task = asyncio.create_task(self._serve(subscriber), name=f"digest-{sid}")
        if self._viewer_task is None:
            self._viewer_task = asyncio.create_task(self._poll_viewers(), name="digest-viewers")

    async def unsubscribe(self, sid: str) -> bool:
        """Stop this connection's digests; False if it had none."""
        subscriber = self._subscribers.pop(sid, None)
        if subscriber is None:
            return False
        if subscriber.task is not None and subscriber.task is not asyncio.current_task():
            subscriber.task.cancel()
        if not self._subscribers:
            await self._idle()
        return True

    async def _idle(self) -> None:
        """Nobody subscribes here any more: stop listening, forget every row."""
        if self._viewer_task is not None:
            self._viewer_task.cancel()
            self._viewer_task = None
        if self.bus is not None:
            await self.bus.stop_listening()
        self._streams.clear()
        self._changes.clear()

    async def close(self) -> None:
        for sid in list(self._subscribers):
            await self.unsubscribe(sid)
        if self.bus is not None:
            await self.bus.close()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    # -- delivery --------------------------------------------------------------------------

    async def _serve(self, subscriber: Subscriber) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        try:
            while True:
                due += subscriber.interval
                # On schedule, not drifting by each delivery's own time; a late one skips ahead.
                due = max(due, loop.time())
                await asyncio.sleep(due - loop.time())
                if not self.connected(subscriber.sid):
                    await self.unsubscribe(subscriber.sid)
                    return
                await self.emit(DIGEST_EVENT, self.digest(subscriber), subscriber.sid)
                self._trim()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("digest delivery failed", extra={"action": "digest_error"})
            await self.unsubscribe(subscriber.sid)

    def digest(self, subscriber: Subscriber) -> dict[str, Any]:
        """The next digest for this subscriber: what changed since its previous one."""
        items = []
        for stream_id, counter in reversed(self._changes.items()):
            if counter <= subscriber.sent:
                break
            if subscriber.principal.sees(stream_id):
                items.append(self._item(stream_id))
        subscriber.sent = self._counter
        items.reverse()
        return {"at": isoformat(datetime.now(UTC)), "streams": items}

    def _item(self, stream_id: str) -> dict[str, Any]:
        stream = self._streams[stream_id]
        if stream.item is None:
            row = stream.row
            stream.item = {
                "streamId": stream_id,
                "stats": stats_payload(row),
                "quality": row.quality,
                "viewerCount": stream.viewers,
                "lastUpdated": isoformat(row.time),
            }
        return stream.item

    def _trim(self) -> None:
        """Forget changes every subscriber has been sent."""
        if not self._subscribers:
            return
        oldest = min(s.sent for s in self._subscribers.values())
        while self._changes:
            stream_id, counter = next(iter(self._changes.items()))
            if counter > oldest:
                break
            del self._changes[stream_id]

    # -- viewers ---------------------------------------------------------------------------

    async def _poll_viewers(self) -> None:
        while True:
            try:
                await self.refresh_viewers()
            except Exception as exc:  # presence unreachable: counts stay as they were
                logger.warning(
                    "digest viewer counts failed: %r", exc, extra={"action": "presence_error"}
                )
            await asyncio.sleep(VIEWERS_EVERY)

    async def refresh_viewers(self) -> None:
        """Read the live streams' viewer counts; a stream whose count changed is a change."""
        horizon = datetime.now(UTC) - LIVE_FOR
        for stream_id in [s for s, v in self._streams.items() if v.row.time < horizon]:
            del self._streams[stream_id]
            self._changes.pop(stream_id, None)
        ids = list(self._streams)
        if not ids:
            return
        counts = await self.viewers.counts(ids)
        for stream_id, count in counts.items():
            stream = self._streams.get(stream_id)
            if stream is not None and stream.viewers != count:
                stream.viewers, stream.item = count, None
                self._changed(stream_id)


class RedisBus:
    """Committed rows between nodes over one Redis pub/sub channel (see the module docstring)."""

    def __init__(self, url: str, *, timeout: float, channel: str = CHANNEL):
        import redis.asyncio as redis

        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self.channel = channel
        self.node = uuid.uuid4().hex
        self._outbox: list[list[Any]] = []
        self._wakeup = asyncio.Event()
        self._publisher: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    def publish(self, rows: list[StatsRow]) -> None:
        """Queue rows for the other nodes (sent by one background task, in batches)."""
        self._outbox.extend(_encode(row) for row in rows)
        self._wakeup.set()
        if self._publisher is None:
            self._publisher = asyncio.create_task(self._publish(), name="digest-publish")

    async def _publish(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            rows, self._outbox = self._outbox, []
            if not rows:
                continue
            message = json.dumps({"node": self.node, "rows": rows}, separators=(",", ":"))
            try:
                await self._redis.publish(self.channel, message)
            except Exception as exc:  # Redis unreachable: other nodes' digests miss these rows
                logger.warning(
                    "digest publish failed (%d rows): %r",
                    len(rows),
                    exc,
                    extra={"action": "digest_publish_failed"},
                )

    async def listen(self, take: Callable[[list[StatsRow]], None]) -> None:
        """Hand every other node's rows to `take` until `stop_listening`."""
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(take), name="digest-listen")
        # Rows published before the subscription took effect are missed; wait for it briefly.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.listening.wait(), 2)

    async def _listen(self, take: Callable[[list[StatsRow]], None]) -> None:
        delay = 0.2
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.listening.set()
                delay = 0.2
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    data = json.loads(message["data"])
                    if data.get("node") != self.node:
                        take([_decode(item) for item in data["rows"]])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.listening.clear()
                logger.warning(
                    "digest listener lost redis: %r", exc, extra={"action": "digest_listen_lost"}
                )
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    async def stop_listening(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
            self.listening.clear()

    async def close(self) -> None:
        await self.stop_listening()
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher
            self._publisher = None
        await self._redis.aclose()


def _encode(row: StatsRow) -> list[Any]:
    return [isoformat(row.time), str(row.stream_id), *row[2:]]


def _decode(item: list[Any]) -> StatsRow:
    if len(item) != len(COLUMNS):
        raise ValueError(f"a digest row has {len(item)} fields, not {len(COLUMNS)}")
    moment = datetime.fromisoformat(item[0])
    return StatsRow(moment, uuid.UUID(item[1]), *item[2:])
