"""`GET /export/tasks.csv`: streamed COPY output compared with the database, limits, auth."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import pytest

from gateway.ops.settings import Settings
from tests.factories import User, UserFactory
from tests.test_auth import BAD_KINDS, bad_tokens

HEADER = ["id", "title", "description", "status", "priority", "due_date", "created_at",
          "updated_at", "started_at", "completed_at"]
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


async def fill(pool: asyncpg.Pool, user: User, n: int) -> None:
    """n tasks with awkward text (commas, quotes, newlines, formula starts) and every status."""
    await pool.execute(
        """insert into tasks (user_id, title, description, status, priority, due_date,
                              created_at, started_at, completed_at)
           select $1,
                  case i % 5 when 0 then 'plain ' || i when 1 then 'comma, "quoted" ' || i
                             when 2 then '=SUM(A1:A9) ' || i when 3 then e'multi\nline ' || i
                             else 'ünïcødé ✓ ' || i end,
                  repeat('d', 150) || i,
                  (array['todo', 'in_progress', 'done'])[1 + i % 3],
                  (array['low', 'medium', 'high'])[1 + i % 3],
                  case when i % 4 = 0 then null else date '2026-01-01' + i % 90 end,
                  timestamptz '2026-01-01 00:00:00+00' + i * interval '1 minute 1.5 second',
                  case when i % 3 > 0 then now() end,
                  case when i % 3 = 2 then now() end
           from generate_series(1, $2) as i""", user.id, n)


def parse(response: httpx.Response) -> list[dict[str, str]]:
    reader = csv.reader(io.StringIO(response.text, newline=""))
    rows = list(reader)
    assert rows[0] == HEADER
    return [dict(zip(HEADER, row, strict=True)) for row in rows[1:]]


def as_cell(value: Any) -> str:
    """How the export writes a database value."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds").replace("+00:00", "Z")
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return str(value)


