"""Account resolvers: register, login, refresh, logout and profile changes.

Sign-in answers UNAUTHENTICATED with one message whether the email is unknown or the password is
wrong (and spends the same Argon2 time on both), so the answer does not tell which emails exist.
Registration has to say that an email is taken: the product asks for it.
"""

from __future__ import annotations

import functools
import zoneinfo
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg
import strawberry

from domain import changes as events
from gateway.data.db import query
from gateway.data.resources import Resources
from gateway.errors import BadUserInput, Unauthenticated
from gateway.security.access import create_access_token
from gateway.security.passwords import check_password_rules, hash_password, verify_password
from gateway.security.ratelimit import check_login_rate
from gateway.security.refresh import issue_refresh_token, revoke_family_of, rotate_refresh_token
from resolvers.context import Info


class RegisterInput(Protocol):
    """A new account's fields (schema/auth.py's `RegisterInput`)."""

    @property
    def email(self) -> str: ...
    @property
    def password(self) -> str: ...
    @property
    def display_name(self) -> str: ...
    @property
    def timezone(self) -> str | None: ...


class ProfileInput(Protocol):
    """Profile changes; an omitted field is `strawberry.UNSET` (schema/auth.py's `ProfileInput`)."""

    @property
    def display_name(self) -> Any: ...
    @property
    def timezone(self) -> Any: ...
    @property
    def daily_goal(self) -> Any: ...

EMAIL_MAX = 320
DISPLAY_NAME_MAX = 200
DAILY_GOAL_RANGE = (1, 100)


@dataclass(frozen=True)
class Session:
    """What a sign-in hands out: the user's row and a fresh token pair."""

    user: asyncpg.Record
    access_token: str
    refresh_token: str
    expires_in: int  # seconds the access token lives


@functools.cache
def known_timezones() -> frozenset[str]:
    """The IANA zone names of the system's zone database (read once: it is a directory walk)."""
    return frozenset(zoneinfo.available_timezones())


def check_timezone(name: str) -> str:
    if name not in known_timezones():
        raise BadUserInput(f"Unknown time zone {name!r}; use an IANA name such as "
                           "'Europe/Paris'", field="timezone")
    return name


def check_email(email: str) -> str:
    """The email without surrounding blanks; BAD_USER_INPUT unless it looks like one."""
    email = email.strip()
    local, at, domain = email.rpartition("@")
    if (not at or not local or not domain or len(email) > EMAIL_MAX
            or any(c.isspace() for c in email)):
        raise BadUserInput("Enter a valid email address", field="email")
    return email


def check_display_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= DISPLAY_NAME_MAX:
        raise BadUserInput(f"displayName must have 1 to {DISPLAY_NAME_MAX} characters",
                           field="displayName")
    return name


def check_daily_goal(goal: int) -> int:
    low, high = DAILY_GOAL_RANGE
    if not low <= goal <= high:
        raise BadUserInput(f"dailyGoal must be between {low} and {high}", field="dailyGoal")
    return goal


async def _start_session(resources: Resources, conn: asyncpg.Connection,
                         user: asyncpg.Record) -> Session:
    """Tokens for a fresh sign-in: an access token and the first refresh token of a new family."""
    settings = resources.settings
    refresh = await issue_refresh_token(conn, settings, user["id"])
    return Session(user, create_access_token(settings, user["id"], user["role"]), refresh,
                   settings.jwt_access_token_expire_minutes * 60)


async def register(info: Info, data: RegisterInput) -> Session:
    info.context.no_store()  # the answer carries tokens: no cache or proxy may keep it
    email = check_email(data.email)
    check_password_rules(data.password)
    display_name = check_display_name(data.display_name)
    timezone = check_timezone(data.timezone or "UTC")
    password_hash = await hash_password(data.password)
    resources = info.context.resources
    async with resources.pool.acquire() as conn, conn.transaction():
        try:
            user = await conn.fetchrow(query("insert_user"), email, password_hash, display_name,
                                       timezone)
        except asyncpg.UniqueViolationError:
            raise BadUserInput("An account with this email already exists",
                               field="email") from None
        return await _start_session(resources, conn, user)


async def login(info: Info, email: str, password: str) -> Session:
    info.context.no_store()
    resources = info.context.resources
    # Per account and per IP, before the password is checked (gateway/security/ratelimit.py).
    await check_login_rate(resources, email, info.context.client_ip)
    user = await resources.pool.fetchrow(query("user_for_login"), email.strip())
    ok = await verify_password(user["password_hash"] if user else None, password)
    if user is None or not ok:
        raise Unauthenticated("Invalid email or password")
    async with resources.pool.acquire() as conn:
        return await _start_session(resources, conn, user)


async def refresh(info: Info, token: str) -> Session:
    """Rotate a refresh token: a new access token and the family's next refresh token."""
    info.context.no_store()
    resources = info.context.resources
    settings = resources.settings
    user, new_refresh = await rotate_refresh_token(resources.pool, settings, token)
    return Session(user, create_access_token(settings, user["id"], user["role"]), new_refresh,
                   settings.jwt_access_token_expire_minutes * 60)


async def logout(info: Info, token: str) -> bool:
    """Revoke the refresh token's family; False when the token is unknown."""
    return await revoke_family_of(info.context.resources.pool, token)


async def update_profile(info: Info, data: ProfileInput) -> asyncpg.Record:
    """Change display name, timezone or daily goal; omitted or null fields stay as they are.

    A new timezone moves every local day, so the user's rollup rows and coverage are deleted in
    the same transaction (the analytics then compute live until the worker rebuilds them).
    """
    caller = info.context.require_caller()
    display_name = (check_display_name(data.display_name)
                    if data.display_name not in (None, strawberry.UNSET) else None)
    timezone = (check_timezone(data.timezone)
                if data.timezone not in (None, strawberry.UNSET) else None)
    goal = (check_daily_goal(data.daily_goal)
            if data.daily_goal not in (None, strawberry.UNSET) else None)
    resources = info.context.resources
    async with resources.pool.acquire() as conn, conn.transaction():
        before = await conn.fetchrow(query("user_for_update"), caller.id)
        if before is None:  # a valid token for an account deleted since
            raise Unauthenticated("Account no longer exists")
        after = await conn.fetchrow(query("update_profile"), caller.id,
                                    display_name or before["display_name"],
                                    timezone or before["timezone"],
                                    goal or before["daily_goal"])
        timezone_changed = after["timezone"] != before["timezone"]
        if timezone_changed:
            await conn.execute(query("delete_user_rollups"), caller.id)
    if timezone_changed or after["daily_goal"] != before["daily_goal"]:
        await events.tasks_changed(resources, caller.id, rollup_reset=timezone_changed)
    return after
