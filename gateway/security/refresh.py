"""Refresh tokens: opaque, stored hashed, rotated on every use, with reuse detection.

A refresh token is `secrets.token_urlsafe(32)`; the database keeps only its SHA-256, so a copy of
`refresh_tokens` signs nobody in. Every login starts a *family*; each `refreshToken` call marks the
presented token rotated and issues the next one of the family. Presenting a token that was already
rotated means two parties hold the chain (a stolen token, or a client replaying one), so the whole
family is revoked and everyone holding it must sign in again.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid

import asyncpg

from gateway.data.db import query
from gateway.errors import Unauthenticated
from gateway.ops.settings import Settings


def hash_token(token: str) -> bytes:
    """The SHA-256 of a refresh token, as stored in `refresh_tokens.token_hash`."""
    return hashlib.sha256(token.encode()).digest()


async def issue_refresh_token(conn: asyncpg.Connection, settings: Settings, user_id: uuid.UUID,
                              family_id: uuid.UUID | None = None) -> str:
    """A new refresh token for `user_id`, in `family_id` or (at sign-in) in a new family."""
    token = secrets.token_urlsafe(32)
    await conn.execute(query("insert_refresh_token"), user_id, family_id or uuid.uuid4(),
                       hash_token(token), settings.jwt_refresh_token_expire_days)
    return token


async def rotate_refresh_token(pool: asyncpg.Pool, settings: Settings, token: str
                               ) -> tuple[asyncpg.Record, str]:
    """Rotate `token`: (its user's row, the next token of its family) in one transaction.

    `Unauthenticated` when the token cannot be used. A token that was already rotated is a reuse:
    its family is revoked (and that revocation committed) before the error is raised. Of two
    concurrent uses of one token the second waits on the first's row lock, then finds the token
    rotated, so exactly one succeeds.
    """
    token_hash = hash_token(token)
    async with pool.acquire() as conn:
        async with conn.transaction():
            row = await conn.fetchrow(query("rotate_refresh_token"), token_hash)
            if row is not None:
                user = await conn.fetchrow(query("user_by_id"), row["user_id"])
                new_token = await issue_refresh_token(conn, settings, row["user_id"],
                                                      row["family_id"])
                return user, new_token
        # Nothing was written: find out why, outside the transaction, so a revocation commits.
        state = await conn.fetchrow(query("refresh_token_state"), token_hash)
        if state is None:
            raise Unauthenticated("Invalid refresh token")
        if state["revoked_at"] is not None:
            raise Unauthenticated("Refresh token revoked")
        if state["rotated_at"] is not None:
            await conn.execute(query("revoke_refresh_family"), state["family_id"])
            raise Unauthenticated("Refresh token already used; sign in again")
        raise Unauthenticated("Refresh token expired")


async def revoke_family_of(pool: asyncpg.Pool, token: str) -> bool:
    """Revoke the family `token` belongs to (logout). False when the token is unknown."""
    async with pool.acquire() as conn:
        state = await conn.fetchrow(query("refresh_token_state"), hash_token(token))
        if state is None:
            return False
        await conn.execute(query("revoke_refresh_family"), state["family_id"])
        return True
