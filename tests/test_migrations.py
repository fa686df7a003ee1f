import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from gateway.data.migrate import MIGRATIONS_DIR, MigrationError, discover, migrate, pending
from tests.conftest import _with_database


@pytest.fixture
async def empty_db(server_urls: tuple[str, str]) -> AsyncIterator[str]:
    name = f"gw_migr_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(_with_database(server_urls[0], "postgres"))
    await admin.execute(f'create database "{name}"')
    try:
        yield _with_database(server_urls[0], name)
    finally:
        await admin.execute(f'drop database "{name}" with (force)')
        await admin.close()


async def applied_versions(url: str) -> list[int]:
    conn = await asyncpg.connect(url)
    try:
        return [r["version"] for r in
                await conn.fetch("select version from schema_migrations order by version")]
    finally:
        await conn.close()


async def test_migrate_twice_applies_each_migration_once(empty_db: str) -> None:
    first = await migrate(empty_db)
    assert first == [f"{m.version:04d}_{m.name}" for m in discover()]
    assert await migrate(empty_db) == []
    assert await pending(empty_db) == []
    assert await applied_versions(empty_db) == [m.version for m in discover()]


async def test_concurrent_runners_apply_each_migration_once(empty_db: str) -> None:
    results = await asyncio.gather(*(migrate(empty_db) for _ in range(4)))
    applied = [name for result in results for name in result]
    assert sorted(applied) == [f"{m.version:04d}_{m.name}" for m in discover()]
    assert await applied_versions(empty_db) == [m.version for m in discover()]


async def test_an_edited_applied_migration_is_refused(empty_db: str, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, directory)
    await migrate(empty_db, directory)
    first = sorted(directory.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- an innocent-looking edit\n")
    with pytest.raises(MigrationError, match="was edited after it was applied"):
        await migrate(empty_db, directory)


async def test_a_failing_migration_leaves_nothing_behind(empty_db: str, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, directory)
    (directory / "9999_broken.sql").write_text(
        "create table half_done (id int);\nselect * from no_such_table;\n")
    with pytest.raises(asyncpg.UndefinedTableError):
        await migrate(empty_db, directory)
    conn = await asyncpg.connect(empty_db)
    try:
        assert await conn.fetchval("select to_regclass('half_done')") is None
        assert 9999 not in await applied_versions(empty_db)
    finally:
        await conn.close()


async def test_schema_has_the_contract_tables_views_and_indexes(pool: asyncpg.Pool) -> None:
    tables = {r["tablename"] for r in
              await pool.fetch("select tablename from pg_tables where schemaname = 'public'")}
    assert {"users", "tasks", "task_events", "daily_analytics", "refresh_tokens"} <= tables
    views = {r["matviewname"] for r in await pool.fetch("select matviewname from pg_matviews")}
    assert views == {"user_task_stats", "user_priority_distribution", "user_status_distribution",
                     "user_monthly_trends"}
    indexes = {r["indexname"] for r in await pool.fetch("select indexname from pg_indexes")}
    assert {"idx_tasks_user_id", "idx_tasks_user_status", "idx_tasks_user_due_date",
            "idx_tasks_user_completed", "idx_tasks_user_priority", "idx_tasks_created_at",
            "idx_daily_analytics_user_date", "idx_daily_analytics_date"} <= indexes
    # Every view can be refreshed concurrently, which needs a unique index.
    for view in views:
        await pool.execute(f"refresh materialized view concurrently {view}")


async def test_check_constraints_refuse_bad_rows(pool: asyncpg.Pool, users) -> None:  # type: ignore[no-untyped-def]
    user = await users.create()
    with pytest.raises(asyncpg.CheckViolationError):
        await users.task(user, status="finished")
    with pytest.raises(asyncpg.CheckViolationError):
        await users.task(user, priority="urgent")
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute("update users set daily_goal = 0 where id = $1", user.id)
    with pytest.raises(asyncpg.UniqueViolationError):
        await users.create(email=user.email.upper())
