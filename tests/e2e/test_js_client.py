"""The official JavaScript socket.io-client v4 (under Node) runs the guide's examples unchanged.

The scripts live in tests/js (`npm ci` there, done by scripts/setup.sh); each prints its
observations as `@@{json}` lines, which these tests read.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from ingest.auth import mint_token
from tests.e2e.clients import GUIDE_STREAM, NO_VIEWER_EXPERIENCE, Clients, shared_server
from tests.servers import JWT_SECRET, ServerProcess

JS = Path(__file__).resolve().parent.parent / "js"


@pytest.fixture(scope="module")
def node() -> str:
    path = shutil.which("node")
    if path is None or not (JS / "node_modules" / "socket.io-client").is_dir():
        pytest.fail(
            "the JavaScript client tests need Node.js 18+ and `npm ci` in tests/js "
            "(scripts/setup.sh does it)",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="module")
def server(migrated_database, tmp_path_factory):
    """One server for the tests here that need no settings of their own."""
    yield from shared_server(migrated_database, tmp_path_factory.mktemp("server"))


class NodeScript:
    """One `node tests/js/<script>` process and the observations it printed so far."""

    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc
        self.seen: list[dict[str, Any]] = []
        self.output: list[str] = []

    @classmethod
    async def start(cls, node: str, script: str, server: ServerProcess, **env: str) -> NodeScript:
        proc = await asyncio.create_subprocess_exec(
            node,
            str(JS / script),
            cwd=JS,
            env={**os.environ, "SERVER_URL": server.url, **env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        return cls(proc)

    async def until(self, event: str, count: int = 1, timeout: float = 20) -> list[Any]:
        """Read output until `count` observations of `event` were printed."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while len(self.of(event)) < count:
                line = await self.proc.stdout.readline()
                if not line:
                    raise AssertionError(f"script ended early:\n{''.join(self.output)}")
                self._keep(line.decode())
        return self.of(event)

    async def finish(self, timeout: float = 20) -> int:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            async for line in self.proc.stdout:
                self._keep(line.decode())
            return await self.proc.wait()

    def _keep(self, line: str) -> None:
        self.output.append(line)
        if line.startswith("@@"):
            self.seen.append(json.loads(line[2:]))

    def of(self, event: str) -> list[Any]:
        return [item["data"] for item in self.seen if item["event"] == event]


def token(role: str, streams: list[str] | None = None) -> str:
    return mint_token(JWT_SECRET, role=role, streams=streams, sub=f"js-{role}")


VDO_SAMPLE = {
    "bitrate": 3200,
    "fps": 29.97,
    "resolution": {"width": 1280, "height": 720},
    "audioLevel": -18.5,
    "packetLoss": 0.1,
    "rtt": 80,
    "availableOutgoingBitrate": 4000,
    "availableIncomingBitrate": 9000,
}


async def test_guide_examples_run_unchanged_with_the_official_client(node, start_server, conn):
    # The guide's first example carries a fixed 2025 timestamp: keep raw data long enough for it.
    server = start_server(env={"STREAMSTATS_RAW_RETENTION": "3650d"})
    async with Clients(server) as clients:
        for _ in range(2):
            viewer = await clients.connect("viewer", [GUIDE_STREAM])
            await viewer.call("stream:join", {"streamId": GUIDE_STREAM})

        dashboard = await NodeScript.start(
            node,
            "guide-dashboard.js",
            server,
            TOKEN=token("moderator"),
            STREAM_ID=GUIDE_STREAM,
            EXPECTED_UPDATES="2",
        )
        (first,) = await dashboard.until("current")
        streamer = await NodeScript.start(
            node,
            "guide-streamer.js",
            server,
            TOKEN=token("streamer", [GUIDE_STREAM]),
            STREAM_ID=GUIDE_STREAM,
            EXPECTED_ACKS="2",
            VDO_SAMPLES=json.dumps([VDO_SAMPLE]),
        )
        assert await streamer.finish() == 0, "".join(streamer.output)
        assert await dashboard.finish() == 0, "".join(dashboard.output)
        rows = await conn.fetch("SELECT * FROM stream_stats ORDER BY time")

    assert first == {
        "streamId": GUIDE_STREAM,
        "stats": None,
        "quality": None,
        "viewerCount": 2,
        "viewerExperience": NO_VIEWER_EXPERIENCE,
    }
    received = streamer.of("received")
    assert {r["timestamp"] for r in received} >= {"2025-01-21T10:30:00.000Z"}
    assert all(r["streamId"] == GUIDE_STREAM and r["duplicate"] is False for r in received)
    assert [r["quality"] for r in received] == ["good", "good"]
    # The client guide's own listener logged each acknowledgement too.
    assert sum("Stats acknowledged:" in line for line in streamer.output) == 2

    updates = dashboard.of("update")
    assert sorted(u["timestamp"] for u in updates) == sorted(r["timestamp"] for r in received)
    assert all(set(u) == {"streamId", "stats", "timestamp", "quality"} for u in updates)

    last = dashboard.of("current")[-1]
    live = next(r for r in received if r["timestamp"] != "2025-01-21T10:30:00.000Z")
    assert last == {
        "streamId": GUIDE_STREAM,
        "stats": {
            "bitrate": 3200,
            "fps": 29.97,
            "resolution": {"width": 1280, "height": 720},
            "audioLevel": -18.5,
            "packetLoss": 0.1,
            "latency": 80,
            "bandwidth": {"upload": 4000, "download": 9000},
            "lastUpdated": live["timestamp"],
        },
        "quality": "good",
        "viewerCount": 2,
        "viewerExperience": NO_VIEWER_EXPERIENCE,
    }
    # What the client guide's dashboard component shows from it.
    assert dashboard.of("render")[-1] == [
        "Bitrate: 3200 kbps",
        "FPS: 29.97",
        "Resolution: 1280x720",
        "Packet Loss: 0.1%",
        "Latency: 80ms",
    ]
    assert len(rows) == 2


@pytest.mark.parametrize("transport", ["", "polling", "websocket"])
async def test_official_client_gets_acknowledgements_and_error_events(node, server, transport):
    stream, foreign = str(uuid.uuid4()), str(uuid.uuid4())
    script = await NodeScript.start(
        node,
        "protocol-edges.js",
        server,
        TOKEN=token("streamer", [stream]),
        STREAM_ID=stream,
        FOREIGN_STREAM_ID=foreign,
        TRANSPORT=transport,
    )
    assert await script.finish() == 0, "".join(script.output)
    # The default starts on long-polling and may have upgraded by the time it connected.
    expected = [[transport]] if transport else [["polling"], ["websocket"]]
    assert script.of("connected") in expected
    (ack,) = script.of("ack")
    (current,) = script.of("get-ack")
    (error,) = script.of("error")
    assert ack["ok"] is True and ack["quality"] == "fair" and ack["duplicate"] is False
    assert current["ok"] is True
    assert current["stats"]["bitrate"] == 0.1 and current["stats"]["fps"] == 24.5
    assert current["stats"]["lastUpdated"] == ack["timestamp"]
    assert error["code"] == "forbidden"
    assert (error["event"], error["streamId"]) == ("stream:stats:update", foreign)


async def test_official_client_sees_why_a_connection_was_refused(node, server):
    script = await NodeScript.start(
        node, "protocol-edges.js", server, TOKEN="not-a-jwt", STREAM_ID=GUIDE_STREAM
    )
    assert await script.finish() == 0, "".join(script.output)
    (refused,) = script.of("connect_error")
    assert refused["data"]["code"] == "unauthorized"
    assert refused["message"] == refused["data"]["message"]
    assert script.of("connected") == []
