"""Reference client: sends `stream:stats:update` until each one is acknowledged.

Delivery is at-least-once: an update not acknowledged is resent — after a reconnect, after
`overloaded`/`unavailable`/`rate_limited`, after an acknowledgement timeout — with backoff.
Storage stays exactly-once because the server is idempotent on `(streamId, timestamp)`, which
is why `send` fills in a missing `timestamp` before the first attempt: a resend must carry the
same one.
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import UTC, datetime
from typing import Any

import socketio

logger = logging.getLogger(__name__)

UPDATE = "stream:stats:update"
# Error codes after which the same update may succeed later; anything else is final.
RETRYABLE = frozenset({"overloaded", "unavailable", "rate_limited"})


class _Lost(Exception):
    """The connection dropped before the acknowledgement arrived."""


def now_iso() -> str:
    """Now as an ISO 8601 UTC timestamp; microseconds, so rapid updates get distinct keys."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class StatsClient:
    """A Socket.IO client that resends every update until the server acknowledges it."""

    def __init__(
        self,
        *,
        ack_timeout: float = 10.0,
        backoff_start: float = 0.1,
        backoff_max: float = 2.0,
        transports: tuple[str, ...] = ("websocket",),
    ):
        self.ack_timeout = ack_timeout
        self.backoff_start = backoff_start
        self.backoff_max = backoff_max
        self.transports = list(transports)
        self.sio = socketio.AsyncClient(
            reconnection=True,
            reconnection_delay=0.2,
            reconnection_delay_max=2,
            # Left alone, the library takes over SIGINT and cancels every task of the process,
            # which breaks a server running the simulator in-process (`streamstats run`).
            handle_sigint=False,
        )
        self._connected = asyncio.Event()
        self._closed = False
        self._inflight: set[asyncio.Future[Any]] = set()
        self.unacknowledged = 0  # updates handed to `send` and not yet answered for good
        self.attempts = 0
        self.resends = 0
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)

    async def connect(self, url: str, token: str, *, wait_timeout: float = 10) -> None:
        """Connect with a JWT; raises socketio.exceptions.ConnectionError if refused."""
        await self.sio.connect(
            url,
            auth={"token": token},
            transports=self.transports,
            wait_timeout=wait_timeout,
            retry=False,
        )

    async def close(self) -> None:
        """Disconnect; updates still being sent fail with ConnectionError."""
        self._closed = True
        await self.sio.disconnect()
        await self.sio.shutdown()

    async def send(self, update: dict[str, Any]) -> dict[str, Any]:
        """Send one update and return its acknowledgement once final.

        `{ok: true, ...}` once stored (maybe as `duplicate`), or `{ok: false, error}` for an
        error that resending cannot fix (`invalid`, `forbidden`, ...).
        """
        if update.get("timestamp") is None:
            update = {**update, "timestamp": now_iso()}
        backoff = self.backoff_start
        self.unacknowledged += 1
        try:
            first = True
            while True:
                if self._closed:
                    raise ConnectionError("client closed before the update was acknowledged")
                if not first:
                    self.resends += 1
                first = False
                try:
                    ack = await self._attempt(update)
                except (_Lost, TimeoutError, socketio.exceptions.BadNamespaceError):
                    ack = None
                if ack is not None:
                    error = ack.get("error") or {}
                    if ack.get("ok") or error.get("code") not in RETRYABLE:
                        return ack
                # Jitter keeps many clients from resending in lockstep after an outage.
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, self.backoff_max)
        finally:
            self.unacknowledged -= 1

    async def _attempt(self, update: dict[str, Any]) -> dict[str, Any]:
        if not self._connected.is_set():
            async with asyncio.timeout(self.ack_timeout):
                await self._connected.wait()
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()

        def acknowledged(*args: Any) -> None:
            if not answer.done():
                answer.set_result(args[0] if args else None)

        self._inflight.add(answer)
        try:
            self.attempts += 1
            await self.sio.emit(UPDATE, update, callback=acknowledged)
            async with asyncio.timeout(self.ack_timeout):
                ack = await answer
        finally:
            self._inflight.discard(answer)
        if not isinstance(ack, dict):
            raise _Lost(f"unexpected acknowledgement {ack!r}")
        return ack

    async def _on_connect(self) -> None:
        self._connected.set()

    async def _on_disconnect(self, *reason: Any) -> None:
        self._connected.clear()
        # Acknowledgements of this connection will never come: resend after reconnecting.
        for answer in list(self._inflight):
            if not answer.done():
                answer.set_exception(_Lost("disconnected"))
