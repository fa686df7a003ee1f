import asyncpg

from gateway.seed import ADMIN_EMAIL, DEMO_EMAIL, seed


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
