"""RedisPresence on a real Redis: counted across nodes, once per connection, gone with its node."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from ingest.presence_redis import RedisPresence

pytestmark = pytest.mark.redis

REDIS_URL = "redis://127.0.0.1:6379/8"


@pytest.fixture
async def nodes() -> AsyncIterator[Callable[..., RedisPresence]]:
    """Presences sharing one Redis under a key prefix of their own, closed afterwards."""
    prefix = f"test:{uuid.uuid4().hex}:"
    made: list[RedisPresence] = []

    def node(ttl: float = 15.0) -> RedisPresence:
        presence = RedisPresence.from_url(REDIS_URL, ttl=ttl, prefix=prefix)
        made.append(presence)
        return presence

    yield node
    for presence in made:
        await presence.close()


def stream() -> str:
    return str(uuid.uuid4())


async def test_viewers_on_two_nodes_are_counted_from_either(nodes):
    a, b = nodes(), nodes()
    s = stream()
    await a.join(s, "sid-a1")
    await a.join(s, "sid-a2")
    await b.join(s, "sid-b1")
    assert await a.count(s) == 3
    assert await b.count(s) == 3
    assert await a.count(stream()) == 0


async def test_joining_twice_counts_once(nodes):
    a = nodes()
    s = stream()
    await a.join(s, "sid")
    await a.join(s, "sid")
    assert await a.count(s) == 1


async def test_leave_and_disconnect_stop_counting(nodes):
    a, b = nodes(), nodes()
    s1, s2 = stream(), stream()
    await a.join(s1, "x")
    await a.join(s2, "x")
    await a.join(s1, "y")
    await a.leave(s1, "y")
    assert await b.count(s1) == 1
    await a.leave_all("x")
    assert (await b.count(s1), await b.count(s2)) == (0, 0)
    assert a.local_viewers == 0


async def test_a_silent_node_stops_counting_after_the_ttl(nodes):
    alive, dying = nodes(ttl=1.0), nodes(ttl=1.0)
    s = stream()
    await alive.join(s, "a")
    await dying.join(s, "b")
    assert await alive.count(s) == 2
    # What kill -9 leaves behind: no more heartbeats, nothing cleaned up.
    assert dying._task is not None
    dying._task.cancel()
    await asyncio.sleep(1.6)
    assert await alive.count(s) == 1


async def test_a_closed_node_stops_counting_at_once(nodes):
    a, b = nodes(), nodes()
    s = stream()
    await a.join(s, "a")
    await b.join(s, "b")
    await b.close()
    assert await a.count(s) == 1


async def test_sets_lost_in_redis_are_restored_by_the_next_heartbeat(nodes):
    a = nodes()
    s = stream()
    await a.join(s, "a")
    await a.redis.delete(a._key(s))
    assert await a.count(s) == 0
    await a.heartbeat()
    assert await a.count(s) == 1
