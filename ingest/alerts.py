"""Alerts at the ingest service: threshold alerts after each commit, and job alerts relayed.

Threshold alerts (packet loss, fps): `AlertTracker` counts streaks in memory; whether an episode
is open is decided by `stream_alerts` alone. Raising is an insert that a partial unique index makes
idempotent, clearing is an update of the open row. So an ingest restart, or a streamer reconnecting
to another node, never opens a second episode nor sends a second `raised`: the node that commits
the transition emits it, through `emit_to_stream` (with REDIS_URL, python-socketio's Redis manager
carries it to every node, each delivering to its own clients once).

Job alerts (bitrate drops): the jobs process NOTIFYs `ALERT_CHANNEL` in the transaction that stores
the episode. Every ingest node LISTENs on its own connection and emits to the clients connected
to it only (`local=True`, which skips the Redis manager's publish): with N nodes, each client is
connected to one node and gets one copy; NOTIFY reaches every listening node once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import asyncpg

from analytics.alerts import ALERT_CHANNEL, AlertTracker, Transition, alert_payload, default_rules
from ingest.rows import StatsRow
from streamstats.db import CONNECTION_ERRORS, connect
from streamstats.errors import DatabaseUnavailable
from streamstats.sql import queries

if TYPE_CHECKING:
    from ingest.app import IngestApp

logger = logging.getLogger(__name__)

ALERT_EVENT = "stream:alert"
# A stream not heard from for this long has ended: its streaks are forgotten.
FORGET_AFTER = timedelta(minutes=10)
FORGET_EVERY = 10_000  # samples between sweeps
# The LISTEN connection is checked this often; a dead one is replaced.
KEEPALIVE_SECONDS = 15.0
RECONNECT_MAX_SECONDS = 10.0
_UNAVAILABLE: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, DatabaseUnavailable)


def install(app: IngestApp) -> None:
    """Evaluate threshold alerts after each commit and relay job alerts to this node's clients."""
    thresholds = ThresholdAlerts(app)
    relay = AlertRelay(app)
    app.after_commit.append(thresholds.on_commit)
    app.on_start.append(relay.start)
    app.on_close.append(relay.close)


@dataclass
class _CountedLock:
    """A per-stream lock, dropped when nobody holds or awaits it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class ThresholdAlerts:
    """Packet-loss and fps alerts from committed samples (one streak state per stream)."""

    def __init__(self, app: IngestApp):
        settings = app.settings
        self.app = app
        self.tracker = AlertTracker(
            default_rules(settings.alert_packet_loss_pct, settings.alert_fps_min),
            raise_after=settings.alert_raise_after,
            clear_after=settings.alert_clear_after,
        )
        # Transitions of one stream are applied in the order they were proposed.
        self._locks: dict[Any, _CountedLock] = {}
        self._seen = 0

    async def on_commit(self, row: StatsRow, duplicate: bool) -> None:
        """After-commit hook: count the sample, apply a raise or clear it proposes."""
        if duplicate:
            return
        transitions = self.tracker.observe(
            row.stream_id, row.time, {"packet_loss_pct": row.packet_loss_pct, "fps": row.fps}
        )
        self._seen += 1
        if self._seen % FORGET_EVERY == 0:
            self.tracker.forget_before(row.time - FORGET_AFTER)
        if not transitions:
            return
        key = row.stream_id
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = _CountedLock()
        lock.users += 1
        try:
            async with lock.lock:
                for transition in transitions:
                    await self._apply(row.stream_id, transition)
        finally:
            lock.users -= 1
            if lock.users == 0:
                del self._locks[key]

    async def _apply(self, stream_id: Any, transition: Transition) -> None:
        rule = transition.rule
        pool = self.app.pool
        if pool is None:
            self.tracker.retry(stream_id, transition)
            return
        try:
            async with pool.acquire() as conn:
                if transition.kind == "raise":
                    record = await conn.fetchrow(
                        queries["alert_raise"],
                        stream_id,
                        rule.type,
                        transition.value,
                        rule.threshold,
                        transition.since,
                    )
                else:
                    record = await conn.fetchrow(
                        queries["alert_clear"], stream_id, rule.type, transition.since
                    )
        except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
            # Any failure (connection lost, lock or statement timeout, a refused write) leaves
            # the change to the next sample of the streak.
            self.tracker.retry(stream_id, transition)
            logger.warning(
                "could not %s %s alert of stream %s (next sample retries): %s",
                transition.kind,
                rule.type,
                stream_id,
                exc,
                extra={"action": "alert_unavailable", "stream_id": str(stream_id)},
            )
            return
        if record is None:
            return  # already open (raise) or nothing open (clear): nothing to announce
        extra = {"stream_id": str(stream_id), "type": rule.type, "value": transition.value}
        if transition.kind == "raise":
            logger.warning(
                "%s on stream %s: %g (threshold %g) since %s",
                rule.type,
                stream_id,
                transition.value,
                rule.threshold,
                record["raised_at"].isoformat(),
                extra={**extra, "action": "alert_raised"},
            )
            payload = alert_payload(
                stream_id,
                rule.type,
                "raised",
                transition.value,
                rule.threshold,
                record["raised_at"],
            )
        else:
            logger.info(
                "%s on stream %s cleared at %s",
                rule.type,
                stream_id,
                record["cleared_at"].isoformat(),
                extra={**extra, "action": "alert_cleared"},
            )
            payload = alert_payload(
                stream_id,
                rule.type,
                "cleared",
                transition.value,
                record["threshold"],
                record["raised_at"],
                record["cleared_at"],
            )
        await self.app.emit_to_stream(ALERT_EVENT, payload, str(stream_id), streamers=True)


class AlertRelay:
    """LISTEN for job alerts on a dedicated connection; emit each to this node's clients."""

    def __init__(self, app: IngestApp):
        self.app = app
        self._task: asyncio.Task[None] | None = None
        self._emits: set[asyncio.Task[None]] = set()
        self.listening = asyncio.Event()

    async def start(self) -> None:
        """Start listening in the background (the database may come later)."""
        self._task = asyncio.create_task(self._run(), name="alert-relay")

    async def close(self) -> None:
        """Stop listening; wait for emits in progress."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._emits:
            await asyncio.gather(*list(self._emits), return_exceptions=True)

    async def _run(self) -> None:
        delay = 0.5
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await connect(self.app.settings.database_url)
                await conn.add_listener(ALERT_CHANNEL, self._on_notify)
                self.listening.set()
                logger.info("relaying job alerts", extra={"action": "alert_relay_listening"})
                delay = 0.5
                while True:
                    await asyncio.sleep(KEEPALIVE_SECONDS)
                    # An idle socket can die silently; a query notices.
                    await conn.fetchval("SELECT 1", timeout=5)
            except _UNAVAILABLE as exc:
                if self.listening.is_set():
                    logger.warning(
                        "alert relay lost its connection (job alerts until it is back are "
                        "missed): %s",
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

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        try:
            data = json.loads(payload)
            stream_id = str(data["streamId"])
        except (ValueError, KeyError, TypeError):
            logger.warning("ignoring a malformed alert notification: %.200s", payload)
            return
        logger.debug("relaying %s", data.get("type"), extra={"action": "alert_relayed"})
        self._spawn(
            self.app.emit_to_stream(ALERT_EVENT, data, stream_id, streamers=True, local=True)
        )

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._emits.add(task)
        task.add_done_callback(self._emits.discard)
