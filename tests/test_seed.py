from datetime import datetime

import asyncpg
import pytest

from gateway.dev.seed import ADMIN_EMAIL, DEMO_EMAIL, Chunk, ChunkSpec, generate_chunk, seed


async def test_seed_writes_consistent_users_tasks_and_history(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        result = await seed(conn, users=12, days=60, tasks_per_user=30, chunk_users=5)
    assert (result.users, result.tasks) == (12, 360)
    assert await pool.fetchval("select count(*) from users") == 12
    assert await pool.fetchval("select count(*) from tasks") == 360
    assert await pool.fetchval("select count(*) from task_events") == result.events
    roles = dict(await pool.fetch("select email, role from users where email = any($1)",
                                  [DEMO_EMAIL, ADMIN_EMAIL]))
    assert roles == {DEMO_EMAIL: "user", ADMIN_EMAIL: "admin"}
    assert await pool.fetchval("select count(distinct timezone) from users") >= 5
    # Every task has a creation event, and its last event leads to its current status.
    broken = await pool.fetchval("""
        select count(*) from tasks t
        where not exists (select 1 from task_events e
                          where e.task_id = t.id and e.from_status is null and e.at = t.created_at)
           or t.status != (select e.to_status from task_events e where e.task_id = t.id
                           order by e.at desc, e.id desc limit 1)
           or (t.status = 'done' and t.completed_at != (select max(e.at) from task_events e
                                    where e.task_id = t.id and e.to_status = 'done'))""")
    assert broken == 0
    assert await pool.fetchval("select count(*) from tasks where status = 'done'") > 100
    assert await pool.fetchval(
        "select count(*) from tasks where created_at < now() - interval '61 days'") == 0


async def test_seed_is_deterministic_and_adds_to_existing_data(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await seed(conn, users=3, days=10, tasks_per_user=5)
        await seed(conn, users=3, days=10, tasks_per_user=5)  # same emails: renamed, not refused
    assert await pool.fetchval("select count(*) from users") == 6


async def _task_fingerprint(pool: asyncpg.Pool) -> list[tuple]:
    rows = await pool.fetch("""
        select u.email, t.id, t.title, t.status, t.priority, t.deleted,
               (select count(*) from task_events e where e.task_id = t.id) as n_events
        from tasks t join users u on u.id = t.user_id order by t.id""")
    return [tuple(r) for r in rows]


async def _schema_of_task_tables(pool: asyncpg.Pool) -> list[tuple]:
    indexes = await pool.fetch("""select indexname, indexdef from pg_indexes
                                  where tablename in ('tasks', 'task_events') order by 1""")
    constraints = await pool.fetch("""
        select conname, pg_get_constraintdef(oid), convalidated from pg_constraint
        where conrelid in ('tasks'::regclass, 'task_events'::regclass) order by 1""")
    return [tuple(r) for r in indexes] + [tuple(r) for r in constraints]


async def test_bulk_load_in_another_process_gives_the_same_rows_and_restores_indexes(
        pool: asyncpg.Pool) -> None:
    schema_before = await _schema_of_task_tables(pool)
    async with pool.acquire() as conn:
        bulk = await seed(conn, users=7, days=30, tasks_per_user=20, chunk_users=3,
                          bulk=True, in_process=False)
    rows_bulk = await _task_fingerprint(pool)
    assert await _schema_of_task_tables(pool) == schema_before
    await pool.execute("truncate task_events, tasks, users cascade")
    async with pool.acquire() as conn:
        plain = await seed(conn, users=7, days=30, tasks_per_user=20, chunk_users=5,
                           bulk=False, in_process=True)
        # The connection got its usual codecs back: timestamps arrive as datetimes again.
        assert isinstance(await conn.fetchval("select created_at from users limit 1"), datetime)
    assert (bulk.tasks, bulk.events) == (plain.tasks, plain.events) == (140, plain.events)
    assert await _task_fingerprint(pool) == rows_bulk


async def test_a_failed_bulk_load_leaves_tables_and_indexes_as_they_were(
        pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    def bad_chunk(spec: ChunkSpec) -> Chunk:
        users, tasks, events = generate_chunk(spec)
        users[-1] = (*users[-1][:5], 0, *users[-1][6:])  # daily_goal must be 1..100
        return users, tasks, events

    schema_before = await _schema_of_task_tables(pool)
    monkeypatch.setattr("gateway.dev.seed.generate_chunk", bad_chunk)
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.CheckViolationError):
            await seed(conn, users=4, days=10, tasks_per_user=5, chunk_users=2, bulk=True,
                       in_process=True)
    assert await _schema_of_task_tables(pool) == schema_before
    assert await pool.fetchval("select count(*) from tasks") == 0
