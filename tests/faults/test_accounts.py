"""Authorization follows the database, not the token (issue 13, items 5 and 6).

An access token lives for `JWT_ACCESS_TOKEN_EXPIRE_MINUTES`; the role it carries and the account
it names may change before then. Every request with a token reads the account row (once, shared
by the response cache, the GraphQL context and the export), so a demoted admin loses admin rights
and a deleted account loses everything on its very next request. Answers that carry tokens say
`Cache-Control: no-store`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
import httpx

from tests.factories import PASSWORD, UserFactory

USERS = "{ users(first: 5) { edges { node { id } } } }"
OVERVIEW_OF = "query($id: ID!) { overview(userId: $id) { totalTasks } }"
TASKS = "{ tasks { edges { node { id } } } }"
ME = "{ me { id role } }"


async def post(client: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None,
               token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await client.post("/graphql", json={"query": query, "variables": variables},
                             headers=headers)


def codes(response: httpx.Response) -> list[str]:
    return [e["extensions"]["code"] for e in response.json().get("errors") or []]


async def test_a_demoted_admin_loses_admin_rights_with_the_same_token(
        client: httpx.AsyncClient, users: UserFactory, pool: asyncpg.Pool,
        token_for: Callable[..., str]) -> None:
    admin, other = await users.create(role="admin"), await users.create()
    await users.task(other)
    token = token_for(admin.id, "admin")
    assert codes(await post(client, USERS, token=token)) == []
    assert codes(await post(client, OVERVIEW_OF, {"id": str(other.id)}, token)) == []

    await pool.execute("update users set role = 'user' where id = $1", admin.id)

    listed = await post(client, USERS, token=token)
    assert codes(listed) == ["FORBIDDEN"]
    assert codes(await post(client, OVERVIEW_OF, {"id": str(other.id)}, token)) == ["FORBIDDEN"]
    assert (await post(client, ME, token=token)).json()["data"]["me"]["role"] == "USER"


async def test_a_promoted_user_is_admin_at_once(
        client: httpx.AsyncClient, users: UserFactory, pool: asyncpg.Pool,
        token_for: Callable[..., str]) -> None:
    user = await users.create()
    token = token_for(user.id, "user")
    assert codes(await post(client, USERS, token=token)) == ["FORBIDDEN"]
    await pool.execute("update users set role = 'admin' where id = $1", user.id)
    assert codes(await post(client, USERS, token=token)) == []


async def test_a_deleted_accounts_token_lists_and_exports_nothing(
        client: httpx.AsyncClient, users: UserFactory, pool: asyncpg.Pool,
        token_for: Callable[..., str]) -> None:
    user = await users.create()
    await users.task(user)
    token = token_for(user.id)
    assert len((await post(client, TASKS, token=token)).json()["data"]["tasks"]["edges"]) == 1
    exported = await client.get("/export/tasks.csv", headers={"Authorization": f"Bearer {token}"})
    assert exported.status_code == 200

    await pool.execute("delete from users where id = $1", user.id)

    listed = await post(client, TASKS, token=token)
    assert codes(listed) == ["UNAUTHENTICATED"]
    assert listed.json()["data"] is None
    exported = await client.get("/export/tasks.csv", headers={"Authorization": f"Bearer {token}"})
    assert exported.status_code == 401
    assert "no longer exists" in exported.text
    created = await post(client, 'mutation { createTask(input: {title: "x"}) { id } }',
                         token=token)
    assert codes(created) == ["UNAUTHENTICATED"]
    assert await pool.fetchval("select count(*) from tasks") == 0


async def test_answers_that_carry_tokens_are_not_stored_by_any_cache(
        client: httpx.AsyncClient, users: UserFactory) -> None:
    user = await users.create(email="nostore@example.com")
    login = await post(client, "mutation($p: String!) { login(email: \"nostore@example.com\", "
                               "password: $p) { accessToken refreshToken } }", {"p": PASSWORD})
    assert login.status_code == 200 and login.headers["cache-control"] == "no-store"
    refresh_token = login.json()["data"]["login"]["refreshToken"]
    refreshed = await post(client, "mutation($t: String!) { refreshToken(refreshToken: $t) "
                                   "{ accessToken } }", {"t": refresh_token})
    assert "errors" not in refreshed.json() and refreshed.headers["cache-control"] == "no-store"
    registered = await post(client, """mutation { register(input: {email: "new@example.com",
        password: "long-enough-pass", displayName: "New"}) { accessToken } }""")
    assert "errors" not in registered.json()
    assert registered.headers["cache-control"] == "no-store"
    # an ordinary query is not marked so
    tasks = await post(client, TASKS, token=None)
    assert "no-store" not in tasks.headers.get("cache-control", "")
    assert user.id
