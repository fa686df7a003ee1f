"""Access tokens (JWT) and the caller they name.

An access token carries `sub` (the user id), `role`, `exp`, `iat`, `iss`, `aud`, `jti` and
`typ="access"`. Decoding pins the configured algorithm and requires every one of those claims, so
an `alg: none` token, a token for another audience, or a refresh token never passes.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
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


VERIFIED_CACHE_SIZE = 10_000  # tokens per process; a few MB at most


class _VerifiedTokens:
    """Access tokens this process has verified, with their expiry: a dashboard sends the same
    token on every request, and verifying it (base64, JSON, HMAC, claims) costs more than the
    rest of a cached answer. Bounded (least recently used out), keyed by the token and the
    settings that verified it (secret, algorithm, audience, issuer), so a token verified under
    one configuration proves nothing under another. Only valid tokens are kept; expiry is still
    checked on every use, to the second, exactly as PyJWT checks it (`exp <= now` is expired)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[str, ...], tuple[Caller, float]] = OrderedDict()

    def get(self, key: tuple[str, ...]) -> tuple[Caller, float] | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: tuple[str, ...], caller: Caller, expires: float) -> None:
        self._entries[key] = (caller, expires)
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def drop(self, key: tuple[str, ...]) -> None:
        self._entries.pop(key, None)


_VERIFIED = _VerifiedTokens(VERIFIED_CACHE_SIZE)


def decode_access_token(settings: Settings, token: str) -> Caller:
    """The caller named by a valid access token; `Unauthenticated` for anything else."""
    return verify_access_token(settings, token)[0]


def verify_access_token(settings: Settings, token: str) -> tuple[Caller, float]:
    """The caller named by a valid access token and when it expires (unix seconds: a live
    connection is closed then); `Unauthenticated` for anything else."""
    key = (token, settings.jwt_secret_key, settings.jwt_algorithm, settings.jwt_audience,
           settings.jwt_issuer)
    known = _VERIFIED.get(key)
    if known is not None:
        if known[1] > time.time():
            return known
        _VERIFIED.drop(key)
        raise Unauthenticated("Access token expired")
    caller, expires = _verify(settings, token)
    _VERIFIED.put(key, caller, expires)
    return caller, expires


def _verify(settings: Settings, token: str) -> tuple[Caller, float]:
    """PyJWT's full check of a token: signature, algorithm, claims, expiry."""
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
        return (Caller(uuid.UUID(claims["sub"]), str(claims.get("role", "user"))),
                float(claims["exp"]))
    except (ValueError, TypeError):
        raise Unauthenticated("Invalid access token") from None


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None when there is none."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Authorization header must be 'Bearer <token>'")
    return token.strip()
