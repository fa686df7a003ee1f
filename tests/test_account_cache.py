"""The account cache (gateway/data/accounts.py): each API process keeps its callers' account rows
and drops one when PostgreSQL announces a change of it (migration 0005's trigger), or at once for
its own writes; nothing is kept while it cannot listen."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import asyncpg
import httpx

from domain.ranges import seconds_to_midnight
from gateway.cache.clients import breaker_for
from gateway.data.accounts import AccountCache
from gateway.dev.embedded import RedisServer
from gateway.http.identity import MIDNIGHT_MARGIN_S, keep_for
from gateway.ops.settings import Settings
from tests.conftest import settled, until
from tests.factories import UserFactory

ME = "{ me { email role } }"
CREATE = 'mutation { createTask(input: {title: "t"}) { id } }'


async def ask(client: httpx.AsyncClient, token: str, text: str = ME) -> dict[str, Any]:
    response = await client.post("/graphql", json={"query": text},
                                 headers={"Authorization": f"Bearer {token}"})
    body: dict[str, Any] = response.json()
    return body


async def cache_of(client: httpx.AsyncClient) -> AccountCache[Any]:
    """The app's account cache, once it hears both PostgreSQL and Redis."""
    accounts = client.app.state.resources.accounts  # type: ignore[attr-defined]
    assert accounts is not None
    await until(lambda: accounts.listening, "the account cache listening")
    return accounts  # type: ignore[no-any-return]


async def test_a_callers_row_is_kept_and_dropped_when_postgresql_announces_a_change(
        client: httpx.AsyncClient, pool: asyncpg.Pool, users: UserFactory,
        token_for: Callable[..., str]) -> None:
    admin = await users.create(role="admin")
    token = token_for(admin.id, "admin")
    accounts = await cache_of(client)
    assert (await ask(client, token))["data"]["me"]["role"] == "ADMIN"
    kept = accounts.get(admin.id)
    assert kept is not None and kept.role == "admin"
    # Demoted in SQL, behind the API's back: the notification drops the row...
    await pool.execute("update users set role = 'user' where id = $1", admin.id)
    await settled(client)
    assert accounts.get(admin.id) is None
    # ...and the next request reads the new role from PostgreSQL.
    assert (await ask(client, token))["data"]["me"]["role"] == "USER"
    # A deleted account: dropped too, and refused.
    await pool.execute("delete from users where id = $1", admin.id)
    await settled(client)
    assert accounts.get(admin.id) is None
    body = await ask(client, token)
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED", body


async def test_the_writing_process_drops_the_row_itself_at_once(
        client: httpx.AsyncClient, users: UserFactory, token_for: Callable[..., str]) -> None:
    user = await users.create()
    token = token_for(user.id)
    accounts = await cache_of(client)
    await ask(client, token)
    before = accounts.get(user.id)
    assert before is not None
    body = await ask(client, token, CREATE)
    assert "errors" not in body, body
    # No waiting for the notification: the mutation dropped the row after its commit.
    assert accounts.get(user.id) is None
    await ask(client, token)
    after = accounts.get(user.id)
    assert after is not None and after.data_version > before.data_version


async def test_a_row_read_while_a_change_was_announced_is_not_kept(settings: Settings) -> None:
    accounts: AccountCache[str] = AccountCache(settings)
    await accounts.start()
    accounts.follow(lambda on_change, on_lost: lambda: True)  # a Redis listener that hears all
    try:
        someone, other = uuid.uuid4(), uuid.uuid4()
        generation = accounts.generation       # a request starts reading `someone`'s row
        accounts.evict(other)                  # any notification arrives meanwhile
        accounts.put(someone, "old row", generation, 60)
        assert accounts.get(someone) is None
        accounts.put(someone, "row", accounts.generation, 60)
        assert accounts.get(someone) == "row"
        accounts.put(other, "row", accounts.generation, 0)  # its midnight is too close
        assert accounts.get(other) is None
    finally:
        await accounts.stop()
    assert not accounts.listening and accounts.get(someone) is None


async def test_nothing_is_kept_while_not_listening_and_listening_resumes(
        client: httpx.AsyncClient, pool: asyncpg.Pool, users: UserFactory,
        token_for: Callable[..., str]) -> None:
    user = await users.create()
    token = token_for(user.id)
    accounts = await cache_of(client)
    await ask(client, token)
    assert accounts.get(user.id) is not None
    # The listening connection dies (a failover, a proxy restart): notifications may be missed,
    # so every kept row is forgotten and requests read PostgreSQL...
    await pool.execute("select pg_terminate_backend(pid) from pg_stat_activity "
                       "where application_name = 'analytics_gateway_listener' "
                       "and datname = current_database()")
    await until(lambda: accounts.get(user.id) is None, "the kept row forgotten")
    # ...until the process listens again, by itself.
    await until(lambda: accounts.listening, "listening again")
    await ask(client, token)
    assert accounts.get(user.id) is not None


