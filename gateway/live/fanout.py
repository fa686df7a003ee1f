"""The change messages that cross processes: "these users' figures changed".

After a change to a user's tasks or profile commits (domain/changes.py `tasks_changed`), and after
a worker raises users' data versions (workers/jobs.py), one message is published on the Redis
channel `CHANNEL`. Every API process listens (gateway/live/hub.py) and pushes fresh figures to its
local subscribers of those users. A message carries no figures, only who changed, so a lost or
duplicated one costs a push at most; subscribers compute the figures from PostgreSQL (through the
field cache, keyed by the data version the change raised).

Format, version 1 (`FORMAT`): JSON `{"v": 1, "users": ["<uuid>", ...], "at": <unix seconds>,
"tasks": [["<uuid>", <version>, <change>], ...]}`; `at`, the moment of publication, is optional
and only feeds the push delay metric. `tasks`, optional too, carries what the API's task
mutations know of their change, for the users among `users` it names: the data version the
change's transaction raised the user to (by one) and the change itself, opaque here
(domain/deltas.py writes and reads it: the task's facts before and after), so that subscribers'
figures can be updated from it rather than recomputed (resolvers/live.py). An entry this process
cannot read costs only that: the user's figures are recomputed. A message of another version is
ignored (logged once), so a rolling deploy that changes the format never makes a process act on
a message it misreads; a reader older than `tasks` ignores it and recomputes.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

log = logging.getLogger(__name__)

CHANNEL = "analytics:live:v1"
FORMAT = 1
PUBLISH_TIMEOUT_S = 1.0  # a mutation's response never waits longer than this on the publish
MAX_USERS_PER_MESSAGE = 1000  # a worker's large batch goes out as several messages


TaskEntry = tuple[uuid.UUID, int, Any]
"""One user's change in a message: (user, the data version it raised them to, the change)."""


@dataclass(frozen=True, slots=True)
class Change:
    """A decoded message: who changed, when it was published, and the changes it describes."""

    users: list[uuid.UUID]
    at: float | None = None
    tasks: list[TaskEntry] = field(default_factory=list)


def encode_change(user_ids: Iterable[uuid.UUID | str], at: float | None = None,
                  tasks: Iterable[TaskEntry] = ()) -> bytes:
    """The message saying that these users' figures changed (published at `at`, default now),
    with the changes described in `tasks`, if any."""
    message: dict[str, Any] = {"v": FORMAT, "users": [str(user) for user in user_ids],
                               "at": time.time() if at is None else at}
    entries = [[str(user), version, change] for user, version, change in tasks]
    if entries:
        message["tasks"] = entries
    return orjson.dumps(message)


def decode_change(raw: bytes | str) -> Change | None:
    """A message, or None for one this version cannot read. A malformed `tasks` entry is left
    out (its user, still in `users`, is recomputed)."""
    try:
        message: Any = orjson.loads(raw)
        if not isinstance(message, dict) or message.get("v") != FORMAT:
            return None
        users = [uuid.UUID(str(user)) for user in message["users"]]
        at = message.get("at")
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    tasks: list[TaskEntry] = []
    entries = message.get("tasks")
    for entry in entries if isinstance(entries, list) else ():
        try:
            user, version, change = entry
            if isinstance(version, int) and not isinstance(version, bool):
                tasks.append((uuid.UUID(str(user)), version, change))
        except (TypeError, ValueError):
            continue
    return Change(users, float(at) if isinstance(at, (int, float)) else None, tasks)


async def publish(redis: Any, user_ids: Iterable[uuid.UUID],
                  tasks: Iterable[TaskEntry] = ()) -> bool:
    """Tell every API process that these users' figures changed. Best effort, never raises: the
    change is committed whatever happens here, and a subscriber that misses a message gets the
    figures at the next change, at its local midnight, or when its process's listener
    reconnects (every subscription then gets one push). Returns whether it was published."""
    ids = list(dict.fromkeys(user_ids))
    entries = list(tasks)
    if redis is None or not ids:
        return False
    try:
        async with asyncio.timeout(PUBLISH_TIMEOUT_S):
            for start in range(0, len(ids), MAX_USERS_PER_MESSAGE):
                chunk = ids[start:start + MAX_USERS_PER_MESSAGE]
                members = set(chunk)
                await redis.publish(CHANNEL, encode_change(
                    chunk, tasks=[entry for entry in entries if entry[0] in members]))
        return True
    except Exception as exc:  # Redis down, slow or refusing: the figures come at the next push
        log.warning("live change of %d user(s) not published: %s", len(ids), type(exc).__name__)
        return False
