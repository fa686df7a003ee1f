"""Hostile input: bytes PostgreSQL cannot store (NUL, lone surrogates), bodies that are not UTF-8
or nest without end, and every refusal made before GraphQL runs. Each is a JSON refusal with a
code (BAD_USER_INPUT naming the field for bad strings), never a 500 or a masked internal error,
and nothing is written."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import pytest

from gateway.ops.settings import Settings
from tests.factories import PASSWORD, User, UserFactory

NUL = "a\u0000b"
SURROGATE = "a\ud800b"
BAD_STRINGS = [pytest.param(NUL, id="nul"), pytest.param(SURROGATE, id="lone-surrogate")]

CREATE = "mutation($input: CreateTaskInput!) { createTask(input: $input) { id } }"
UPDATE = ("mutation($id: ID!, $input: UpdateTaskInput!) { updateTask(id: $id, input: $input) "
          "{ id } }")
TASKS = "query($filter: TaskFilter) { tasks(filter: $filter) { edges { node { id } } } }"
REGISTER = "mutation($input: RegisterInput!) { register(input: $input) { accessToken } }"
LOGIN = "mutation($email: String!, $password: String!) { login(email: $email, password: $password) { accessToken } }"  # noqa: E501
PROFILE = "mutation($input: ProfileInput!) { updateProfile(input: $input) { id } }"


def post_json(client: httpx.AsyncClient, payload: dict[str, Any], token: str | None = None,
              ) -> Any:
    """POST with the stdlib's encoder, which writes a lone surrogate as a `\\ud800` escape (as a
    JavaScript client's JSON.stringify of a broken string does)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return client.post("/graphql", content=json.dumps(payload).encode(), headers=headers)


