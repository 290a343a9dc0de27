"""`streamstats run`: migrate, then the ingest server and the job runner in one process.

The way to run stream-stats on one machine. With `--simulate N`, N simulated streamers (and
viewers) feed it, so a newcomer sees rows, rollups, alerts and reports without writing a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from typing import TYPE_CHECKING

from streamstats import migrations
from streamstats.db import create_pool
from streamstats.settings import Settings

if TYPE_CHECKING:
    from jobs.runner import JobScheduler

logger = logging.getLogger(__name__)

# Lifetime of the moderator token in the dashboard link `run` prints.
DASHBOARD_TTL_HOURS = 12
# How long to wait for the server to answer before starting the simulator anyway.
STARTUP_TIMEOUT = 30.0

FIRST_SQL = (
    "SELECT bucket, stream_id, samples, round(bitrate_kbps_avg) AS kbps, "
    "round(latency_ms_p95) AS p95_ms, poor_samples FROM stream_stats_1m "
    "WHERE bucket > now() - interval '15 minutes' ORDER BY bucket DESC, stream_id LIMIT 20;"
)


def public_url(settings: Settings) -> str:
    """Where clients connect (a wildcard listen address is reached on localhost)."""
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def dashboard_link(settings: Settings, token: str) -> str:
    """The dashboard's address signed in with `token`, carried in the fragment.

    A fragment is never sent in a request, so the token stays out of the server's URLs and logs.
    """
    return f"{public_url(settings)}/dashboard/#token={token}"


def redact(url: str) -> str:
    """A database URL without its password."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def banner(settings: Settings, *, applied: int, simulate: int, dashboard: str) -> str:
    """What a newcomer needs on start: the dashboard, a token, the first SQL, the reports."""
    url = public_url(settings)
    reports = settings.reports_dir.resolve()
    database = redact(settings.database_url)
    migrated = f"{applied} migration(s) applied" if applied else "schema up to date"
    lines = [
        "",
        "stream-stats is running",
        f"  live dashboard      {dashboard}",
        f"                      (a moderator for {DASHBOARD_TTL_HOURS} h; another link: "
        "streamstats token --role moderator --dashboard)",
        f"  ingest (Socket.IO)  {url}   health {url}/healthz  {url}/readyz  metrics {url}/metrics",
        f"  database            {database}   ({migrated})",
        "  token for a client  streamstats token --role moderator",
        "                      streamstats token --role streamer --stream <stream uuid>",
        f'  first SQL           psql "{database}" -c "{FIRST_SQL}"',
        f"  reports             {reports}/YYYY-MM-DD/index.html (written daily by the job runner;",
        "                      on demand: streamstats report --day YYYY-MM-DD)",
    ]
    if simulate:
        lines.append(f"  simulator           {simulate} streamers feeding {url} (progress below)")
    lines += ["Ctrl-C stops: accepted updates are stored and acknowledged first.", ""]
    return "\n".join(lines)


async def wait_until_serving(settings: Settings, timeout: float = STARTUP_TIMEOUT) -> bool:
    """Poll GET /healthz on the server's own address until it answers 200."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    request = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            reader, writer = await asyncio.open_connection(host, settings.port)
            try:
                writer.write(request)
                status = await asyncio.wait_for(reader.readline(), 2)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            if b" 200 " in status:
                return True
        except (OSError, TimeoutError):
            pass
        await asyncio.sleep(0.1)
    return False


async def run(settings: Settings, *, simulate: int = 0) -> None:
    """Migrate, serve and run the jobs until SIGTERM/SIGINT; optionally feed simulated streamers."""
    from ingest.server import serve
    from jobs.runner import start_scheduler

    settings.require_jwt_secret()
    applied = await migrations.migrate(settings.database_url)
    for migration in applied:
        logger.info("applied %s", migration.label, extra={"action": "migrated"})
    pool = await create_pool(settings.database_url, min_size=1, max_size=settings.pool_size)
    scheduler: JobScheduler | None = None
    announce: asyncio.Task[None] | None = None
    try:
        scheduler = await start_scheduler(settings, pool)
        announce = asyncio.create_task(_announce(settings, len(applied), simulate))
        # serve() returns after SIGTERM/SIGINT, once every accepted update is acknowledged.
        await serve(settings)
    finally:
        if announce is not None:
            announce.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await announce
        if scheduler is not None:
            await scheduler.stop()
        await pool.close()


async def _announce(settings: Settings, applied: int, simulate: int) -> None:
    """Once the server answers: print the banner, then run the simulator if asked."""
    if not await wait_until_serving(settings):
        logger.error("the server did not start listening", extra={"action": "startup_failed"})
        return
    from ingest.auth import mint_token

    token = mint_token(
        settings.require_jwt_secret(),
        role="moderator",
        sub="dashboard",
        ttl=DASHBOARD_TTL_HOURS * 3600,
    )
    link = dashboard_link(settings, token)
    print(banner(settings, applied=applied, simulate=simulate, dashboard=link), flush=True)
    if simulate:
        from ingest.simulate import simulate as run_simulation

        await run_simulation(
            settings,
            url=public_url(settings),
            streams=simulate,
            viewers=simulate * 3,
            duration=float("inf"),
            interval=5.0,
        )
