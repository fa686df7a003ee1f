"""Cursor connections (`edges { node cursor }`, `pageInfo`), generic over the node type.

A cursor is the opaque, URL-safe base64 of a row's sort key `(created_at, id)`: the next page is
`where (created_at, id) > (cursor)`, which stays correct while rows are inserted or deleted between
pages (an offset would skip or repeat rows) and uses an index on `(…, created_at)`.
`Connection[Task]` is named `TaskConnection` in the SDL, `Connection[User]` `UserConnection`.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

import strawberry

from gateway.errors import BadUserInput

T = TypeVar("T")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
_PREFIX = "v1|"


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class Edge(Generic[T]):
    node: T
    cursor: str


@strawberry.type
class Connection(Generic[T]):
    edges: list[Edge[T]]
    page_info: PageInfo


def check_first(first: int | None) -> int:
    """The page size asked for: 1..100 (default 50), else BAD_USER_INPUT on `first`."""
    if first is None:
        return DEFAULT_PAGE_SIZE
    if not 1 <= first <= MAX_PAGE_SIZE:
        raise BadUserInput(f"first must be between 1 and {MAX_PAGE_SIZE}", field="first")
    return first


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    """The opaque cursor of a row whose sort key is (created_at, id)."""
    raw = f"{_PREFIX}{created_at.isoformat()}|{row_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, field: str = "after") -> tuple[datetime, uuid.UUID] | None:
    """The (created_at, id) a cursor stands for; None for no cursor; BAD_USER_INPUT when it is
    not one of ours (a client must treat cursors as opaque)."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith(_PREFIX):
            raise ValueError(raw)
        stamp, _, row_id = raw[len(_PREFIX):].rpartition("|")
        created_at = datetime.fromisoformat(stamp)
        if created_at.tzinfo is None:
            raise ValueError(stamp)
        return created_at, uuid.UUID(row_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadUserInput("Malformed cursor", field=field) from None


def build_connection(rows: Sequence[Any], first: int, to_node: Callable[[Any], T], *,
                     after: str | None = None) -> Connection[T]:
    """A page from `rows`, fetched with `limit first + 1` so that the extra row says whether a next
    page exists. Each row needs `created_at` and `id` (the cursor's key)."""
    page = rows[:first]
    edges = [Edge(node=to_node(row), cursor=encode_cursor(row["created_at"], row["id"]))
             for row in page]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=len(rows) > first,
            has_previous_page=after is not None,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
    )
