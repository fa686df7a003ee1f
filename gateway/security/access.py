"""Access tokens (JWT) and the caller they name.

An access token carries `sub` (the user id), `role`, `exp`, `iat`, `iss`, `aud`, `jti` and
`typ="access"`. Decoding pins the configured algorithm and requires every one of those claims, so
an `alg: none` token, a token for another audience, or a refresh token never passes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from gateway.errors import Unauthenticated
from gateway.ops.settings import Settings

ACCESS = "access"
REQUIRED_CLAIMS = ["sub", "exp", "iat", "iss", "aud", "jti", "typ"]


@dataclass(frozen=True)
class Caller:
    """Who is asking: the user id and role from a verified access token."""

    id: uuid.UUID
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def create_access_token(settings: Settings, user_id: uuid.UUID | str, role: str,
                        *, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    claims = {
        "sub": str(user_id),
        "role": role,
        "iat": now,
        "exp": now + timedelta(minutes=settings.jwt_access_token_expire_minutes),
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "jti": uuid.uuid4().hex,
        "typ": ACCESS,
    }
    return jwt.encode(claims, settings.jwt_secret_key, algorithm=settings.jwt_algorithm)


def decode_access_token(settings: Settings, token: str) -> Caller:
    """The caller named by a valid access token; `Unauthenticated` for anything else."""
    try:
        claims = jwt.decode(token, settings.jwt_secret_key, algorithms=[settings.jwt_algorithm],
                            audience=settings.jwt_audience, issuer=settings.jwt_issuer,
                            options={"require": REQUIRED_CLAIMS})
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("Access token expired") from None
    except jwt.PyJWTError:
        raise Unauthenticated("Invalid access token") from None
    if claims.get("typ") != ACCESS:
        raise Unauthenticated("Invalid access token")
    try:
        return Caller(uuid.UUID(claims["sub"]), str(claims.get("role", "user")))
    except ValueError:
        raise Unauthenticated("Invalid access token") from None


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None when there is none."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Authorization header must be 'Bearer <token>'")
    return token.strip()
