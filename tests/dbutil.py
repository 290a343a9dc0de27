"""Test databases on a real PostgreSQL + TimescaleDB server: find one, create, clean, drop."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

HOW_TO = (
    "no database for the tests: set TEST_DATABASE_URL (or DATABASE_URL) to a PostgreSQL server "
    "with TimescaleDB where this user may create databases, e.g. run `scripts/provision-db.sh` "
    "and `export DATABASE_URL=postgresql:///streamstats`; or install a Docker engine and "
    "`pip install 'stream-stats[docker]'` to use a container"
)

# Tables the tests never clean: the migrations' own record.
KEEP = ("schema_migrations",)


def with_database(url: str, name: str) -> str:
    """The same server URL naming another database (keeps `postgresql:///db` socket URLs intact)."""
    parts = urllib.parse.urlsplit(url)
    rest = url[len(parts.scheme) + 3 + len(parts.netloc) :]
    tail = rest[len(parts.path) :]
    return f"{parts.scheme}://{parts.netloc}/{name}{tail}"


def _docker_engine() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@contextmanager
def server_url() -> Iterator[str | None]:
    """A URL on a server the tests may create databases on, or None when there is none."""
    url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    if _docker_engine():
        try:
            from testcontainers.postgres import PostgresContainer
        except ImportError:
            yield None
            return
        with PostgresContainer("timescale/timescaledb:latest-pg15", driver=None) as container:
            yield container.get_connection_url()
        return
    yield None


async def _admin(url: str, *sql: str) -> None:
    conn = await asyncpg.connect(with_database(url, "postgres"))
    try:
        for statement in sql:
            await conn.execute(statement)
    finally:
        await conn.close()


def create_database(server: str, prefix: str = "streamstats_test") -> str:
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    asyncio.run(_admin(server, f'CREATE DATABASE "{name}"'))
    return with_database(server, name)


def drop_database(url: str) -> None:
    name = urllib.parse.urlsplit(url).path.lstrip("/")
    asyncio.run(_admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


CLEAN = """
SELECT format('%I.%I', schemaname, tablename)
FROM pg_tables
WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
  AND schemaname NOT LIKE '\\_timescaledb%' AND schemaname NOT LIKE 'timescaledb\\_%'
  AND tablename <> ALL($1::text[])
"""


async def clean(url: str) -> None:
    """Empty every project table, so each test starts from the migrated, empty schema."""
    conn = await asyncpg.connect(url)
    try:
        tables = [row[0] for row in await conn.fetch(CLEAN, list(KEEP))]
        if tables:
            await conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()
