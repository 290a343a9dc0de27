"""The read-only analyst role sees every table and view the analyst guide names, and writes none."""

import asyncpg
import pytest

READABLE = (
    "stream_stats",
    "stream_latest",
    "stream_stats_1m",
    "stream_stats_1h",
    "stream_stats_1d",
    "stream_alerts",
    "bitrate_drops",
    "stream_reports",
    "job_runs",
    "alert_events",
)


@pytest.mark.parametrize("relation", READABLE)
async def test_the_analyst_role_may_read(conn, relation):
    async with conn.transaction():
        await conn.execute("SET LOCAL ROLE streamstats_analyst")
        assert await conn.fetchval(f"SELECT count(*) FROM {relation}") == 0


@pytest.mark.parametrize(
    "table", ["stream_alerts", "bitrate_drops", "stream_reports", "job_runs", "alert_events"]
)
async def test_the_analyst_role_may_not_change_anything(conn, table):
    async with conn.transaction():
        await conn.execute("SET LOCAL ROLE streamstats_analyst")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(f"DELETE FROM {table}")


@pytest.mark.parametrize("table", ["webhook_endpoints", "webhook_deliveries"])
async def test_the_analyst_role_may_not_read_webhook_endpoints(conn, table):
    # Endpoint URLs can carry a token (Slack's do).
    async with conn.transaction():
        await conn.execute("SET LOCAL ROLE streamstats_analyst")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetchval(f"SELECT count(*) FROM {table}")
