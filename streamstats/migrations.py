"""Numbered, run-once schema migrations recorded with a checksum in `schema_migrations`."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from streamstats import db
from streamstats.errors import MigrationError
from streamstats.sql import sql_root

logger = logging.getLogger(__name__)

FILENAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
# Any constant both runners agree on: serializes concurrent `migrate` calls.
LOCK_KEY = 0x5354_4D47  # "STMG"

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


def discover(directory: Path | None = None) -> list[Migration]:
    """The migrations in `directory` (default `sql/migrations`), in order; bad names are errors."""
    directory = directory or sql_root() / "migrations"
    found: dict[int, Migration] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix != ".sql":
            continue
        match = FILENAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_description.sql")
        version = int(match["version"])
        if version in found:
            raise MigrationError(f"{path.name}: version {version:04d} is used twice")
        found[version] = Migration(version, match["name"], path.read_text())
    return [found[v] for v in sorted(found)]


async def applied(conn: asyncpg.Connection) -> dict[int, asyncpg.Record]:
    await conn.execute(CREATE_TABLE)
    rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
    return {row["version"]: row for row in rows}


def check(known: list[Migration], done: dict[int, asyncpg.Record]) -> list[Migration]:
    """The migrations still to apply; refuses edited or unknown applied ones."""
    by_version = {m.version: m for m in known}
    for version, row in sorted(done.items()):
        migration = by_version.get(version)
        if migration is None:
            raise MigrationError(
                f"the database has migration {version:04d}_{row['name']}, which this version of "
                "stream-stats does not know: it was migrated by a newer release"
            )
        if migration.checksum != row["checksum"]:
            raise MigrationError(
                f"{migration.label}.sql was edited after it was applied (checksum differs); "
                "restore the file and put the change in a new migration"
            )
    return [m for m in known if m.version not in done]


async def migrate(url: str, directory: Path | None = None) -> list[Migration]:
    """Apply what is missing, each migration in its own transaction; returns what was applied."""
    known = discover(directory)
    conn = await db.connect(url)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
        try:
            pending = check(known, await applied(conn))
            for migration in pending:
                logger.info(
                    "applying migration %s",
                    migration.label,
                    extra={"action": "apply_migration", "migration": migration.label},
                )
                try:
                    async with conn.transaction():
                        await conn.execute(migration.sql)
                        await conn.execute(
                            "INSERT INTO schema_migrations (version, name, checksum) "
                            "VALUES ($1, $2, $3)",
                            migration.version,
                            migration.name,
                            migration.checksum,
                        )
                except asyncpg.PostgresError as exc:
                    raise MigrationError(f"{migration.label}.sql failed: {exc}") from exc
            return pending
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    finally:
        await conn.close()


async def pending(url: str) -> list[Migration]:
    """The migrations not yet applied (checks the applied ones too)."""
    async with db.connection(url) as conn:
        return check(discover(), await applied(conn))