async def test_a_notification_that_is_not_a_user_id_forgets_everything(
        client: httpx.AsyncClient, pool: asyncpg.Pool, users: UserFactory,
        token_for: Callable[..., str]) -> None:
    user = await users.create()
    accounts = await cache_of(client)
    await ask(client, token_for(user.id))
    assert len(accounts) == 1
    await pool.execute("select pg_notify('account_changed', 'not a uuid')")
    await settled(client)
    assert len(accounts) == 0


def test_a_row_is_kept_until_just_before_the_users_midnight() -> None:
    class Row:
        timezone = "Pacific/Kiritimati"

    left = keep_for(Row())  # type: ignore[arg-type]
    assert left <= seconds_to_midnight("Pacific/Kiritimati") - MIDNIGHT_MARGIN_S + 0.01


async def test_zero_seconds_turns_it_off(settings: Settings, pool: asyncpg.Pool,
                                         users: UserFactory, app_with: Any,
                                         token_for: Callable[..., str]) -> None:
    user = await users.create()
    async with app_with(settings, account_cache_seconds=0) as client:
        assert client.app.state.resources.accounts is None
        body = await ask(client, token_for(user.id))
        assert body["data"]["me"]["email"] == user.email


async def test_behind_a_transaction_pooler_it_stays_off(settings: Settings) -> None:
    from gateway.data.resources import open_account_cache

    pooled = replace(settings, database_url="postgresql://app@db.example.com:6432/app")
    assert await open_account_cache(pooled) is None



async def test_the_apis_own_writes_are_announced_on_redis_not_by_postgresql(
        settings: Settings, pool: asyncpg.Pool, users: UserFactory, app_with: Any,
        token_for: Callable[..., str]) -> None:
    """A NOTIFY serializes the commits of the whole server: the API's write transactions must
    not send one. Another process hears the write through the live change message on Redis."""
    user = await users.create()
    token = token_for(user.id)
    heard: list[str] = []
    listener = await asyncpg.connect(settings.database_url)
    await listener.add_listener("account_changed", lambda *args: heard.append(args[3]))
    try:
        async with app_with(settings) as writer, app_with(settings) as reader:
            accounts = await cache_of(reader)
            await cache_of(writer)
            await ask(reader, token)
            assert accounts.get(user.id) is not None
            assert "errors" not in await ask(writer, token, CREATE)
            await until(lambda: accounts.get(user.id) is None, "the reader dropping the row")
            await pool.execute("select pg_notify('account_changed', 'sync:marker')")
            await until(lambda: "sync:marker" in heard, "the marker")
    finally:
        await listener.close()
    assert heard == ["sync:marker"], heard  # nothing from the write's transaction


async def test_when_redis_cannot_take_the_announcement_postgresql_makes_it(
        settings: Settings, users: UserFactory, app_with: Any,
        token_for: Callable[..., str]) -> None:
    user = await users.create()
    token = token_for(user.id)
    async with app_with(settings) as writer, app_with(settings) as reader:
        accounts = await cache_of(reader)
        await ask(reader, token)
        assert accounts.get(user.id) is not None
        # The writer's Redis path is broken (its breaker open): no change message is published.
        resources = writer.app.state.resources  # type: ignore[attr-defined]
        breaker_for(resources.cache_redis, resources.settings).failure()
        assert "errors" not in await ask(writer, token, CREATE)
        await settled(reader)  # PostgreSQL's notification has arrived
        assert accounts.get(user.id) is None


async def test_nothing_is_kept_while_redis_is_not_heard(
        settings: Settings, users: UserFactory, app_with: Any, own_redis: RedisServer,
        token_for: Callable[..., str]) -> None:
    user = await users.create()
    token = token_for(user.id)
    async with app_with(settings, redis_url=own_redis.url()) as client:
        accounts = await cache_of(client)
        await ask(client, token)
        assert accounts.get(user.id) is not None
        own_redis.stop()  # announcements made meanwhile would be missed
        await until(lambda: not accounts.listening, "the Redis listener lost")
        assert accounts.get(user.id) is None and len(accounts) == 0
        body = await ask(client, token)  # answered from PostgreSQL, not kept
        assert body["data"]["me"]["email"] == user.email
        assert accounts.get(user.id) is None


async def test_a_fresh_read_is_neither_answered_nor_kept(
        client: httpx.AsyncClient, pool: asyncpg.Pool, users: UserFactory,
        token_for: Callable[..., str]) -> None:
    """A subscription socket's sign-in reads afresh and keeps nothing: 10,000 idle sockets
    would otherwise fill the cache with rows no request asks for."""
    from gateway.http.identity import account_of

    user = await users.create()
    resources = client.app.state.resources  # type: ignore[attr-defined]
    accounts = await cache_of(client)
    row = await account_of({}, resources, user.id, fresh=True)
    assert row is not None and accounts.get(user.id) is None
    await ask(client, token_for(user.id))  # a request keeps it
    kept = accounts.get(user.id)
    assert kept is not None
    await pool.execute("update users set display_name = 'Renamed' where id = $1", user.id)
    await settled(client)
    accounts.put(user.id, kept, accounts.generation, 60)  # the old row, kept again
    fresh = await account_of({}, resources, user.id, fresh=True)
    assert fresh is not None and fresh.display_name == "Renamed"  # not answered from memory
