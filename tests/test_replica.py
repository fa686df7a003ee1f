"""Analytics reads on a real streaming replica: the replica answers, a user sees their own change
at once while replay is paused (read-your-writes), and a stopped replica falls back to the primary.

The test starts its own primary (an embedded PostgreSQL on a free loopback port), clones it with
`pg_basebackup -R` and starts the clone as a hot standby on another port. Which server answered is
told by the data itself: rows written on the primary while the replica's replay is paused are
visible on the primary only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from gateway.data.budget import check_connection_budget
from gateway.data.migrate import migrate
from gateway.data.replica import parse_lsn, router_of, ryw_key
from gateway.data.resources import Resources
from gateway.dev.embedded import PostgresServer, _give_to, _run_as, free_port
from gateway.ops.settings import Settings
from gateway.security.access import create_access_token
from loaders.analytics import OverviewLoader
from tests.conftest import running_app
from tests.factories import User, UserFactory

# Two small servers: the standby needs max_connections >= the primary's.
SERVER_SETTINGS = {"shared_buffers": "32MB", "max_connections": "60", "wal_level": "replica",
                   "max_wal_senders": "5", "hot_standby": "on"}
OVERVIEW = "{ overview { totalTasks completedTasks } }"
COMPLETE = """mutation($id: ID!) { updateTask(id: $id, input: {status: DONE}) { status } }"""
DONE = {"status": "done", "completed_at": datetime(2026, 1, 5, 12, tzinfo=UTC)}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PostgresServer,
                                                                         PostgresServer]]:
    """(primary, replica): a primary and its streaming hot standby, on loopback."""
    base = tmp_path_factory.mktemp("replication")
    primary = PostgresServer(base / "primary", port=free_port(), settings=SERVER_SETTINGS)
    replica = PostgresServer(base / "replica", port=free_port(), settings=SERVER_SETTINGS)
    try:
        primary.start()
        primary.ensure_database()
        replica.data_dir.mkdir(parents=True)
        _give_to(replica.data_dir, _run_as())
        result = primary._run("pg_basebackup", "-R", "-X", "stream", "-c", "fast",
                              "-D", str(replica.pgdata.resolve()), "-h", "127.0.0.1",
                              "-p", str(primary.port), "-U", "postgres")
        assert result.returncode == 0, (primary.data_dir / "commands.log").read_text()
        replica.start()
        yield primary, replica
    finally:
        replica.stop("immediate")
        primary.stop("immediate")


@pytest.fixture(scope="module")
async def replicated(servers: tuple[PostgresServer, PostgresServer], redis_url: str
                     ) -> AsyncIterator[tuple[Settings, asyncpg.Pool, asyncpg.Pool]]:
    """Settings pointing at the pair, and direct pools to each (for the test's own checks)."""
    primary, replica = servers
    await migrate(primary.url())
    settings = Settings.load(environ={
        "APP_ENV": "test", "DATABASE_URL": primary.url(), "DATABASE_READ_URL": replica.url(),
        "REDIS_URL": redis_url, "RATE_LIMIT_ENABLED": "false", "LOG_LEVEL": "WARNING",
        "DATABASE_READ_CIRCUIT_SECONDS": "0.5", "DATABASE_POOL_SIZE": "2",
        "DATABASE_MAX_OVERFLOW": "2"}, env_file=None)
    primary_pool = await asyncpg.create_pool(primary.url(), min_size=1, max_size=3)
    replica_pool = await asyncpg.create_pool(replica.url(), min_size=1, max_size=3)
    try:
        await caught_up(primary_pool, replica_pool)
        yield settings, primary_pool, replica_pool
    finally:
        await replica_pool.close()
        await primary_pool.close()


async def caught_up(primary: asyncpg.Pool, replica: asyncpg.Pool) -> None:
    """Wait until the replica has replayed everything the primary has written so far."""
    target = parse_lsn(await primary.fetchval("select pg_current_wal_lsn()::text"))
    assert target is not None
    for _ in range(800):
        replayed = parse_lsn(await replica.fetchval("select pg_last_wal_replay_lsn()::text"))
        if replayed is not None and replayed >= target:
            return
        await asyncio.sleep(0.025)
    raise AssertionError("the replica did not catch up within 20 s")


async def overview(client: httpx.AsyncClient, settings: Settings, user: User) -> Any:
    token = create_access_token(settings, user.id, "user")
    response = await client.post("/graphql", json={"query": OVERVIEW},
                                 headers={"Authorization": f"Bearer {token}"})
    body = response.json()
    assert body.get("errors") is None, body
    return body["data"]["overview"]


async def test_the_replica_is_a_hot_standby_of_the_primary(
        replicated: tuple[Settings, asyncpg.Pool, asyncpg.Pool]) -> None:
    _, primary, replica = replicated
    assert await replica.fetchval("select pg_is_in_recovery()") is True
    assert await primary.fetchval("select pg_is_in_recovery()") is False
    assert await replica.fetchval("select count(*) from pg_tables where tablename = 'tasks'") == 1


async def test_reads_go_to_the_replica_but_a_user_sees_their_own_change_at_once(
        replicated: tuple[Settings, asyncpg.Pool, asyncpg.Pool]) -> None:
    settings, primary, replica = replicated
    users = UserFactory(primary)
    writer, other = await users.create(), await users.create()
    task = await users.task(writer)
    await caught_up(primary, replica)
    await replica.execute("select pg_wal_replay_pause()")
    try:
        # Written on the primary behind the application's back: no read-your-writes mark.
        await users.task(other, **DONE)
        async with running_app(settings) as client:
            # The other user's figures come from the paused replica: the new task is not there.
            assert await overview(client, settings, other) == {"totalTasks": 0,
                                                               "completedTasks": 0}
            # The writer completes a task through the API and sees it at once, from the primary.
            token = create_access_token(settings, writer.id, "user")
            done = (await client.post("/graphql", json={"query": COMPLETE,
                                                        "variables": {"id": str(task)}},
                                      headers={"Authorization": f"Bearer {token}"})).json()
            assert done.get("errors") is None, done
            assert await overview(client, settings, writer) == {"totalTasks": 1,
                                                                "completedTasks": 1}
            # ...although the replica still has the task as to do.
            assert await replica.fetchval("select status::text from tasks where id = $1",
                                          task) == "todo"
            resources: Resources = client.app.state.resources  # type: ignore[attr-defined]
            mark = await resources.redis.get(ryw_key(writer.id))
            assert mark is not None
    finally:
        await replica.execute("select pg_wal_replay_resume()")
    await caught_up(primary, replica)
    # Replayed past the mark: the writer's reads may go back to the replica.
    resources = await Resources.open(settings)
    try:
        assert resources.read_pool is not None
        assert not await router_of(resources)._needs_primary(resources.read_pool, [writer.id])
    finally:
        await resources.close()


async def any_versions(user_ids: list[Any]) -> dict[Any, int]:
    """Data versions for loaders whose `compute` is called directly (the cache is not read)."""
    return {user_id: 0 for user_id in user_ids}


async def test_the_primary_answers_when_redis_cannot_tell_who_wrote(
        replicated: tuple[Settings, asyncpg.Pool, asyncpg.Pool]) -> None:
    settings, primary, replica = replicated
    users = UserFactory(primary)
    user = await users.create()
    await caught_up(primary, replica)
    await replica.execute("select pg_wal_replay_pause()")
    resources = await Resources.open(replace(settings,
                                             redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    try:
        await users.task(user, **DONE)
        loader = OverviewLoader(resources.pool).cached(resources, any_versions)
        [figures] = await loader.compute([(user.id,)])
        assert figures is not None and figures.completed_tasks == 1  # the primary's answer
    finally:
        await resources.close()
        await replica.execute("select pg_wal_replay_resume()")


async def test_a_stopped_replica_falls_back_to_the_primary_and_is_used_again_when_back(
        servers: tuple[PostgresServer, PostgresServer],
        replicated: tuple[Settings, asyncpg.Pool, asyncpg.Pool]) -> None:
    settings, primary, replica_pool = replicated
    _, replica = servers
    users = UserFactory(primary)
    user = await users.create()
    resources = await Resources.open(settings)
    try:
        loader = OverviewLoader(resources.pool).cached(resources, any_versions)
        await caught_up(primary, replica_pool)
        [figures] = await loader.compute([(user.id,)])
        assert figures is not None and figures.total_tasks == 0
        router = router_of(resources)
        assert not router.breaker.is_open

        replica.stop("fast")
        await users.task(user, **DONE)
        [figures] = await loader.compute([(user.id,)])
        assert figures is not None and figures.completed_tasks == 1
        assert router.breaker.is_open  # the next reads skip the replica for a while

        replica.start()
        await asyncio.sleep(settings.database_read_circuit_seconds + 0.1)
        fresh = await asyncpg.connect(replica.url())
        try:
            for _ in range(400):  # the standby accepts connections once it reached consistency
                if (await fresh.fetchval("select count(*) from tasks where user_id = $1",
                                         user.id)) == 1:
                    break
                await asyncio.sleep(0.025)
            await fresh.execute("select pg_wal_replay_pause()")
            # Written while replay is paused, without a mark: only the primary has it.
            await users.task(user, **DONE)
            [figures] = await loader.compute([(user.id,)])
            assert figures is not None and figures.completed_tasks == 1  # the replica again
            assert not router.breaker.is_open
            await fresh.execute("select pg_wal_replay_resume()")
        finally:
            await fresh.close()
    finally:
        await resources.close()


def test_pgdata_of_the_replica_is_a_standby(servers: tuple[PostgresServer, PostgresServer]
                                            ) -> None:
    _, replica = servers
    assert Path(replica.pgdata / "standby.signal").exists()


async def test_the_connection_budget_is_checked_on_the_replica_too(
        replicated: tuple[Settings, asyncpg.Pool, asyncpg.Pool]) -> None:
    settings, _, _ = replicated
    resources = await Resources.open(settings)
    try:
        budgets = await check_connection_budget(replace(settings, workers=100), resources.pool,
                                                resources.read_pool)
    finally:
        await resources.close()
    assert [(b.server, b.fits) for b in budgets] == [("primary", False), ("replica", False)]
    assert budgets[1].available == 60 - 3  # the replica's own max_connections minus reserved
