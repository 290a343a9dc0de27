"""Real python-socketio clients for the end-to-end tests, recording every event they receive."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import socketio

from ingest.auth import mint_token
from tests.servers import JWT_SECRET, ServerProcess

GUIDE_STREAM = "123e4567-e89b-12d3-a456-426614174000"
EVENTS = (
    "stream:stats:received",
    "stream:viewer:received",
    "stream:stats:current",
    "stream:stats:update",
    "stream:alert",
    "error",
)


# `viewerExperience` of `stream:stats:current` for a stream no viewer sent a beacon for lately.
NO_VIEWER_EXPERIENCE = {
    "views": 0,
    "rebufferPct": None,
    "startupP50Ms": None,
    "startupP95Ms": None,
    "switchesPerView": None,
    "failurePct": None,
    "score": None,
}


def now_iso(offset_s: float = 0) -> str:
    moment = datetime.fromtimestamp(time.time() + offset_s, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def guide_update(stream_id: str = GUIDE_STREAM, timestamp: str | None = None, **stats: Any):
    """The client guide's example event for `stream_id`, at `timestamp` (now by default)."""
    body = {
        "bitrate": 2500,
        "fps": 30,
        "resolution": {"width": 1920, "height": 1080},
        "audioLevel": -20,
        "packetLoss": 0.5,
        "latency": 45,
        "bandwidth": {"upload": 5000, "download": 10000},
    }
    body.update(stats)
    return {"streamId": stream_id, "stats": body, "timestamp": timestamp or now_iso()}


class Client:
    """A connected AsyncClient and every event it received, by name."""

    def __init__(self, sio: socketio.AsyncClient):
        self.sio = sio
        self.received: dict[str, list[Any]] = defaultdict(list)
        self._arrived = asyncio.Event()
        for name in EVENTS:
            sio.on(name, self._recorder(name))

    def _recorder(self, name: str):
        async def record(data: Any = None) -> None:
            self.received[name].append(data)
            self._arrived.set()

        return record

    async def emit(self, event: str, data: Any = None) -> None:
        await self.sio.emit(event, data)

    async def call(self, event: str, data: Any = None, timeout: float = 10) -> Any:
        return await self.sio.call(event, data, timeout=timeout)

    async def wait_for(self, event: str, count: int = 1, timeout: float = 10) -> list[Any]:
        """The first `count` payloads of `event`, waiting until they arrived."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.received[event]) < count:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(
                    f"{count} {event!r} expected, got {dict(self.received)} within {timeout}s"
                )
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        return self.received[event][:count]


class Clients:
    """`async with Clients(server) as clients:` connects clients and disconnects them all."""

    def __init__(self, server: ServerProcess):
        self.server = server
        self.all: list[Client] = []

    async def __aenter__(self) -> Clients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for client in self.all:
            if client.sio.connected:
                await client.sio.disconnect()
        await asyncio.sleep(0)

    async def connect(
        self,
        role: str,
        streams: list[str] | None = None,
        *,
        token: str | None = None,
        transports: list[str] | None = None,
    ) -> Client:
        sio = socketio.AsyncClient(reconnection=False)
        client = Client(sio)
        self.all.append(client)
        if token is None:
            token = mint_token(
                JWT_SECRET, role=role, streams=streams, sub=f"{role}-{len(self.all)}"
            )
        await sio.connect(
            self.server.url,
            auth={"token": token},
            transports=transports or ["websocket"],
            wait_timeout=10,
        )
        return client

    async def refused(self, auth: Any) -> Any:
        """Try to connect with `auth`; return the connect_error data (fails if accepted)."""
        sio = socketio.AsyncClient(reconnection=False)
        errors: list[Any] = []
        sio.on("connect_error", lambda data: errors.append(data))
        try:
            await sio.connect(self.server.url, auth=auth, transports=["websocket"], wait_timeout=10)
        except socketio.exceptions.ConnectionError:
            pass
        else:
            await sio.disconnect()
            raise AssertionError("the connection was accepted")
        finally:
            await sio.shutdown()
        assert errors, "refused without a connect_error"
        return errors[0]


def shared_server(database_url: str, log_dir: Path) -> Iterator[ServerProcess]:
    """One default server for a whole test module (for a module-scoped fixture)."""
    server = ServerProcess(database_url, log_dir).start()
    try:
        yield server
    finally:
        server.stop()
