"""Schema migrations: run-once files recorded with a checksum, then re-creatable objects.

`sql/migrations/NNNN_*.sql` run once each, in order, each in its own transaction, and are
recorded in `schema_migrations` with a checksum so an edited applied file is refused: tables,
indexes, data changes. `sql/idempotent/NNN_*.sql` (the folder next to the migrations) hold
objects that are safe to re-create — `CREATE OR REPLACE` functions and views, grants on them —
and are all re-applied, in order and in one transaction, by every migrate after the run-once
files: editing one is how such an object changes. A failing file leaves every object of the
folder as it was (sql/idempotent/README.md).
"""

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

FILENAME = re.compile(r"^(?P<number>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
IDEMPOTENT = re.compile(r"^(?P<number>\d{3})_(?P<name>[a-z0-9_]+)\.sql$")
NAMES = "migration files are named NNNN_description.sql"
IDEMPOTENT_NAMES = "idempotent files are named NNN_description.sql"
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


@dataclass(frozen=True)
class Idempotent:
    """A file of `sql/idempotent`: re-applied by every migrate."""

    order: int
    name: str
    sql: str

    @property
    def label(self) -> str:
        return f"{self.order:03d}_{self.name}"


def _numbered(directory: Path, pattern: re.Pattern[str], form: str) -> list[tuple[int, str, str]]:
    """(number, name, text) of the `.sql` files of `directory`, in order; bad names are errors."""
    found: dict[int, tuple[int, str, str]] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix != ".sql":
            continue
        match = pattern.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: {form}")
        number = int(match["number"])
        if number in found:
            raise MigrationError(f"{path.name}: number {match['number']} is used twice")
        found[number] = (number, match["name"], path.read_text())
    return [found[n] for n in sorted(found)]


def discover(directory: Path | None = None) -> list[Migration]:
    """The migrations in `directory` (default `sql/migrations`), in order; bad names are errors."""
    directory = directory or sql_root() / "migrations"
    return [Migration(*file) for file in _numbered(directory, FILENAME, NAMES)]


def discover_idempotent(directory: Path) -> list[Idempotent]:
    """The files of an idempotent folder, in order (none if there is no such folder)."""
    if not directory.is_dir():
        return []
    return [Idempotent(*file) for file in _numbered(directory, IDEMPOTENT, IDEMPOTENT_NAMES)]


async def reapply(conn: asyncpg.Connection, files: list[Idempotent]) -> None:
    """Re-create the idempotent objects, all in one transaction: a failing file changes nothing."""
    async with conn.transaction():
        for file in files:
            try:
                await conn.execute(file.sql)
            except asyncpg.PostgresError as exc:
                raise MigrationError(
                    f"idempotent/{file.label}.sql failed: {exc}; none of the idempotent "
                    "objects was changed (the run-once migrations applied stay applied)"
                ) from exc
    logger.info(
        "re-applied %d idempotent files",
        len(files),
        extra={"action": "apply_idempotent", "files": [f.label for f in files]},
    )


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
    """Apply the missing migrations, then re-apply the idempotent folder; returns the former.

    `directory` is the run-once folder (default `sql/migrations`); the idempotent files are
    read from the `idempotent` folder next to it.
    """
    directory = directory or sql_root() / "migrations"
    known = discover(directory)
    idempotent = discover_idempotent(directory.parent / "idempotent")
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
            await reapply(conn, idempotent)
            return pending
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    finally:
        await conn.close()


async def pending(url: str) -> list[Migration]:
    """The migrations not yet applied (checks the applied ones too)."""
    async with db.connection(url) as conn:
        return check(discover(), await applied(conn))
