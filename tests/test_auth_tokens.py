"""Refresh tokens: rotation within a family, reuse detection, the concurrent-use race, logout."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from gateway.ops.settings import Settings
from gateway.security.access import decode_access_token
from gateway.security.refresh import hash_token
from tests.factories import PASSWORD, UserFactory

Gql = Callable[..., Awaitable[dict[str, Any]]]

LOGIN = """mutation($email: String!, $password: String!) { login(email: $email, password: $password)
    { accessToken refreshToken user { id } } }"""
REFRESH = """mutation($t: String!) { refreshToken(refreshToken: $t)
    { accessToken refreshToken expiresIn user { id role } } }"""
LOGOUT = "mutation($t: String!) { logout(refreshToken: $t) }"


def code(body: dict[str, Any]) -> str:
    return str(body["errors"][0]["extensions"]["code"])


async def login(gql: Gql, email: str) -> dict[str, Any]:
    body = await gql(LOGIN, {"email": email, "password": PASSWORD})
    payload: dict[str, Any] = body["data"]["login"]
    return payload


async def test_refresh_rotates_within_the_family(gql: Gql, users: UserFactory,
                                                 pool: asyncpg.Pool, settings: Settings) -> None:
    user = await users.create(email="rot@example.com", role="admin")
    first = await login(gql, "rot@example.com")
    body = await gql(REFRESH, {"t": first["refreshToken"]})
    second = body["data"]["refreshToken"]
    assert second["user"] == {"id": str(user.id), "role": "ADMIN"}
    assert second["refreshToken"] != first["refreshToken"]
    assert decode_access_token(settings, second["accessToken"]).role == "admin"
    rows = await pool.fetch("select token_hash, family_id, rotated_at, revoked_at, "
                            "expires_at - created_at as life from refresh_tokens "
                            "order by created_at, rotated_at nulls last")
    assert len(rows) == 2 and rows[0]["family_id"] == rows[1]["family_id"]
    by_hash = {bytes(r["token_hash"]): r for r in rows}
    assert by_hash[hash_token(first["refreshToken"])]["rotated_at"] is not None
    assert by_hash[hash_token(second["refreshToken"])]["rotated_at"] is None
    assert all(r["life"].days == settings.jwt_refresh_token_expire_days for r in rows)
    # The new token rotates again.
    third = (await gql(REFRESH, {"t": second["refreshToken"]}))["data"]["refreshToken"]
    assert third["refreshToken"] not in (first["refreshToken"], second["refreshToken"])


async def test_reusing_a_rotated_token_revokes_the_whole_family(
        gql: Gql, users: UserFactory, pool: asyncpg.Pool) -> None:
    await users.create(email="reuse@example.com")
    stolen = await login(gql, "reuse@example.com")
    other_device = await login(gql, "reuse@example.com")  # another family: unaffected
    legit = (await gql(REFRESH, {"t": stolen["refreshToken"]}))["data"]["refreshToken"]

    replay = await gql(REFRESH, {"t": stolen["refreshToken"]})
    assert code(replay) == "UNAUTHENTICATED"
    # The token the legitimate holder got from the rotation is dead too.
    assert code(await gql(REFRESH, {"t": legit["refreshToken"]})) == "UNAUTHENTICATED"
    family = await pool.fetchval("select family_id from refresh_tokens where token_hash = $1",
                                 hash_token(stolen["refreshToken"]))
    assert await pool.fetchval("select bool_and(revoked_at is not null) from refresh_tokens "
                               "where family_id = $1", family)
    assert "errors" not in await gql(REFRESH, {"t": other_device["refreshToken"]})


@pytest.mark.parametrize("round_", range(5))
async def test_of_two_concurrent_uses_of_one_token_exactly_one_succeeds(
        gql: Gql, users: UserFactory, round_: int) -> None:
    await users.create(email=f"race{round_}@example.com")
    token = (await login(gql, f"race{round_}@example.com"))["refreshToken"]
    results = await asyncio.gather(*(gql(REFRESH, {"t": token}) for _ in range(2)))
    winners = [r for r in results if "errors" not in r]
    losers = [r for r in results if "errors" in r]
    assert len(winners) == 1 and len(losers) == 1
    assert code(losers[0]) == "UNAUTHENTICATED"


async def test_many_concurrent_uses_still_yield_one_success(gql: Gql, users: UserFactory,
                                                            pool: asyncpg.Pool) -> None:
    await users.create(email="herd@example.com")
    token = (await login(gql, "herd@example.com"))["refreshToken"]
    results = await asyncio.gather(*(gql(REFRESH, {"t": token}) for _ in range(8)))
    assert sum("errors" not in r for r in results) == 1
    # Exactly one successor token was ever issued from it.
    assert await pool.fetchval("select count(*) from refresh_tokens") == 2


async def test_logout_revokes_the_family(gql: Gql, users: UserFactory) -> None:
    await users.create(email="out@example.com")
    session = await login(gql, "out@example.com")
    rotated = (await gql(REFRESH, {"t": session["refreshToken"]}))["data"]["refreshToken"]
    assert (await gql(LOGOUT, {"t": rotated["refreshToken"]}))["data"]["logout"] is True
    assert code(await gql(REFRESH, {"t": rotated["refreshToken"]})) == "UNAUTHENTICATED"
    # Logging out twice is harmless; an unknown token says false.
    assert (await gql(LOGOUT, {"t": rotated["refreshToken"]}))["data"]["logout"] is True
    assert (await gql(LOGOUT, {"t": "no-such-token"}))["data"]["logout"] is False


async def test_an_expired_refresh_token_is_refused(gql: Gql, users: UserFactory,
                                                   pool: asyncpg.Pool) -> None:
    await users.create(email="old@example.com")
    token = (await login(gql, "old@example.com"))["refreshToken"]
    await pool.execute("update refresh_tokens set created_at = now() - interval '9 days', "
                       "expires_at = now() - interval '1 second'")
    body = await gql(REFRESH, {"t": token})
    assert code(body) == "UNAUTHENTICATED"
    assert await pool.fetchval("select count(*) from refresh_tokens") == 1


async def test_an_unknown_or_access_token_is_no_refresh_token(gql: Gql, users: UserFactory,
                                                              pool: asyncpg.Pool) -> None:
    await users.create(email="x@example.com")
    session = await login(gql, "x@example.com")
    for token in ("made-up", session["accessToken"]):
        assert code(await gql(REFRESH, {"t": token})) == "UNAUTHENTICATED"
    # Neither attempt touched the real token.
    assert await pool.fetchval("select count(*) from refresh_tokens "
                               "where rotated_at is null and revoked_at is null") == 1


def test_a_verified_token_is_remembered_but_still_expires_to_the_second(
        settings: Settings) -> None:
    """Access tokens are verified once per process (gateway/security/access.py keeps them), yet a
    remembered token stops working the second its `exp` passes, as a fresh check would say."""
    import time
    import uuid
    from dataclasses import replace
    from datetime import UTC, datetime, timedelta

    from gateway.errors import Unauthenticated
    from gateway.security import access

    user_id = uuid.uuid4()
    lifetime = timedelta(minutes=settings.jwt_access_token_expire_minutes)
    # issued so that it expires at the next whole second + 1
    expires = int(time.time()) + 2
    token = access.create_access_token(
        settings, user_id, "user", now=datetime.fromtimestamp(expires, UTC) - lifetime)
    assert decode_access_token(settings, token).id == user_id
    calls = []
    original = access._verify
    access._verify = lambda s, t: calls.append(t) or original(s, t)  # type: ignore[assignment]
    try:
        assert decode_access_token(settings, token).id == user_id
        assert calls == []  # remembered: not verified again
        # another configuration (a rotated secret) does not accept what this one verified
        other = replace(settings, jwt_secret_key="another-secret-" + "x" * 40)
        with pytest.raises(Unauthenticated):
            decode_access_token(other, token)
        time.sleep(max(0.0, expires - time.time()) + 0.01)
        with pytest.raises(Unauthenticated, match="expired"):
            decode_access_token(settings, token)
    finally:
        access._verify = original  # type: ignore[assignment]