def only_error(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert len(body["errors"]) == 1, body
    error: dict[str, Any] = body["errors"][0]
    assert isinstance(error["message"], str) and error["message"]
    assert error["extensions"]["code"] != "INTERNAL_SERVER_ERROR", body
    return error


async def snapshot(pool: asyncpg.Pool) -> tuple[list[tuple[Any, ...]], ...]:
    """Every row of users, tasks and refresh_tokens."""
    tables = []
    for table in ("users", "tasks", "refresh_tokens"):
        rows = await pool.fetch(f"select * from {table} order by 1")
        tables.append([tuple(row) for row in rows])
    return tuple(tables)


@pytest.fixture
async def task_id(alice: User, users: UserFactory) -> str:
    return str(await users.task(alice, title="kept"))


def cases(task: str) -> list[tuple[str, str, Callable[[str], dict[str, Any]]]]:
    """(query, field, variables for a bad string) for every string argument of the API."""
    return [
        (CREATE, "input.title", lambda s: {"input": {"title": s}}),
        (CREATE, "input.description", lambda s: {"input": {"title": "ok", "description": s}}),
        (UPDATE, "input.title", lambda s: {"id": task, "input": {"title": s}}),
        (UPDATE, "input.description", lambda s: {"id": task, "input": {"description": s}}),
        (UPDATE, "id", lambda s: {"id": s, "input": {"title": "ok"}}),
        (TASKS, "filter.search", lambda s: {"filter": {"search": s}}),
        (REGISTER, "input.email", lambda s: {"input": {"email": f"x{s}@example.com",
                                                      "password": PASSWORD,
                                                      "displayName": "X"}}),
        (REGISTER, "input.displayName", lambda s: {"input": {"email": "new@example.com",
                                                            "password": PASSWORD,
                                                            "displayName": s}}),
        (REGISTER, "input.password", lambda s: {"input": {"email": "new@example.com",
                                                         "password": PASSWORD + s,
                                                         "displayName": "X"}}),
        (LOGIN, "email", lambda s: {"email": f"alice{s}@example.com", "password": PASSWORD}),
        (LOGIN, "password", lambda s: {"email": "alice@example.com", "password": s}),
        (PROFILE, "input.displayName", lambda s: {"input": {"displayName": s}}),
        (PROFILE, "input.timezone", lambda s: {"input": {"timezone": s}}),
    ]


@pytest.mark.parametrize("bad", BAD_STRINGS)
async def test_a_bad_string_in_any_argument_is_bad_user_input_naming_it(
        client: httpx.AsyncClient, pool: asyncpg.Pool, alice: User, task_id: str,
        token_for: Callable[..., str], bad: str) -> None:
    token = token_for(alice.id)
    before = await snapshot(pool)
    for query, field, variables in cases(task_id):
        response = await post_json(client, {"query": query, "variables": variables(bad)}, token)
        error = only_error(response)
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": field}, (field, error)
        assert response.status_code == 400, (field, response.text)
        assert field in error["message"]
    assert await snapshot(pool) == before


@pytest.mark.parametrize(("query", "field"), [
    ('mutation { createTask(input: {title: "a\\u0000b"}) { id } }', "input.title"),
    ('mutation { createTask(input: {title: """a\u0000b"""}) { id } }', "input.title"),
    ('mutation($t: String!) { createTask(input: {title: "ok", description: $t}) { id } }',
     "input.description"),
    ('mutation($d: String = "a\\u0000") { createTask(input: {title: "ok", description: $d}) '
     '{ id } }', "input.description"),
    ('query { tasks(filter: {search: "\\u0000"}) { edges { node { id } } } }', "filter.search"),
    ('fragment F on Query { tasks(filter: {search: "\\u0000"}) { edges { node { id } } } } '
     'query { ...F }', "filter.search"),
    ('mutation { login(email: "a\\u0000@example.com", password: "x") { accessToken } }',
     "email"),
])
async def test_bad_strings_in_literals_and_nested_variables_are_caught_too(
        client: httpx.AsyncClient, pool: asyncpg.Pool, alice: User,
        token_for: Callable[..., str], query: str, field: str) -> None:
    before = await snapshot(pool)
    response = await post_json(client, {"query": query, "variables": {"t": NUL}},
                               token_for(alice.id))
    error = only_error(response)
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": field}
    assert response.status_code == 400
    assert await snapshot(pool) == before


async def test_strings_inside_lists_and_unknown_input_fields_are_checked(
        client: httpx.AsyncClient, pool: asyncpg.Pool, alice: User,
        token_for: Callable[..., str]) -> None:
    # An unknown input field named with a lone surrogate: graphql-core's message would echo it.
    response = await post_json(client, {"query": TASKS, "variables": {
        "filter": {"search": "ok", SURROGATE: 1}}}, token_for(alice.id))
    error = only_error(response)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["field"] == "filter"
    # A list where one value is expected: the item is named by its index.
    response = await post_json(client, {"query": TASKS, "variables": {
        "filter": {"search": ["ok", NUL]}}}, token_for(alice.id))
    error = only_error(response)
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "filter.search[1]"}


async def test_a_lone_surrogate_in_the_document_is_a_parse_error(
        client: httpx.AsyncClient, alice: User, token_for: Callable[..., str]) -> None:
    # GraphQL's own grammar has no lone surrogates: the document does not parse.
    for query in ('mutation { createTask(input: {title: "a\ud800"}) { id } }',
                  'mutation { createTask(input: {title: "a\\uD800"}) { id } }'):
        response = await post_json(client, {"query": query}, token_for(alice.id))
        assert only_error(response)["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"


@pytest.mark.parametrize("bad", BAD_STRINGS)
async def test_bad_strings_over_get_are_bad_user_input(
        client: httpx.AsyncClient, alice: User, token_for: Callable[..., str], bad: str) -> None:
    response = await client.get("/graphql", params={
        "query": TASKS, "variables": json.dumps({"filter": {"search": bad}})},
        headers={"Authorization": f"Bearer {token_for(alice.id)}"})
    error = only_error(response)
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "filter.search"}
    assert response.status_code == 400


