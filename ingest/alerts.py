"""Alerts at the ingest service: threshold alerts after each commit, and the relay to clients.

Threshold alerts (packet loss, fps): a per-batch hook (ingest/hooks.py) feeds each committed
sample, in commit order, to `AlertTracker`, which counts streaks in memory; whether an episode
is open is decided by `stream_alerts` alone. Raising is an insert that a partial unique index makes
idempotent, clearing is an update of the open row. So an ingest restart, or a streamer reconnecting
to another node, never opens a second episode nor sends a second `raised`: the transaction that
changes the episode also writes the transition to the outbox (streamstats/outbox.py), and from
there every node's relay (ingest/relay.py) emits it to its own clients, as it does job alerts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Protocol

import asyncpg

from analytics.alerts import AlertTracker, Transition, alert_payload, default_rules
from ingest.hooks import Batch, CommitHooks
from ingest.relay import AlertRelay, Emitter
from streamstats import outbox
from streamstats.db import CONNECTION_ERRORS
from streamstats.errors import DatabaseUnavailable
from streamstats.settings import Settings
from streamstats.sql import queries

logger = logging.getLogger(__name__)

# A stream not heard from for this long has ended: its streaks are forgotten.
FORGET_AFTER = timedelta(minutes=10)
FORGET_EVERY = 10_000  # samples between sweeps
# One raise or clear gives up after this long (the next sample of the streak retries it):
# during an outage the hook's lane must not wait on the database indefinitely.
APPLY_TIMEOUT = 5.0
_UNAVAILABLE: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, DatabaseUnavailable)


class Host(Protocol):
    """What the threshold alerts need of the ingest node."""

    @property
    def settings(self) -> Settings: ...

    @property
    def pool(self) -> asyncpg.Pool | None: ...


class Registry(Host, Emitter, Protocol):
    """Where `install` hangs the alerts: the per-batch hooks and the lifecycle lists."""

    @property
    def commit_hooks(self) -> CommitHooks: ...

    @property
    def on_start(self) -> list[Callable[[], Awaitable[None]]]: ...

    @property
    def on_close(self) -> list[Callable[[], Awaitable[None]]]: ...


def install(app: Registry) -> None:
    """Evaluate threshold alerts after each commit and relay the outbox to this node's clients."""
    thresholds = ThresholdAlerts(app)
    relay = AlertRelay(app.settings.database_url, app)
    app.commit_hooks.add_async(thresholds.on_commit, "alerts")
    app.on_start.append(relay.start)
    app.on_close.append(relay.close)


