"""Design (c): the real ingest app, but each update is its own INSERT before the acknowledgement.

Same handlers, auth and validation as `streamstats serve`; only the batch writer is swapped for
one that runs the writer's statement for a single row per event, on the same connection pool
(`STREAMSTATS_POOL_SIZE` connections), so the difference measured is the write design alone.

    DATABASE_URL=postgresql:///streamstats_bench_ingest STREAMSTATS_JWT_SECRET=... \
        .venv/bin/python bench/naive_server.py --port 8103
"""

from __future__ import annotations

import argparse
import asyncio

import asyncpg

import ingest.app
from ingest.errors import Unavailable
from ingest.rows import StatsRow
from ingest.server import serve
from streamstats import logs
from streamstats.settings import Settings, load_settings
from streamstats.sql import queries


class NaiveWriter:
    """The BatchWriter interface, one transaction per row."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool):
        self.pool = pool
        self.closed = False
        self.inflight: set[asyncio.Future[bool]] = set()
        self.healthy = True
        self.depth = 0

    async def start(self) -> None:
        pass

    def submit(self, row: StatsRow) -> asyncio.Future[bool]:
        if self.closed:
            raise Unavailable("shutting down")
        future = asyncio.ensure_future(self._insert(row))
        self.inflight.add(future)
        future.add_done_callback(self.inflight.discard)
        return future

    async def _insert(self, row: StatsRow) -> bool:
        async with self.pool.acquire() as conn:
            inserted = await conn.fetch(queries["write_batch"], *([value] for value in row))
        return not inserted

    async def close(self) -> None:
        self.closed = True
        if self.inflight:
            await asyncio.gather(*self.inflight, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8103)
    args = parser.parse_args()
    settings = load_settings().model_copy(update={"port": args.port})
    logs.configure(settings.log_format, "WARNING")
    ingest.app.BatchWriter = NaiveWriter  # type: ignore[misc,assignment]
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
