"""The rollups job: recompute exactly the 1-minute, 1-hour and 1-day buckets that changed."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from jobs.base import JobContext
from streamstats.sql import queries

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refreshed:
    """What one refresh did: rollup rows deleted plus written, buckets recomputed per granularity.

    A recomputed bucket's row is deleted and written again, so it counts twice in `rows`.
    """

    rows: int
    minutes: int
    hours: int
    days: int


async def refresh(conn: asyncpg.Connection, now: datetime) -> Refreshed:
    """Recompute the invalidated buckets that are complete, in the caller's transaction.

    The caller holds the rollups lock (the job runner's, or `rollups_lock` inside the
    transaction). Buckets that are not complete at `now` stay pending: the views compute them
    live, and materializing them now would only be redone on the next refresh.
    """
    await conn.execute(queries["rollups_keys_table"])
    done: dict[str, asyncpg.Record] = {}
    rows = 0
    for step, claim in (("1m", "minutes"), ("1h", "hours"), ("1d", "days")):
        # The minutes step queues hours and days, so it goes first and they see its queue.
        await conn.execute(queries["rollups_keys_clear"])
        await conn.execute(queries[f"rollups_claim_{claim}"], now)
        await conn.execute(queries["rollups_keys_analyze"])
        rows += await conn.fetchval(queries[f"rollups_forget_{step}"])
        done[step] = await conn.fetchrow(queries[f"rollups_store_{step}"])
        rows += done[step]["rows"]
    return Refreshed(
        rows=rows,
        minutes=done["1m"]["buckets"],
        hours=done["1h"]["buckets"],
        days=done["1d"]["buckets"],
    )


# The granularities of viewer experience, in refresh order: minutes queue their hours and days.
VIEWER_GRANULARITIES = ("1m", "1h", "1d")


async def refresh_viewer_experience(conn: asyncpg.Connection, now: datetime) -> Refreshed:
    """Recompute the changed viewer experience buckets that are complete, like `refresh`."""
    done = {}
    for granularity in VIEWER_GRANULARITIES:
        done[granularity] = await conn.fetchrow(queries["viewer_rollups_refresh"], granularity, now)
    return Refreshed(
        rows=sum(record["rows"] for record in done.values()),
        minutes=done["1m"]["buckets"],
        hours=done["1h"]["buckets"],
        days=done["1d"]["buckets"],
    )


async def run(ctx: JobContext) -> int:
    """Refresh all rollups in one transaction; returns the rollup rows written or deleted."""
    async with ctx.pool.acquire() as conn:
        async with conn.transaction():
            done = await refresh(conn, ctx.now)
            viewers = await refresh_viewer_experience(conn, ctx.now)
        # The log churns (every sample adds to it, every refresh empties it): without this the
        # views' probes into it wade through dead entries until autovacuum comes by, and the
        # planner misjudges a table that swings between empty and hundreds of thousands of rows.
        await conn.execute(queries["rollups_vacuum"])
        await conn.execute(queries["viewer_rollups_vacuum"])
    logger.info(
        "refreshed rollups: %d minute, %d hour, %d day buckets; viewer experience: %d, %d, %d",
        done.minutes,
        done.hours,
        done.days,
        viewers.minutes,
        viewers.hours,
        viewers.days,
        extra={
            "action": "refresh_rollups",
            "minutes": done.minutes,
            "hours": done.hours,
            "days": done.days,
            "rows": done.rows,
            "viewer_rows": viewers.rows,
        },
    )
    return done.rows + viewers.rows