async def test_a_multi_chunk_export_matches_the_database(
        client: httpx.AsyncClient, alice: User, users: UserFactory, pool: asyncpg.Pool,
        token_for: Callable[..., str]) -> None:
    await fill(pool, alice, 1500)  # ~300 KB: several 64 KiB chunks
    await pool.execute("update tasks set deleted = true, deleted_at = now() "
                       "where title like 'plain 1_'")
    bob = await users.create()
    await users.task(bob, title="bob's task")
    response = await client.get("/export/tasks.csv",
                                headers={"Authorization": f"Bearer {token_for(alice.id)}"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["x-export-truncated"] == "false"
    assert "attachment" in response.headers["content-disposition"]
    assert len(response.content) > 4 * 64 * 1024
    exported = parse(response)
    expected = await pool.fetch(
        f"select {', '.join(HEADER)} from tasks where user_id = $1 and not deleted "
        "order by created_at, id", alice.id)
    assert len(expected) == 1500 - 2  # 'plain 10', 'plain 15'... two of them match 1_
    assert int(response.headers["x-export-rows"]) == len(expected)
    assert exported == [{k: as_cell(row[k]) for k in HEADER} for row in expected]
    assert "bob's task" not in response.text


async def test_the_export_is_cut_at_max_export_rows_and_says_so(
        settings: Settings, app_with: Callable[..., Any], alice: User, pool: asyncpg.Pool,
        token_for: Callable[..., str]) -> None:
    await fill(pool, alice, 26)
    headers = {"Authorization": f"Bearer {token_for(alice.id)}"}
    async with app_with(settings, max_export_rows=25) as client:
        response = await client.get("/export/tasks.csv", headers=headers)
        assert response.headers["x-export-truncated"] == "true"
        assert response.headers["x-export-rows"] == "25"
        rows = parse(response)
        first_25 = await pool.fetch("select id from tasks order by created_at, id limit 25")
        assert [r["id"] for r in rows] == [str(r["id"]) for r in first_25]
        # Exactly at the limit is not "cut".
        await pool.execute("delete from tasks where id = (select id from tasks "
                           "order by created_at desc limit 1)")
        response = await client.get("/export/tasks.csv", headers=headers)
        assert response.headers["x-export-truncated"] == "false"
        assert len(parse(response)) == 25


async def test_filters_match_the_graphql_ones(client: httpx.AsyncClient, alice: User,
                                              users: UserFactory, pool: asyncpg.Pool,
                                              token_for: Callable[..., str]) -> None:
    await fill(pool, alice, 60)
    await users.task(alice, title="100% done_ish")
    headers = {"Authorization": f"Bearer {token_for(alice.id)}"}

    async def exported(**params: str) -> list[str]:
        response = await client.get("/export/tasks.csv", params=params, headers=headers)
        assert response.status_code == 200, response.text
        return [row["id"] for row in parse(response)]

    async def in_db(where: str, *args: Any) -> list[str]:
        rows = await pool.fetch(f"select id from tasks where not deleted and {where} "
                                "order by created_at, id", *args)
        return [str(r["id"]) for r in rows]

    assert await exported(status="done") == await in_db("status = 'done'")
    assert await exported(status="IN_PROGRESS", priority="Medium") == await in_db(
        "status = 'in_progress' and priority = 'medium'")
    assert await exported(due_from="2026-01-10", due_to="2026-01-20") == await in_db(
        "due_date between '2026-01-10' and '2026-01-20'")
    assert await exported(search="QUOTED") == await in_db("title ilike '%quoted%'")
    assert await exported(search="0%") == await in_db("title like '100\\%%'")
    assert await exported(search="e_i") == await in_db("title like '%e\\_i%'")
    assert len(await exported(search="e_i")) == 1


@pytest.mark.parametrize(("query", "says"), [
    ("status=archived", "status"),
    ("priority=urgent", "priority"),
    ("due_from=2026-13-01", "due_from"),
    ("due_to=20260101", "due_to"),
    ("due_from=2026-02-02&due_to=2026-02-01", "due_from"),
    ("stauts=done", "stauts"),
    ("status=done&status=todo", "status"),
])
async def test_bad_filters_are_400_with_a_readable_message(
        client: httpx.AsyncClient, alice: User, token_for: Callable[..., str],
        query: str, says: str) -> None:
    response = await client.get(f"/export/tasks.csv?{query}",
                                headers={"Authorization": f"Bearer {token_for(alice.id)}"})
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert says in error["message"]
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": says}


@pytest.mark.parametrize("kind", ["missing", "not bearer", *BAD_KINDS])
async def test_bad_or_missing_tokens_are_401_json(
        client: httpx.AsyncClient, alice: User, pool: asyncpg.Pool, settings: Settings,
        kind: str) -> None:
    await fill(pool, alice, 3)
    if kind == "missing":
        headers = {}
    elif kind == "not bearer":
        headers = {"Authorization": "Basic YWxpY2U6cGFzcw=="}
    else:
        headers = {"Authorization": f"Bearer {bad_tokens(settings, alice.id)[kind]}"}
    response = await client.get("/export/tasks.csv", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["errors"][0]
    assert isinstance(error["message"], str)
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    assert "plain" not in response.text


async def test_another_user_and_an_empty_account_get_only_a_header(
        client: httpx.AsyncClient, alice: User, users: UserFactory, pool: asyncpg.Pool,
        token_for: Callable[..., str]) -> None:
    await fill(pool, alice, 10)
    bob = await users.create()
    response = await client.get("/export/tasks.csv",
                                headers={"Authorization": f"Bearer {token_for(bob.id)}"})
    assert response.status_code == 200
    assert parse(response) == []
    assert response.headers["x-export-rows"] == "0"
    # A token for a user id that does not exist (a deleted account) gets no export at all.
    response = await client.get("/export/tasks.csv",
                                headers={"Authorization": f"Bearer {token_for(uuid.uuid4())}"})
    assert response.status_code == 401 and "text/csv" not in response.headers["content-type"]


async def test_formula_cells_are_defused(client: httpx.AsyncClient, alice: User,
                                         users: UserFactory,
                                         token_for: Callable[..., str]) -> None:
    for title in ("=HYPERLINK(\"http://evil\")", "+1", "-1", "@SUM(1)", "safe = fine"):
        await users.task(alice, title=title, description="=cmd|' /C calc'!A0")
    response = await client.get("/export/tasks.csv",
                                headers={"Authorization": f"Bearer {token_for(alice.id)}"})
    rows = parse(response)
    assert sorted(r["title"] for r in rows) == sorted(
        ["'=HYPERLINK(\"http://evil\")", "'+1", "'-1", "'@SUM(1)", "safe = fine"])
    assert {r["description"] for r in rows} == {"'=cmd|' /C calc'!A0"}


async def test_a_reader_that_stops_reading_frees_the_connection(
        alice: User, pool: asyncpg.Pool, database_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Nobody iterates the body (a client that left before the first byte): the producer must give
    # up after STALL_TIMEOUT and return its connection rather than hold it for ever.
    from gateway.http import export

    monkeypatch.setattr(export, "STALL_TIMEOUT", 0.2)
    monkeypatch.setattr(export, "CHUNK_BYTES", 1024)
    await fill(pool, alice, 500)
    own = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        stream = export._CopyStream(own, (alice.id, None, None, None, None, None), 1000)
        assert await stream.start() == 500
        assert stream.task is not None
        await asyncio.wait_for(stream.task, 30)
        # The single connection is usable again.
        assert await asyncio.wait_for(own.fetchval("select 1"), 30) == 1
    finally:
        await own.close()


async def test_a_body_closed_early_lets_the_copy_run_out_and_frees_the_connection(
        alice: User, pool: asyncpg.Pool, database_url: str) -> None:
    from gateway.http import export

    await fill(pool, alice, 3000)
    own = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        stream = export._CopyStream(own, (alice.id, None, None, None, None, None), 10_000)
        assert await stream.start() == 3000
        body = stream.chunks()
        first = await anext(body)
        assert first.startswith(b"id,title,")
        await body.aclose()  # what Starlette does when the client disconnects mid-stream
        assert stream.task is not None
        await asyncio.wait_for(stream.task, 30)  # the COPY ran out, its rows discarded
        assert stream.abandoned and stream.queue.empty()
        assert await asyncio.wait_for(own.fetchval("select 1"), 30) == 1
    finally:
        await own.close()
