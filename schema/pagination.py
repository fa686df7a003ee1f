"""Cursor connections (`edges { node cursor }`, `pageInfo`), generic over the node type.

A cursor is the opaque, URL-safe base64 of a row's sort key `(created_at, id)`: the next page is
`where (created_at, id) > (cursor)`, which stays correct while rows are inserted or deleted between
pages (an offset would skip or repeat rows) and uses an index on `(…, created_at)`.
`Connection[Task]` is named `TaskConnection` in the SDL, `Connection[User]` `UserConnection`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import strawberry

from resolvers.pagination import DEFAULT_PAGE_SIZE, encode_cursor

__all__ = ["DEFAULT_PAGE_SIZE", "Connection", "Edge", "PageInfo", "build_connection"]

T = TypeVar("T")


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
