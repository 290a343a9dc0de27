"""Advisory locks that live exactly as long as a job run, whatever runner holds them."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg

from streamstats import db
from streamstats.sql import queries

logger = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def job_lock(url: str, job: str) -> AsyncIterator[asyncpg.Connection | None]:
    """Hold job `job`'s session advisory lock for the block; yields None if another holds it.

    The lock sits on a dedicated connection opened for the run and closed after it, not on a
    pooled one: asyncpg resets a connection returned to its pool with
    `pg_advisory_unlock_all()`, so a lock taken on a pooled connection silently ends when that
    connection goes back, and a pooled lock connection held per job could starve the pool the
    jobs themselves draw from. If the runner dies, the session ends and the server drops the lock.
    The yielded connection also records the run in `job_runs`.
    """
    conn = await db.connect(url)
    try:
        if not await conn.fetchval(queries["job_try_lock"], job):
            yield None
            return
        try:
            yield conn
        finally:
            # Closing the connection below would release it too; unlocking first says so in
            # the server log and keeps the lock's end explicit.
            with contextlib.suppress(*db.CONNECTION_ERRORS, asyncpg.PostgresError):
                await conn.fetchval(queries["job_unlock"], job)
    finally:
        await conn.close()