async def test_good_unicode_still_works(client: httpx.AsyncClient, pool: asyncpg.Pool,
                                        alice: User, token_for: Callable[..., str]) -> None:
    title = "ünïcødé ✓ 𝄞 😀\ttab"
    response = await post_json(client, {"query": CREATE, "variables": {"input": {
        "title": title, "description": "é\u00a0\U0010fffd"}}}, token_for(alice.id))
    assert response.status_code == 200 and "errors" not in response.json(), response.text
    assert await pool.fetchval("select title from tasks") == title


async def test_export_refuses_a_nul_in_search_as_json(
        client: httpx.AsyncClient, alice: User, token_for: Callable[..., str]) -> None:
    response = await client.get("/export/tasks.csv?search=a%00",
                                headers={"Authorization": f"Bearer {token_for(alice.id)}"})
    assert response.status_code == 400
    error = only_error(response)
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "search"}


async def test_export_refusals_are_graphql_shaped(client: httpx.AsyncClient, alice: User,
                                                  token_for: Callable[..., str]) -> None:
    response = await client.get("/export/tasks.csv")
    assert response.status_code == 401
    assert only_error(response)["extensions"]["code"] == "UNAUTHENTICATED"
    assert response.headers["www-authenticate"].startswith("Bearer")
    response = await client.get("/export/tasks.csv?status=archived",
                                headers={"Authorization": f"Bearer {token_for(alice.id)}"})
    assert response.status_code == 400
    error = only_error(response)
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "status"}
    assert "status" in error["message"]


