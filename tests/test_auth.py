"""Accounts: register, login, profile changes, and every kind of bad access token."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
from arq.jobs import Job

from domain.changes import AGGREGATE_JOB, rebuild_job_id
from gateway.errors import Unauthenticated
from gateway.ops.settings import Settings
from gateway.security.access import create_access_token, decode_access_token
from tests.factories import PASSWORD, UserFactory

Gql = Callable[..., Awaitable[dict[str, Any]]]

REGISTER = """mutation($input: RegisterInput!) { register(input: $input) {
    accessToken refreshToken expiresIn user { id email displayName timezone dailyGoal role } } }"""
LOGIN = """mutation($email: String!, $password: String!) { login(email: $email, password: $password)
    { accessToken refreshToken expiresIn user { id email } } }"""
PROFILE = """mutation($input: ProfileInput!) { updateProfile(input: $input)
    { id displayName timezone dailyGoal } }"""
TASKS = "{ tasks { edges { node { id } } } }"


def code(body: dict[str, Any]) -> str:
    return str(body["errors"][0]["extensions"]["code"])


async def table_counts(pool: asyncpg.Pool) -> tuple[int, ...]:
    row = await pool.fetchrow(
        """select (select count(*) from users), (select count(*) from refresh_tokens),
                  (select count(*) from tasks), (select count(*) from daily_analytics)""")
    return tuple(row)


# --- register ------------------------------------------------------------------------------------


async def test_register_creates_an_argon2id_account_and_signs_in(
        gql: Gql, pool: asyncpg.Pool, settings: Settings) -> None:
    body = await gql(REGISTER, {"input": {"email": "Ada@Example.com", "password": "s3cret-enough",
                                          "displayName": " Ada ", "timezone": "Europe/Paris"}})
    payload = body["data"]["register"]
    assert payload["user"]["email"] == "Ada@Example.com"
    assert payload["user"]["displayName"] == "Ada"
    assert payload["user"]["timezone"] == "Europe/Paris"
    assert payload["user"]["dailyGoal"] == 5
    assert payload["user"]["role"] == "USER"
    assert payload["expiresIn"] == settings.jwt_access_token_expire_minutes * 60
    caller = decode_access_token(settings, payload["accessToken"])
    assert str(caller.id) == payload["user"]["id"] and caller.role == "user"
    stored = await pool.fetchval("select password_hash from users")
    assert stored.startswith("$argon2id$") and "s3cret-enough" not in stored
    # The refresh token is stored only as its SHA-256.
    token_hash = await pool.fetchval("select token_hash from refresh_tokens")
    assert len(token_hash) == 32 and payload["refreshToken"].encode() not in token_hash
    # And the access token works.
    assert "errors" not in await gql(TASKS, token=payload["accessToken"])


async def test_register_defaults_timezone_to_utc(gql: Gql) -> None:
    body = await gql(REGISTER, {"input": {"email": "b@example.com", "password": "12345678",
                                          "displayName": "B"}})
    assert body["data"]["register"]["user"]["timezone"] == "UTC"


async def test_duplicate_email_in_any_case_is_bad_user_input(gql: Gql, pool: asyncpg.Pool) -> None:
    first = {"email": "dup@example.com", "password": "password-1", "displayName": "One"}
    assert "errors" not in await gql(REGISTER, {"input": first})
    body = await gql(REGISTER, {"input": {**first, "email": "DUP@example.COM"}})
    assert code(body) == "BAD_USER_INPUT"
    assert body["errors"][0]["extensions"]["field"] == "email"
    assert await table_counts(pool) == (1, 1, 0, 0)


@pytest.mark.parametrize(("changes", "field"), [
    ({"password": "short"}, "password"),
    ({"password": "x" * 129}, "password"),
    ({"email": "not-an-email"}, "email"),
    ({"email": "@example.com"}, "email"),
    ({"email": "a b@example.com"}, "email"),
    ({"displayName": "   "}, "displayName"),
    ({"displayName": "x" * 201}, "displayName"),
    ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
    ({"timezone": "utc "}, "timezone"),
])
async def test_register_rejects_bad_input_and_writes_nothing(
        gql: Gql, pool: asyncpg.Pool, changes: dict[str, str], field: str) -> None:
    good = {"email": "c@example.com", "password": "long-enough", "displayName": "C",
            "timezone": "UTC"}
    body = await gql(REGISTER, {"input": {**good, **changes}})
    assert code(body) == "BAD_USER_INPUT"
    assert body["errors"][0]["extensions"]["field"] == field
    assert body["data"] is None
    assert await table_counts(pool) == (0, 0, 0, 0)


async def test_password_limits_are_inclusive(gql: Gql) -> None:
    for n, password in enumerate(("x" * 8, "y" * 128)):
        body = await gql(REGISTER, {"input": {"email": f"edge{n}@example.com",
                                              "password": password, "displayName": "E"}})
        assert "errors" not in body, body


# --- login ---------------------------------------------------------------------------------------


async def test_login_with_the_right_password_in_any_email_case(gql: Gql, users: UserFactory,
                                                             settings: Settings) -> None:
    user = await users.create(email="Login@Example.com", role="admin")
    body = await gql(LOGIN, {"email": "  login@EXAMPLE.com", "password": PASSWORD})
    payload = body["data"]["login"]
    assert payload["user"]["id"] == str(user.id)
    caller = decode_access_token(settings, payload["accessToken"])
    assert caller.id == user.id and caller.role == "admin"


async def test_login_answers_the_same_for_unknown_email_and_wrong_password(
        gql: Gql, users: UserFactory, pool: asyncpg.Pool) -> None:
    await users.create(email="known@example.com")
    wrong = await gql(LOGIN, {"email": "known@example.com", "password": "wrong-password"})
    unknown = await gql(LOGIN, {"email": "nobody@example.com", "password": "wrong-password"})
    assert code(wrong) == code(unknown) == "UNAUTHENTICATED"
    assert wrong["errors"][0]["message"] == unknown["errors"][0]["message"]
    assert wrong["data"] is None and unknown["data"] is None
    assert await pool.fetchval("select count(*) from refresh_tokens") == 0


async def test_seeded_and_factory_hashes_verify(gql: Gql, users: UserFactory) -> None:
    await users.create(email="f@example.com")
    body = await gql(LOGIN, {"email": "f@example.com", "password": PASSWORD})
    assert "errors" not in body


# --- access tokens -------------------------------------------------------------------------------


def _claims(settings: Settings, user_id: uuid.UUID, **changes: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": str(user_id), "role": "user", "iat": now, "exp": now + timedelta(minutes=5),
        "iss": settings.jwt_issuer, "aud": settings.jwt_audience, "jti": uuid.uuid4().hex,
        "typ": "access"}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def bad_tokens(settings: Settings, user_id: uuid.UUID) -> dict[str, str]:
    """One token of each kind that must be refused, all naming a real user."""
    key, alg = settings.jwt_secret_key, settings.jwt_algorithm
    good = create_access_token(settings, user_id, "user")
    head, payload, signature = good.split(".")
    tampered_payload = jwt.utils.base64url_encode(  # type: ignore[attr-defined]
        jwt.utils.base64url_decode(payload).replace(b'"user"', b'"admin"')).decode()
    past = datetime.now(UTC) - timedelta(hours=2)
    return {
        "expired": jwt.encode(_claims(settings, user_id, iat=past,
                                      exp=past + timedelta(minutes=30)), key, algorithm=alg),
        "tampered": f"{head}.{tampered_payload}.{signature}",
        "wrong key": jwt.encode(_claims(settings, user_id), "another-secret-of-32-bytes-length!",
                                algorithm=alg),
        "alg none": jwt.encode(_claims(settings, user_id), None, algorithm="none"),
        "wrong audience": jwt.encode(_claims(settings, user_id, aud="someone-else"), key,
                                     algorithm=alg),
        "wrong issuer": jwt.encode(_claims(settings, user_id, iss="evil"), key, algorithm=alg),
        "refresh typ": jwt.encode(_claims(settings, user_id, typ="refresh"), key, algorithm=alg),
        "no jti": jwt.encode(_claims(settings, user_id, jti=None), key, algorithm=alg),
        "no exp": jwt.encode(_claims(settings, user_id, exp=None), key, algorithm=alg),
        "sub not a uuid": jwt.encode(_claims(settings, user_id, sub="admin"), key, algorithm=alg),
        "garbage": "not.a.jwt",
    }


BAD_KINDS = ["expired", "tampered", "wrong key", "alg none", "wrong audience", "wrong issuer",
             "refresh typ", "no jti", "no exp", "sub not a uuid", "garbage"]


@pytest.mark.parametrize("kind", BAD_KINDS)
async def test_each_bad_access_token_is_unauthenticated(
        gql: Gql, users: UserFactory, settings: Settings, kind: str) -> None:
    user = await users.create()
    await users.task(user, title="secret")
    token = bad_tokens(settings, user.id)[kind]
    with pytest.raises(Unauthenticated):
        decode_access_token(settings, token)
    body = await gql(TASKS, token=token)
    assert code(body) == "UNAUTHENTICATED"
    assert body["data"] is None


async def test_no_token_and_a_non_bearer_header_are_unauthenticated(
        gql: Gql, client: httpx.AsyncClient, users: UserFactory) -> None:
    assert code(await gql(TASKS)) == "UNAUTHENTICATED"
    body = await gql(TASKS, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert code(body) == "UNAUTHENTICATED"


async def test_a_refresh_token_is_never_an_access_token(gql: Gql, users: UserFactory) -> None:
    await users.create(email="r@example.com")
    payload = (await gql(LOGIN, {"email": "r@example.com", "password": PASSWORD}))["data"]["login"]
    assert code(await gql(TASKS, token=payload["refreshToken"])) == "UNAUTHENTICATED"


# --- profile -------------------------------------------------------------------------------------


async def test_update_profile_changes_only_the_fields_given(
        gql: Gql, users: UserFactory, token_for: Callable[..., str]) -> None:
    user = await users.create(timezone="UTC", daily_goal=5, display_name="Old")
    token = token_for(user.id)
    body = await gql(PROFILE, {"input": {"dailyGoal": 8}}, token=token)
    assert body["data"]["updateProfile"] == {"id": str(user.id), "displayName": "Old",
                                             "timezone": "UTC", "dailyGoal": 8}
    body = await gql(PROFILE, {"input": {"displayName": "New", "timezone": "Asia/Tokyo"}},
                     token=token)
    assert body["data"]["updateProfile"]["displayName"] == "New"
    assert body["data"]["updateProfile"]["timezone"] == "Asia/Tokyo"
    assert body["data"]["updateProfile"]["dailyGoal"] == 8


async def _seed_rollup(pool: asyncpg.Pool, user_id: uuid.UUID) -> None:
    await pool.execute("""insert into daily_analytics (user_id, date, tasks_created)
                          values ($1, '2026-01-01', 3), ($1, '2026-01-02', 1)""", user_id)
    await pool.execute("""insert into rollup_coverage (user_id, covered_from, covered_through)
                          values ($1, '2026-01-01', '2026-01-31')""", user_id)


async def test_a_timezone_change_drops_the_users_rollup_but_not_others(
        gql: Gql, users: UserFactory, pool: asyncpg.Pool, token_for: Callable[..., str]) -> None:
    user, other = await users.create(), await users.create()
    await _seed_rollup(pool, user.id)
    await _seed_rollup(pool, other.id)
    body = await gql(PROFILE, {"input": {"timezone": "America/New_York"}},
                     token=token_for(user.id))
    assert body["data"]["updateProfile"]["timezone"] == "America/New_York"
    for uid, rows in ((user.id, 0), (other.id, 2)):
        assert await pool.fetchval("select count(*) from daily_analytics where user_id = $1",
                                   uid) == rows
        assert await pool.fetchval("select count(*) from rollup_coverage where user_id = $1",
                                   uid) == min(rows, 1)


async def test_a_timezone_change_queues_a_rebuild_of_the_users_history(
        gql: Gql, users: UserFactory, client: httpx.AsyncClient,
        token_for: Callable[..., str]) -> None:
    user = await users.create()
    await gql(PROFILE, {"input": {"timezone": "Asia/Tokyo"}}, token=token_for(user.id))
    arq = client.app.state.resources.arq  # type: ignore[attr-defined]
    job = await Job(rebuild_job_id(user.id), arq).info()
    assert job is not None and job.function == AGGREGATE_JOB
    # A goal change alone keeps the rollup, so it queues no rebuild.
    other = await users.create()
    await gql(PROFILE, {"input": {"dailyGoal": 9}}, token=token_for(other.id))
    assert await Job(rebuild_job_id(other.id), arq).info() is None


async def test_a_daily_goal_change_keeps_the_rollup(
        gql: Gql, users: UserFactory, pool: asyncpg.Pool, token_for: Callable[..., str]) -> None:
    user = await users.create()
    await _seed_rollup(pool, user.id)
    body = await gql(PROFILE, {"input": {"dailyGoal": 100, "timezone": "UTC"}},
                     token=token_for(user.id))
    assert body["data"]["updateProfile"]["dailyGoal"] == 100
    assert await pool.fetchval("select count(*) from daily_analytics") == 2


@pytest.mark.parametrize(("changes", "field"), [
    ({"dailyGoal": 0}, "dailyGoal"),
    ({"dailyGoal": 101}, "dailyGoal"),
    ({"timezone": "Europe/Atlantis", "dailyGoal": 7}, "timezone"),
    ({"displayName": "", "dailyGoal": 7}, "displayName"),
])
async def test_bad_profile_input_changes_nothing(
        gql: Gql, users: UserFactory, pool: asyncpg.Pool, token_for: Callable[..., str],
        changes: dict[str, Any], field: str) -> None:
    user = await users.create(display_name="Same", daily_goal=5)
    await _seed_rollup(pool, user.id)
    before = await pool.fetchrow("select display_name, timezone, daily_goal, updated_at "
                                 "from users")
    body = await gql(PROFILE, {"input": changes}, token=token_for(user.id))
    assert code(body) == "BAD_USER_INPUT"
    assert body["errors"][0]["extensions"]["field"] == field
    assert await pool.fetchrow("select display_name, timezone, daily_goal, updated_at "
                               "from users") == before
    assert await pool.fetchval("select count(*) from daily_analytics") == 2


async def test_update_profile_needs_a_caller(gql: Gql, users: UserFactory) -> None:
    body = await gql(PROFILE, {"input": {"dailyGoal": 3}})
    assert code(body) == "UNAUTHENTICATED"

