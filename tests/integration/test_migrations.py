import asyncio
import shutil
import subprocess
import sys

import asyncpg
import pytest

from streamstats import migrations
from streamstats.errors import MigrationError


def run_cli(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamstats.cli", *args],
        env={"DATABASE_URL": url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_migrate_twice_applies_everything_then_nothing(empty_database):
    first = run_cli("migrate", url=empty_database)
    assert first.returncode == 0, first.stderr
    names = [m.label for m in migrations.discover()]
    assert first.stdout.split() == [w for n in names for w in ("applied", n)]
    second = run_cli("migrate", url=empty_database)
    assert second.returncode == 0, second.stderr
    assert "nothing to apply" in second.stdout


async def test_the_schema_is_a_hypertable_with_the_designed_columns(database_url):
    conn = await asyncpg.connect(database_url)
    try:
        columns = [
            r[0]
            for r in await conn.fetch(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'stream_stats' ORDER BY ordinal_position"
            )
        ]
        hyper = await conn.fetchval(
            "SELECT count(*) FROM timescaledb_information.hypertables "
            "WHERE hypertable_name = 'stream_stats'"
        )
        pk = await conn.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'stream_stats'::regclass AND contype = 'p'"
        )
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO stream_stats (time, stream_id, quality) "
                "VALUES (now(), gen_random_uuid(), 'excellent')"
            )
    finally:
        await conn.close()
    assert columns == [
        "time",
        "stream_id",
        "bitrate_kbps",
        "fps",
        "width",
        "height",
        "audio_level_db",
        "packet_loss_pct",
        "latency_ms",
        "upload_kbps",
        "download_kbps",
        "quality",
        "received_at",
    ]
    assert hyper == 1
    assert pk == 'PRIMARY KEY (stream_id, "time")'


def test_an_edited_applied_migration_is_refused(empty_database, tmp_path):
    folder = tmp_path / "migrations"
    shutil.copytree(migrations.sql_root() / "migrations", folder)
    asyncio.run(migrations.migrate(empty_database, folder))
    first = sorted(folder.iterdir())[0]
    first.write_text(first.read_text() + "\n-- an innocent-looking edit\n")
    with pytest.raises(MigrationError, match=r"0001_\w+\.sql was edited after it was applied"):
        asyncio.run(migrations.migrate(empty_database, folder))


