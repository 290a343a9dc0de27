"""The alert relay: every alert in the outbox reaches this node's clients once, even after gaps.

Alerts are written to `alert_events` with their episode change (streamstats/outbox.py), by
ingest nodes (threshold alerts) and job runners (bitrate drops) alike, and each commit NOTIFYs
`ALERT_CHANNEL`. Every ingest node LISTENs on its own connection; a notification only wakes it
up: the relay then reads the events created since its previous read from the table and emits
those it has not emitted yet to the clients connected to this node (`local=True`: with N nodes
each client, connected to one node, gets one copy).

The payload of a notification is never read. Any login may NOTIFY any channel (PostgreSQL has
no privilege for it), so a read-only analyst could otherwise push made-up alerts to streamers;
only the service's roles can write the table. A flood of notifications costs one indexed read
per wake-up, coalesced.

Catch-up: the read is "created after the previous read's database time minus
`CATCH_UP_MARGIN`", so after a lost connection the next read covers the gap, and the margin
covers transactions that committed after a read although they inserted before it (their
`created_at` is the insert's clock). Ids already emitted are remembered until no read can
return them again, so each event is emitted once per node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import datetime, timedelta
from typing import Any, Protocol

import asyncpg

from analytics.alerts import ALERT_CHANNEL
from streamstats.db import CONNECTION_ERRORS, connect
from streamstats.errors import DatabaseUnavailable
from streamstats.sql import queries

logger = logging.getLogger(__name__)

ALERT_EVENT = "stream:alert"
# The LISTEN connection reads the outbox at least this often (it doubles as a keepalive: an
# idle socket can die silently, a query notices).
KEEPALIVE_SECONDS = 15.0
RECONNECT_MAX_SECONDS = 10.0
# A transaction that wrote an event commits within this after its insert (ingest: one
# statement; the drops job: the rest of its scan).
CATCH_UP_MARGIN = timedelta(seconds=60)
# After a longer outage, older alerts are stale for live clients: they stay in the outbox
# (and in webhooks) but are not replayed to sockets.
CATCH_UP_MAX = timedelta(hours=1)
QUERY_TIMEOUT = 10.0
_UNAVAILABLE: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, DatabaseUnavailable)


class Emitter(Protocol):
    """What the relay needs of the app: send to a stream's streamers and monitors."""

    async def broadcast(
        self, event: str, payloads: list[dict[str, Any]], *, streamers: bool, local: bool = False
    ) -> None:
        """Each payload to the monitors (and streamers) of its `streamId` (ingest/rooms.py)."""
        ...


class AlertRelay:
    """LISTEN for outbox commits on a dedicated connection; emit new events to this node."""

    def __init__(self, database_url: str, emitter: Emitter):
        self.database_url = database_url
        self.emitter = emitter
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.listening = asyncio.Event()
        # Database time the next read starts from (minus the margin); None before the first.
        self._since: datetime | None = None
        # Emitted event id -> database time of the read that first returned it.
        self._emitted: dict[str, datetime] = {}

    async def start(self) -> None:
        """Start listening in the background (the database may come later)."""
        self._task = asyncio.create_task(self._run(), name="alert-relay")

    async def close(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        delay = 0.5
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await connect(self.database_url)
                await conn.add_listener(ALERT_CHANNEL, self._on_notify)
                # A connection closed by the server wakes the loop, whose read then fails.
                conn.add_termination_listener(self._on_terminated)
                if self._since is None:
                    # A fresh node: what was committed before it relays went to the clients
                    # of the nodes running then, so it counts as emitted (the margin would
                    # otherwise replay the last minute to clients that connect now).
                    self._since = await conn.fetchval(queries["outbox_now"])
                    await self._read(conn, emit=False)
                # Read once right away: what was committed while the connection was down.
                await self._read(conn)
                self.listening.set()
                logger.info("relaying job alerts", extra={"action": "alert_relay_listening"})
                delay = 0.5
                while True:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), KEEPALIVE_SECONDS)
                    self._wake.clear()
                    await self._read(conn)
            except _UNAVAILABLE as exc:
                if self.listening.is_set():
                    logger.warning(
                        "alert relay lost its connection (it catches up when it is back): %s",
                        exc,
                        extra={"action": "alert_relay_lost"},
                    )
                self.listening.clear()
            except Exception:
                logger.exception("alert relay failed", extra={"action": "alert_relay_error"})
                self.listening.clear()
            finally:
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    def _on_terminated(self, conn: Any) -> None:
        self._wake.set()

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        # Only a wake-up: the payload is whatever the sender wrote (see the module docstring).
        self._wake.set()

    async def _read(self, conn: asyncpg.Connection, *, emit: bool = True) -> None:
        """Emit the events created since the previous read that this node has not emitted.

        With `emit=False` they are only recorded as emitted.
        """
        assert self._since is not None
        row = await conn.fetchrow(
            queries["outbox_recent"],
            self._since - CATCH_UP_MARGIN,
            CATCH_UP_MAX,
            timeout=QUERY_TIMEOUT,
        )
        scanned_at: datetime = row["scanned_at"]
        for event in json.loads(row["events"]):
            # By the event's uuid: a bigint id can come again (a restored or truncated table).
            if event["uuid"] in self._emitted:
                continue
            self._emitted[event["uuid"]] = scanned_at
            if not emit:
                continue
            data = event["data"]
            logger.debug("relaying %s", data["type"], extra={"action": "alert_relayed"})
            await self.emitter.broadcast(ALERT_EVENT, [data], streamers=True, local=True)
        self._since = scanned_at
        horizon = self._since - CATCH_UP_MARGIN
        for event_id in [i for i, seen in self._emitted.items() if seen < horizon]:
            del self._emitted[event_id]
