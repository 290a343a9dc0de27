"""The retention job: drop old raw chunks and old 1-minute rollups; hours and days are kept."""

from __future__ import annotations

import logging

from jobs.base import JobContext
from jobs.rollups import refresh, refresh_viewer_experience
from streamstats.sql import queries

logger = logging.getLogger(__name__)


async def run(ctx: JobContext) -> int:
    """Drop raw chunks past raw_retention; 1-minute rollups, advice and alert events past theirs."""
    raw_before = ctx.now - ctx.settings.raw_retention
    minutes_before = ctx.now - ctx.settings.rollup_1m_retention
    async with ctx.pool.acquire() as conn, conn.transaction():
        # Materialize whatever is still pending before its raw rows go: dropping chunks fires
        # no row trigger, and a bucket left pending would be computed live from rows that no
        # longer exist. The rollups lock keeps a concurrent refresh out until we commit.
        await conn.execute(queries["rollups_lock"])
        await refresh(conn, ctx.now)
        await refresh_viewer_experience(conn, ctx.now)
        chunks = await conn.fetchval(queries["retention_drop_raw"], raw_before)
        chunks += await conn.fetchval(queries["viewer_retention_drop_raw"], raw_before)
        status = await conn.execute(queries["rollups_delete_1m_before"], minutes_before)
        viewer_status = await conn.execute(
            queries["viewer_rollups_delete_1m_before"], minutes_before
        )
        # Advice is kept as long as the 1-minute rollups it is read next to.
        advice = await conn.execute(queries["advice_delete_before"], minutes_before)
        # So are alert events and their webhook deliveries, unless one is still being delivered.
        events = await conn.execute(queries["outbox_delete_before"], minutes_before)
    deleted = int(status.split()[-1]) + int(viewer_status.split()[-1])
    advice_deleted = int(advice.split()[-1])
    events_deleted = int(events.split()[-1])
    logger.info(
        "retention: dropped %d raw chunks before %s, %d one-minute rollups, %d advice and %d "
        "alert events before %s",
        chunks,
        raw_before,
        deleted,
        advice_deleted,
        events_deleted,
        minutes_before,
        extra={
            "action": "retention",
            "raw_before": raw_before,
            "chunks": chunks,
            "rollups_1m_deleted": deleted,
            "advice_deleted": advice_deleted,
            "alert_events_deleted": events_deleted,
        },
    )
    return int(chunks) + deleted + advice_deleted + events_deleted
