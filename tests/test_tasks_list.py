"""The `tasks` connection: cursor pages, page-size limits, filters."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from tests.factories import User, UserFactory

Gql = Callable[..., Awaitable[dict[str, Any]]]
LIST = """query($filter: TaskFilter, $first: Int, $after: String) {
  tasks(filter: $filter, first: $first, after: $after) {
    edges { cursor node { id title status priority dueDate } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }"""
BASE = datetime(2026, 3, 1, 9, tzinfo=UTC)


def code(body: dict[str, Any]) -> str:
    return str(body["errors"][0]["extensions"]["code"])




async def test_pages_walk_every_task_once_in_creation_order(
        as_alice: Gql, alice: User, users: UserFactory, pool: asyncpg.Pool) -> None:
    # 120 tasks, ten of them sharing one created_at (the id breaks the tie), plus deleted ones
    # and another user's, which never show.
    for i in range(120):
        at = BASE + timedelta(minutes=i if i >= 10 else 0)
        await users.task(alice, title=f"task {i}", created_at=at)
    for i in range(3):
        await users.task(alice, title=f"gone {i}", deleted=True, deleted_at=BASE,
                         created_at=BASE + timedelta(minutes=30))
    bob = await users.create()
    await users.task(bob, title="bob's", created_at=BASE + timedelta(minutes=5))
    expected = [str(r["id"]) for r in await pool.fetch(
        "select id from tasks where user_id = $1 and not deleted order by created_at, id",
        alice.id)]

    seen: list[str] = []
    after = None
    pages = 0
    while True:
        body = await as_alice(LIST, {"first": 50, "after": after})
        connection = body["data"]["tasks"]
        seen += [edge["node"]["id"] for edge in connection["edges"]]
        info = connection["pageInfo"]
        assert info["hasPreviousPage"] is (after is not None)
        assert info["endCursor"] == connection["edges"][-1]["cursor"]
        pages += 1
        if not info["hasNextPage"]:
            break
        after = info["endCursor"]
    assert pages == 3
    assert seen == expected


async def test_default_page_is_50_and_first_is_capped(as_alice: Gql, alice: User,
                                                      users: UserFactory) -> None:
    for i in range(55):
        await users.task(alice, title=f"t{i}", created_at=BASE + timedelta(seconds=i))
    body = await as_alice("{ tasks { edges { node { id } } pageInfo { hasNextPage } } }")
    assert len(body["data"]["tasks"]["edges"]) == 50
    assert body["data"]["tasks"]["pageInfo"]["hasNextPage"] is True
    body = await as_alice(LIST, {"first": 100})
    assert len(body["data"]["tasks"]["edges"]) == 55
    assert body["data"]["tasks"]["pageInfo"]["hasNextPage"] is False
    for first in (101, 0, -1):
        body = await as_alice(LIST, {"first": first})
        assert code(body) == "BAD_USER_INPUT"
        assert body["errors"][0]["extensions"]["field"] == "first"


@pytest.mark.parametrize("cursor", [
    "garbage!", "", base64.urlsafe_b64encode(b"v1|yesterday|x").decode(),
    base64.urlsafe_b64encode(b"2026-01-01T00:00:00+00:00|not-a-uuid").decode(),
    base64.urlsafe_b64encode(b"v1|2026-01-01T00:00:00|8c5a3a4e-4b8e-4b7a-9a55-4b8b8e3c9c11")
    .decode(),  # no offset
])
async def test_a_malformed_cursor_is_bad_user_input(as_alice: Gql, cursor: str) -> None:
    body = await as_alice(LIST, {"after": cursor})
    assert code(body) == "BAD_USER_INPUT"
    assert body["errors"][0]["extensions"]["field"] == "after"


async def test_filters(as_alice: Gql, alice: User, users: UserFactory) -> None:
    rows = [
        ("Pay 100% of rent", "todo", "high", date(2026, 3, 1)),
        ("pay_taxes", "done", "low", date(2026, 3, 15)),
        ("Buy milk", "in_progress", "high", None),
        ("Call mum", "todo", "medium", date(2026, 4, 1)),
    ]
    for i, (title, status, priority, due) in enumerate(rows):
        extra = {"completed_at": BASE} if status == "done" else {}
        await users.task(alice, title=title, status=status, priority=priority, due_date=due,
                         created_at=BASE + timedelta(minutes=i), **extra)

    async def titles(flt: dict[str, Any]) -> list[str]:
        body = await as_alice(LIST, {"filter": flt})
        assert "errors" not in body, body
        return [e["node"]["title"] for e in body["data"]["tasks"]["edges"]]

    assert await titles({"status": "TODO"}) == ["Pay 100% of rent", "Call mum"]
    assert await titles({"priority": "HIGH"}) == ["Pay 100% of rent", "Buy milk"]
    assert await titles({"status": "TODO", "priority": "HIGH"}) == ["Pay 100% of rent"]
    assert await titles({"dueFrom": "2026-03-01", "dueTo": "2026-03-15"}) == [
        "Pay 100% of rent", "pay_taxes"]
    assert await titles({"dueFrom": "2026-03-02"}) == ["pay_taxes", "Call mum"]
    assert await titles({"dueTo": "2026-03-01"}) == ["Pay 100% of rent"]
    assert await titles({"search": "PAY"}) == ["Pay 100% of rent", "pay_taxes"]
    # % and _ are literal characters, not wildcards.
    assert await titles({"search": "100%"}) == ["Pay 100% of rent"]
    assert await titles({"search": "y_t"}) == ["pay_taxes"]
    assert await titles({"search": "%"}) == ["Pay 100% of rent"]
    assert await titles({"search": "   "}) == [r[0] for r in rows]  # blank: no filter


async def test_due_from_after_due_to_is_bad_user_input(as_alice: Gql) -> None:
    body = await as_alice(LIST, {"filter": {"dueFrom": "2026-03-02", "dueTo": "2026-03-01"}})
    assert code(body) == "BAD_USER_INPUT"
    assert body["errors"][0]["extensions"]["field"] == "dueFrom"


async def test_listing_needs_a_caller(gql: Gql, users: UserFactory) -> None:
    assert code(await gql(LIST)) == "UNAUTHENTICATED"
