"""A Redis partition (every byte stops, nothing is refused) against a real multi-node-ready server.

Presence calls are bounded: `stream:stats:get` and `stream:join` answer `unavailable` within a
few seconds instead of hanging with their handlers, updates keep being stored, and everything
works again once Redis is reachable.
"""

from __future__ import annotations

import time
import uuid

import pytest

from ingest.events import PRESENCE_TIMEOUT
from tests.e2e.clients import Clients, guide_update
from tests.proxy import TcpProxy

pytestmark = [pytest.mark.redis, pytest.mark.slow]

STREAM = str(uuid.uuid4())


async def test_a_redis_partition_answers_unavailable_instead_of_hanging(start_server):
    with TcpProxy("127.0.0.1", 6379) as proxy:
        server = start_server(env={"REDIS_URL": f"redis://127.0.0.1:{proxy.port}/9"})
        async with Clients(server) as clients:
            viewer = await clients.connect("viewer", [STREAM])
            streamer = await clients.connect("streamer", [STREAM])
            moderator = await clients.connect("moderator")
            assert (await viewer.call("stream:join", {"streamId": STREAM}))["ok"] is True
            healthy = await moderator.call("stream:stats:get", {"streamId": STREAM})

            proxy.hang()
            started = time.monotonic()
            get = await moderator.call("stream:stats:get", {"streamId": STREAM}, timeout=30)
            get_seconds = time.monotonic() - started
            other = await clients.connect("viewer", [STREAM])
            join = await other.call("stream:join", {"streamId": STREAM}, timeout=30)
            update = await streamer.call("stream:stats:update", guide_update(STREAM), timeout=30)

            proxy.forward()
            again = await moderator.call("stream:stats:get", {"streamId": STREAM}, timeout=30)
    assert healthy["ok"] is True and healthy["viewerCount"] == 1
    assert get["ok"] is False and get["error"]["code"] == "unavailable"
    assert get_seconds < PRESENCE_TIMEOUT + 2
    assert join["ok"] is False and join["error"]["code"] == "unavailable"
    assert update["ok"] is True  # storing does not depend on Redis
    assert again["ok"] is True and again["viewerCount"] >= 1