class ThresholdAlerts:
    """Packet-loss and fps alerts from committed samples (one streak state per stream)."""

    def __init__(self, host: Host):
        settings = host.settings
        self.host = host
        self.tracker = AlertTracker(
            default_rules(settings.alert_packet_loss_pct, settings.alert_fps_min),
            raise_after=settings.alert_raise_after,
            clear_after=settings.alert_clear_after,
        )
        self._seen = 0

    async def on_commit(self, batch: Batch) -> None:
        """Per-batch hook: count each new sample in commit order, apply what it proposes.

        Run on its own lane (one batch at a time), so the transitions of a stream are applied
        in the order its samples were committed. A `clear` is proposed after every good streak,
        also for streams that have nothing open (every stream, once, when it starts or when
        this node restarts): one read per batch finds which of them have an episode open, and
        only those are cleared, in a transaction each.
        """
        proposed: list[tuple[Any, Transition]] = []
        for committed in batch:
            if committed.duplicate:
                continue
            row = committed.row
            transitions = self.tracker.observe(
                row.stream_id, row.time, {"packet_loss_pct": row.packet_loss_pct, "fps": row.fps}
            )
            self._seen += 1
            if self._seen % FORGET_EVERY == 0:
                self.tracker.forget_before(row.time - FORGET_AFTER)
            proposed.extend((row.stream_id, t) for t in transitions)
        if not proposed:
            return
        is_open = await self._open_episodes([s for s, t in proposed if t.kind == "clear"])
        for stream_id, transition in proposed:
            key = (stream_id, transition.rule.type)
            if is_open is not None:
                if transition.kind == "raise":
                    # Open after this (or maybe, if its COMMIT's answer is lost): a later clear
                    # in the batch runs, a no-op if nothing is open.
                    is_open.add(key)
                elif key not in is_open:
                    continue  # nothing open to clear
            await self._apply(stream_id, transition)

    async def _open_episodes(self, stream_ids: list[Any]) -> set[tuple[Any, str]] | None:
        """The (stream, type) pairs with an open episode among these streams; None if unknown."""
        if not stream_ids:
            return set()
        pool = self.host.pool
        if pool is None:
            return None
        try:
            async with asyncio.timeout(APPLY_TIMEOUT), pool.acquire() as conn:
                records = await conn.fetch(queries["alerts_open"], list(set(stream_ids)))
        except (*_UNAVAILABLE, asyncpg.PostgresError, TimeoutError):
            return None  # each clear then tries (and retries) on its own
        return {(r["stream_id"], r["type"]) for r in records}

    async def _apply(self, stream_id: Any, transition: Transition) -> None:
        pool = self.host.pool
        if pool is None:
            self.tracker.retry(stream_id, transition)
            return
        try:
            async with asyncio.timeout(APPLY_TIMEOUT), pool.acquire() as conn, conn.transaction():
                payload = await self._change_episode(conn, stream_id, transition)
                if payload is not None:
                    # With the episode change or not at all; the relay emits it after commit.
                    await outbox.publish(conn, payload)
        except (*_UNAVAILABLE, asyncpg.PostgresError, TimeoutError) as exc:
            # Any failure (connection lost, lock or statement timeout, a refused write) leaves
            # the change to the next sample of the streak.
            self.tracker.retry(stream_id, transition)
            logger.warning(
                "could not %s %s alert of stream %s (next sample retries): %s",
                transition.kind,
                transition.rule.type,
                stream_id,
                exc,
                extra={"action": "alert_unavailable", "stream_id": str(stream_id)},
            )
            return
        if payload is not None:
            self._log(stream_id, transition, payload)

    async def _change_episode(
        self, conn: asyncpg.Connection, stream_id: Any, transition: Transition
    ) -> dict[str, Any] | None:
        """Open or close the episode; its `stream:alert` payload, or None if nothing changed."""
        rule = transition.rule
        if transition.kind == "raise":
            record = await conn.fetchrow(
                queries["alert_raise"],
                stream_id,
                rule.type,
                transition.value,
                rule.threshold,
                transition.since,
            )
            if record is None:
                return None  # already open
            raised_at = record["raised_at"]
            return alert_payload(
                stream_id, rule.type, "raised", transition.value, rule.threshold, raised_at
            )
        record = await conn.fetchrow(queries["alert_clear"], stream_id, rule.type, transition.since)
        if record is None:
            return None  # nothing open
        return alert_payload(
            stream_id,
            rule.type,
            "cleared",
            transition.value,
            record["threshold"],
            record["raised_at"],
            record["cleared_at"],
        )

    def _log(self, stream_id: Any, transition: Transition, payload: dict[str, Any]) -> None:
        rule = transition.rule
        extra = {"stream_id": str(stream_id), "type": rule.type, "value": transition.value}
        if transition.kind == "raise":
            logger.warning(
                "%s on stream %s: %g (threshold %g) since %s",
                rule.type,
                stream_id,
                transition.value,
                rule.threshold,
                payload["startedAt"],
                extra={**extra, "action": "alert_raised"},
            )
        else:
            logger.info(
                "%s on stream %s cleared at %s",
                rule.type,
                stream_id,
                payload["endedAt"],
                extra={**extra, "action": "alert_cleared"},
            )
