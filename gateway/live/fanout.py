"""The change messages that cross processes: "these users' figures changed".

After a change to a user's tasks or profile commits (domain/changes.py `tasks_changed`), and after
a worker raises users' data versions (workers/jobs.py), one message is published on the Redis
channel `CHANNEL`. Every API process listens (gateway/live/hub.py) and pushes fresh figures to its
local subscribers of those users. A message carries no figures, only who changed, so a lost or
duplicated one costs a push at most; subscribers compute the figures from PostgreSQL (through the
field cache, keyed by the data version the change raised).

Format, version 1 (`FORMAT`): JSON `{"v": 1, "users": ["<uuid>", ...], "at": <unix seconds>}`;
`at`, the moment of publication, is optional and only feeds the push delay metric. A message of
another version is ignored (logged once), so a rolling deploy that changes the format never
makes a process act on a message it misreads.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable
from typing import Any

import orjson

log = logging.getLogger(__name__)

CHANNEL = "analytics:live:v1"
FORMAT = 1
PUBLISH_TIMEOUT_S = 1.0  # a mutation's response never waits longer than this on the publish
MAX_USERS_PER_MESSAGE = 1000  # a worker's large batch goes out as several messages


def encode_change(user_ids: Iterable[uuid.UUID | str], at: float | None = None) -> bytes:
    """The message saying that these users' figures changed (published at `at`, default now)."""
    return orjson.dumps({"v": FORMAT, "users": [str(user) for user in user_ids],
                         "at": time.time() if at is None else at})


def decode_change(raw: bytes | str) -> tuple[list[uuid.UUID], float | None] | None:
    """(the users, the publication time) of a message; None for one this version cannot read."""
    try:
        message: Any = orjson.loads(raw)
        if not isinstance(message, dict) or message.get("v") != FORMAT:
            return None
        users = [uuid.UUID(str(user)) for user in message["users"]]
        at = message.get("at")
        return users, float(at) if isinstance(at, (int, float)) else None
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


async def publish(redis: Any, user_ids: Iterable[uuid.UUID]) -> bool:
    """Tell every API process that these users' figures changed. Best effort, never raises: the
    change is committed whatever happens here, and a subscriber that misses a message gets the
    figures at the next change, at its local midnight, or when its process's listener
    reconnects (every subscription then gets one push). Returns whether it was published."""
    ids = list(dict.fromkeys(user_ids))
    if redis is None or not ids:
        return False
    try:
        async with asyncio.timeout(PUBLISH_TIMEOUT_S):
            for start in range(0, len(ids), MAX_USERS_PER_MESSAGE):
                await redis.publish(CHANNEL,
                                    encode_change(ids[start:start + MAX_USERS_PER_MESSAGE]))
        return True
    except Exception as exc:  # Redis down, slow or refusing: the figures come at the next push
        log.warning("live change of %d user(s) not published: %s", len(ids), type(exc).__name__)
        return False