@pytest.mark.parametrize("body", [
    pytest.param(b'{"query": "{ version }", "variables": {"a": "\xff\xfe"}}', id="latin-1"),
    pytest.param(b'{"query": "{ version }", "variables": {"a": "\xed\xa0\x80"}}',
                 id="encoded-surrogate"),
    pytest.param('{"query": "{ version }"}'.encode("utf-16"), id="utf-16"),
])
async def test_a_body_that_is_not_utf_8_is_400(client: httpx.AsyncClient, body: bytes) -> None:
    response = await client.post("/graphql", content=body,
                                 headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    error = only_error(response)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "UTF-8" in error["message"]


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [300, 2000, 100_000])
async def test_deeply_nested_variables_are_400(client: httpx.AsyncClient, depth: int) -> None:
    body = f'{{"query": "{{ version }}", "variables": {{"a": {nested(depth)}}}}}'
    response = await client.post("/graphql", content=body,
                                 headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    error = only_error(response)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "deep" in error["message"]
    shallower = min(depth, 5_000)  # httpx refuses a URL over 64 KiB
    response = await client.get("/graphql", params={"query": "{ version }",
                                                    "variables": f'{{"a": {nested(shallower)}}}'})
    assert response.status_code == 400
    assert only_error(response)["extensions"]["code"] == "BAD_USER_INPUT"


async def test_deep_variables_do_not_break_the_response_cache(
        settings: Settings, app_with: Callable[..., Any], pool: asyncpg.Pool, redis: Any,
        alice: User, token_for: Callable[..., str]) -> None:
    # The response cache hashes the variables with orjson, which stops at 254 levels.
    body = ('{"query": "query($a: [Int]) { overview { totalTasks } }", "variables": {"a": '
            f'{nested(300)}}}}}')
    async with app_with(settings, enable_response_cache=True) as client:
        response = await client.post("/graphql", content=body, headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {token_for(alice.id)}"})
    assert response.status_code == 400
    assert only_error(response)["extensions"]["code"] == "BAD_USER_INPUT"


@pytest.mark.parametrize(("body", "says"), [
    (b'{"query": "{ version }"', "JSON"),
    (b"", "JSON"),
    (b'{"query": "{ version }", "variables": {"a": NaN}}', "JSON"),
    (b"{}", "query"),
    (b'{"query": null}', "query"),
    (b'{"query": 5}', "query"),
    (b'{"query": "{ version }", "variables": [1]}', "variables"),
    (b'{"query": "{ version }", "extensions": "x"}', "extensions"),
    (b'"just a string"', ""),
])
async def test_bad_request_bodies_are_json_refusals(client: httpx.AsyncClient, body: bytes,
                                                    says: str) -> None:
    response = await client.post("/graphql", content=body,
                                 headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    error = only_error(response)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert says in error["message"]


async def test_get_refusals_are_json(client: httpx.AsyncClient) -> None:
    for params, status, code in [
        ({}, 400, "BAD_USER_INPUT"),
        ({"query": "{ version }", "variables": "{not json"}, 400, "BAD_USER_INPUT"),
        ({"query": 'mutation { login(email: "a@b.c", password: "x") { accessToken } }'}, 400,
         "BAD_USER_INPUT"),
        ({"query": "query A { version }", "operationName": "B"}, 400,
         "GRAPHQL_VALIDATION_FAILED"),
    ]:
        response = await client.get("/graphql", params=params,
                                    headers={"Accept": "application/json"})
        assert response.status_code == status, (params, response.text)
        assert only_error(response)["extensions"]["code"] == code, params


async def test_an_unknown_operation_name_is_a_json_refusal(client: httpx.AsyncClient) -> None:
    response = await client.post("/graphql", json={"query": "query A { version }",
                                                   "operationName": "B"})
    assert response.status_code == 400
    error = only_error(response)
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert '"B"' in error["message"]
    weird = await client.post("/graphql", content=json.dumps(
        {"query": "query A { version }", "operationName": SURROGATE}).encode(),
        headers={"Content-Type": "application/json"})
    assert weird.status_code == 400
    assert only_error(weird)["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


async def test_several_operations_need_an_operation_name(
        client: httpx.AsyncClient, pool: asyncpg.Pool, alice: User,
        token_for: Callable[..., str]) -> None:
    document = ('mutation Make { createTask(input: {title: "first"}) { id } } '
                "query Look { version }")
    headers = {"Authorization": f"Bearer {token_for(alice.id)}"}
    before = await snapshot(pool)
    response = await client.post("/graphql", json={"query": document}, headers=headers)
    assert response.status_code == 400
    error = only_error(response)
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert "operationName" in error["message"]
    assert await snapshot(pool) == before
    # Anonymous and named alike; over GET too.
    response = await client.get("/graphql", params={"query": "{ version } query B { version }"})
    assert response.status_code == 400
    assert only_error(response)["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    # Naming one runs that one.
    ok = await client.post("/graphql", json={"query": document, "operationName": "Look"},
                           headers=headers)
    assert ok.status_code == 200 and ok.json()["data"]["version"]
    assert await snapshot(pool) == before


@pytest.mark.parametrize("root", ["tasks", "users"])
@pytest.mark.parametrize(("argument", "variables"), [
    ("first: 1.5", None),
    ('first: "5"', None),
    ("first: $n", {"n": 1.5}),
    ("first: $n", {"n": "5"}),
    ("first: $n", {"n": True}),
])
async def test_a_first_that_is_not_an_integer_says_so(
        client: httpx.AsyncClient, alice: User, token_for: Callable[..., str],
        root: str, argument: str, variables: dict[str, Any] | None) -> None:
    declared = "($n: Int)" if variables else ""
    query = f"query{declared} {{ {root}({argument}) {{ edges {{ node {{ id }} }} }} }}"
    response = await client.post("/graphql", json={"query": query, "variables": variables},
                                 headers={"Authorization": f"Bearer {token_for(alice.id)}"})
    body = response.json()
    assert body.get("data") is None, body
    for error in body["errors"]:
        assert error["extensions"]["code"] in ("BAD_USER_INPUT", "GRAPHQL_VALIDATION_FAILED")
        assert "between" not in error["message"], error
        assert "Int" in error["message"] or "integer" in error["message"], error