def test_a_failing_migration_leaves_nothing_behind(empty_database, tmp_path):
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_good.sql").write_text("CREATE TABLE a (x int);")
    (folder / "0002_bad.sql").write_text("CREATE TABLE b (x int); SELECT no_such_function();")
    with pytest.raises(MigrationError, match=r"0002_bad\.sql failed"):
        asyncio.run(migrations.migrate(empty_database, folder))

    async def state() -> tuple[list[int], bool]:
        conn = await asyncpg.connect(empty_database)
        try:
            versions = [r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")]
            b_exists = await conn.fetchval("SELECT to_regclass('b') IS NOT NULL")
            return versions, b_exists
        finally:
            await conn.close()

    assert asyncio.run(state()) == ([1], False)


def test_a_badly_named_migration_file_is_refused(tmp_path):
    (tmp_path / "1_first.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"NNNN_description\.sql"):
        migrations.discover(tmp_path)


def test_a_migration_unknown_to_this_version_is_refused(empty_database, tmp_path):
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_a.sql").write_text("SELECT 1;")
    (folder / "0002_b.sql").write_text("SELECT 2;")
    asyncio.run(migrations.migrate(empty_database, folder))
    (folder / "0002_b.sql").unlink()
    with pytest.raises(MigrationError, match="newer release"):
        asyncio.run(migrations.migrate(empty_database, folder))


def test_concurrent_migrates_apply_each_migration_once(empty_database):
    async def both() -> list[list[migrations.Migration]]:
        return list(
            await asyncio.gather(
                migrations.migrate(empty_database), migrations.migrate(empty_database)
            )
        )

    results = asyncio.run(both())
    assert sorted(len(r) for r in results) == [0, len(migrations.discover())]


async def _fetchval(url: str, sql: str) -> object:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def _folders(tmp_path, idempotent: dict[str, str]):
    """A run-once folder with one table and an idempotent folder next to it."""
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "0001_table.sql").write_text("CREATE TABLE t (x int);")
    (tmp_path / "idempotent").mkdir(exist_ok=True)
    for name, sql in idempotent.items():
        (tmp_path / "idempotent" / name).write_text(sql)
    return tmp_path / "migrations"


def test_idempotent_files_are_reapplied_by_every_migrate(empty_database, tmp_path):
    folder = _folders(
        tmp_path,
        {
            "010_answer.sql": "CREATE OR REPLACE FUNCTION answer() RETURNS int "
            "LANGUAGE sql AS 'SELECT 1';",
            # Applied after 010, in file order: it may use what 010 defines.
            "020_view.sql": "CREATE OR REPLACE VIEW answers AS SELECT answer() AS a, x FROM t;",
        },
    )
    assert [m.label for m in asyncio.run(migrations.migrate(empty_database, folder))] == [
        "0001_table"
    ]
    assert asyncio.run(_fetchval(empty_database, "SELECT answer()")) == 1

    (tmp_path / "idempotent" / "010_answer.sql").write_text(
        "CREATE OR REPLACE FUNCTION answer() RETURNS int LANGUAGE sql AS 'SELECT 2';"
    )
    asyncio.run(_fetchval(empty_database, "DROP VIEW answers"))
    # Nothing left to run once, but the edited function and the dropped view are re-created.
    assert asyncio.run(migrations.migrate(empty_database, folder)) == []
    assert asyncio.run(_fetchval(empty_database, "SELECT answer()")) == 2
    assert asyncio.run(_fetchval(empty_database, "SELECT count(*) FROM answers")) == 0


def test_a_broken_idempotent_file_fails_the_migrate_and_changes_nothing(empty_database, tmp_path):
    folder = _folders(
        tmp_path,
        {
            "010_answer.sql": "CREATE OR REPLACE FUNCTION answer() RETURNS int "
            "LANGUAGE sql AS 'SELECT 1';"
        },
    )
    asyncio.run(migrations.migrate(empty_database, folder))
    (tmp_path / "idempotent" / "010_answer.sql").write_text(
        "CREATE OR REPLACE FUNCTION answer() RETURNS int LANGUAGE sql AS 'SELECT 2';"
    )
    (tmp_path / "idempotent" / "020_broken.sql").write_text(
        "CREATE OR REPLACE VIEW half_made AS SELECT 1 AS x; SELECT no_such_function();"
    )
    with pytest.raises(MigrationError, match=r"idempotent/020_broken\.sql failed: .*no_such"):
        asyncio.run(migrations.migrate(empty_database, folder))
    # The earlier file's change is rolled back with the broken one's.
    assert asyncio.run(_fetchval(empty_database, "SELECT answer()")) == 1
    assert asyncio.run(_fetchval(empty_database, "SELECT to_regclass('half_made')")) is None


def test_a_badly_named_idempotent_file_is_refused(tmp_path):
    (tmp_path / "idempotent").mkdir()
    (tmp_path / "idempotent" / "views.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"views\.sql: idempotent files are named NNN_"):
        migrations.discover_idempotent(tmp_path / "idempotent")


async def test_the_shipped_views_come_back_with_their_grant_after_a_drop(empty_database):
    await migrations.migrate(empty_database)
    conn = await asyncpg.connect(empty_database)
    try:
        await conn.execute("DROP VIEW stream_stats_1h")
        await migrations.migrate(empty_database)
        grant = await conn.fetchval(
            "SELECT has_table_privilege('streamstats_analyst', 'stream_stats_1h', 'SELECT')"
        )
        definition = await conn.fetchval("SELECT pg_get_viewdef('stream_stats_1h')")
    finally:
        await conn.close()
    assert grant is True
    assert "rollup_bucket(" in definition
