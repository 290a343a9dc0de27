"""Viewer presence in Redis, so `viewerCount` counts the viewers of every ingest node.

Each node keeps, per stream, a Redis set of the sids of its own viewer connections
(`<prefix>s:<stream>:<node>`) and heartbeats its id into a sorted set of live nodes scored with
Redis' own clock. A count sums the sets of the nodes heard from within the TTL, so the viewers
of a node killed with `kill -9` stop counting one TTL after its last heartbeat, without anyone
cleaning up after it; its sets then expire on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict

import redis.asyncio as redis

logger = logging.getLogger(__name__)

PREFIX = "streamstats:presence:"
# Seconds a Redis command or connect may take: during a partition calls fail instead of hanging
# (the ingest app's Redis manager uses the same bound).
REDIS_TIMEOUT = 2.0

# Sum SCARD over the stream's set of every node heard from within the TTL (ARGV[1], seconds).
# Redis' TIME keeps the nodes' own clocks out of it.
_COUNT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local nodes = redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf')
local total = 0
for _, node in ipairs(nodes) do
  total = total + redis.call('SCARD', ARGV[2] .. node)
end
return total
"""

# Record that node ARGV[1] is alive now; forget nodes silent for ARGV[2] seconds.
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return 1
"""


class RedisPresence:
    """`Presence` shared by all nodes via one Redis; a silent node stops counting after `ttl`."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        ttl: float = 15.0,
        node_id: str | None = None,
        prefix: str = PREFIX,
    ):
        self.redis = client
        self.ttl = ttl
        self.node_id = node_id or uuid.uuid4().hex
        self.prefix = prefix
        self._nodes_key = f"{prefix}nodes"
        # A node's sets outlive a missed heartbeat or two, then expire with the node.
        self._key_ttl = max(1, round(ttl * 3))
        self._local: dict[str, set[str]] = defaultdict(set)
        self._streams_of: dict[str, set[str]] = defaultdict(set)
        self._count = client.register_script(_COUNT)
        self._heartbeat_script = client.register_script(_HEARTBEAT)
        self._task: asyncio.Task[None] | None = None
        self._started = asyncio.Lock()
        self._closed = False

    @classmethod
    def from_url(cls, url: str, *, ttl: float = 15.0, **kwargs: object) -> RedisPresence:
        """A presence on its own Redis connection pool (closed by `close`)."""
        client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=REDIS_TIMEOUT,
            socket_connect_timeout=REDIS_TIMEOUT,
        )
        return cls(client, ttl=ttl, **kwargs)  # type: ignore[arg-type]

    def _key(self, stream_id: str, node_id: str | None = None) -> str:
        return f"{self.prefix}s:{stream_id}:{node_id or self.node_id}"

    @property
    def local_viewers(self) -> int:
        """Viewer memberships held by this node (a viewer of two streams counts twice)."""
        return sum(len(sids) for sids in self._local.values())

    async def start(self) -> None:
        """Announce this node and keep heartbeating (also done by the first `join`)."""
        async with self._started:
            if self._task is not None or self._closed:
                return
            await self.heartbeat()
            self._task = asyncio.create_task(self._beat(), name="presence-heartbeat")
            logger.info(
                "presence in redis, node %s, ttl %.1fs",
                self.node_id,
                self.ttl,
                extra={"action": "presence_started", "node": self.node_id},
            )

    async def heartbeat(self) -> None:
        """Mark this node alive and refresh its sets, restoring any Redis lost (e.g. a restart)."""
        await self._heartbeat_script(
            keys=[self._nodes_key], args=[self.node_id, self._key_ttl * 10]
        )
        streams = [s for s, sids in self._local.items() if sids]
        if not streams:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream_id in streams:
                pipe.expire(self._key(stream_id), self._key_ttl)
            refreshed = await pipe.execute()
        missing = [s for s, ok in zip(streams, refreshed, strict=True) if not ok]
        if missing:
            async with self.redis.pipeline(transaction=False) as pipe:
                for stream_id in missing:
                    pipe.sadd(self._key(stream_id), *self._local[stream_id])
                    pipe.expire(self._key(stream_id), self._key_ttl)
                await pipe.execute()
            logger.warning(
                "restored %d presence sets missing from redis",
                len(missing),
                extra={"action": "presence_restored", "streams": len(missing)},
            )

    async def _beat(self) -> None:
        interval = self.ttl / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self.heartbeat()
            except (redis.RedisError, OSError) as exc:
                # Keep beating: when Redis returns, the next beat restores this node's sets.
                logger.warning(
                    "presence heartbeat failed: %s",
                    exc,
                    extra={"action": "presence_heartbeat_failed"},
                )

    async def join(self, stream_id: str, sid: str) -> None:
        """Count `sid` as a viewer of `stream_id` (again: no change)."""
        if self._task is None:
            await self.start()
        self._local[stream_id].add(sid)
        self._streams_of[sid].add(stream_id)
        key = self._key(stream_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.sadd(key, sid)
            pipe.expire(key, self._key_ttl)
            await pipe.execute()

    async def leave(self, stream_id: str, sid: str) -> None:
        """Stop counting `sid` as a viewer of `stream_id`."""
        self._forget(stream_id, sid)
        await self.redis.srem(self._key(stream_id), sid)

    async def leave_all(self, sid: str) -> None:
        """Stop counting `sid` anywhere (on disconnect)."""
        streams = self._streams_of.pop(sid, set())
        if not streams:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream_id in streams:
                self._forget(stream_id, sid)
                pipe.srem(self._key(stream_id), sid)
            await pipe.execute()

    def _forget(self, stream_id: str, sid: str) -> None:
        sids = self._local.get(stream_id)
        if sids is not None:
            sids.discard(sid)
            if not sids:
                del self._local[stream_id]
        streams = self._streams_of.get(sid)
        if streams is not None:
            streams.discard(stream_id)
            if not streams:
                del self._streams_of[sid]

    async def count(self, stream_id: str) -> int:
        """Viewer connections on `stream_id` over every live node."""
        total = await self._count(
            keys=[self._nodes_key], args=[self.ttl, f"{self.prefix}s:{stream_id}:"]
        )
        return int(total)

    async def counts(self, stream_ids: list[str]) -> dict[str, int]:
        """`count` of several streams in one pipelined round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream_id in stream_ids:
                await self._count(
                    keys=[self._nodes_key],
                    args=[self.ttl, f"{self.prefix}s:{stream_id}:"],
                    client=pipe,
                )
            totals = await pipe.execute()
        return {s: int(t) for s, t in zip(stream_ids, totals, strict=True)}

    async def close(self) -> None:
        """Leave the cluster cleanly: this node's viewers stop counting at once."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zrem(self._nodes_key, self.node_id)
                for stream_id in list(self._local):
                    pipe.delete(self._key(stream_id))
                await pipe.execute()
        except (redis.RedisError, OSError) as exc:
            logger.warning(
                "could not remove this node's presence: %s",
                exc,
                extra={"action": "presence_close_failed"},
            )
        finally:
            self._local.clear()
            self._streams_of.clear()
            await self.redis.aclose()
