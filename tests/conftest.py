"""Fixtures: a real PostgreSQL + TimescaleDB database per test session, cleaned before each test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

import asyncpg
import pytest

from streamstats import migrations
from tests import dbutil
from tests.servers import ServerProcess


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A server URL the tests may create databases on (see tests/dbutil.py for how it is found)."""
    with dbutil.server_url() as url:
        if url is None:
            pytest.fail(dbutil.HOW_TO, pytrace=False)
        yield url


@pytest.fixture
def empty_database(pg_server: str) -> Iterator[str]:
    """A brand-new database without any of our schema, dropped afterwards."""
    url = dbutil.create_database(pg_server, "streamstats_empty")
    yield url
    dbutil.drop_database(url)


@pytest.fixture(scope="session")
def migrated_database(pg_server: str) -> Iterator[str]:
    """One migrated database for the whole session, dropped at its end."""
    url = dbutil.create_database(pg_server)
    asyncio.run(migrations.migrate(url))
    yield url
    dbutil.drop_database(url)


@pytest.fixture
def database_url(migrated_database: str) -> str:
    """The session database, emptied of rows before the test."""
    asyncio.run(dbutil.clean(migrated_database))
    return migrated_database


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


@pytest.fixture
def make_settings(database_url: str, tmp_path) -> Callable[..., object]:
    """Settings for a test, on the test database, with overrides."""
    from streamstats.settings import Settings

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "database_url": database_url,
            "jwt_secret": "test-secret-" + "x" * 32,
            "reports_dir": tmp_path / "reports",
        }
        values.update(overrides)
        return Settings.model_validate(values)

    return make


@pytest.fixture
def start_server(database_url: str, tmp_path) -> Iterator[Callable[..., ServerProcess]]:
    """Start real `streamstats serve` processes on the test database; all stopped afterwards."""
    started: list[ServerProcess] = []

    def start(**kwargs: object) -> ServerProcess:
        server = ServerProcess(database_url, tmp_path, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()
