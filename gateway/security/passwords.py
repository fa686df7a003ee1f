"""Password hashing with Argon2id (argon2-cffi's `PasswordHasher` defaults).

Hashing and verifying cost ~0.2 s of CPU each by design, so both run in a worker thread: on the
event loop they would stall every other request of the process for that long.
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from gateway.errors import BadUserInput

MIN_LENGTH = 8
MAX_LENGTH = 128  # Argon2 would take more; the cap keeps a huge password from being a CPU lever

# Verified against when the email is unknown, so that "no such user" costs the same time as
# "wrong password" and a login's answer time does not tell which emails have accounts.
_DUMMY_HASH = ("$argon2id$v=19$m=65536,t=3,p=4$SUrJmld1YoO6RHnRx90Iqw$"
               "lGT4tsYp5LHUJcJBoAGkvSLbeh58h+ZpwkRGP3/+gDM")


def check_password_rules(password: str, field: str = "password") -> None:
    """BAD_USER_INPUT unless the password has 8..128 characters."""
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise BadUserInput(f"Password must have {MIN_LENGTH} to {MAX_LENGTH} characters",
                           field=field)


async def hash_password(password: str) -> str:
    """The Argon2id hash of `password` (PHC string, parameters included)."""
    return await asyncio.to_thread(PasswordHasher().hash, password)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return PasswordHasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def verify_password(password_hash: str | None, password: str) -> bool:
    """True when `password` matches `password_hash`. With no hash (unknown user) a dummy hash is
    verified anyway and False returned, so both failures take the same time."""
    if password_hash is None:
        await asyncio.to_thread(_verify, _DUMMY_HASH, password)
        return False
    return await asyncio.to_thread(_verify, password_hash, password)
