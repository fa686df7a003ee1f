"""Persisted queries (gateway/http/persisted.py): Apollo's automatic persisted queries over POST
and GET, the store in Redis with this process's LRU in front (and Redis down), trusted documents
(`TRUSTED_DOCUMENTS_ONLY`) and the `python -m gateway documents` command."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from gateway.cli import main
from gateway.dev.embedded import free_port
from gateway.http.app import create_app
from gateway.http.persisted import apq_key, load_trusted
from gateway.ops.settings import Settings, SettingsError
from tests.conftest import running_app
from tests.factories import PASSWORD, UserFactory

VERSION = "{ version }"
ME = "query Me { me { email } }"
DASHBOARD = "{ overview { totalTasks completedTasks } productivity { score } }"
NOT_FOUND = {"errors": [{"message": "PersistedQueryNotFound",
                         "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"}}]}
ROOT = Path(__file__).parent.parent


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def ext(text_or_hash: str, version: Any = 1) -> dict[str, Any]:
    query_hash = text_or_hash if len(text_or_hash) == 64 else sha(text_or_hash)
    return {"persistedQuery": {"version": version, "sha256Hash": query_hash}}


async def by_hash(client: httpx.AsyncClient, text: str, method: str = "POST",
                  token: str | None = None, **fields: Any) -> httpx.Response:
    """The request an APQ client sends first: the hash only."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if method == "GET":
        params = {"extensions": json.dumps(ext(text)),
                  **{name: json.dumps(value) if name == "variables" else value
                     for name, value in fields.items()}}
        return await client.get("/graphql", params=params, headers=headers)
    return await client.post("/graphql", json={"extensions": ext(text), **fields},
                             headers=headers)


async def register(client: httpx.AsyncClient, text: str, token: str | None = None,
                   **fields: Any) -> httpx.Response:
    """The request an APQ client sends after a miss: the query and its hash."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await client.post("/graphql", json={"query": text, "extensions": ext(text), **fields},
                             headers=headers)


# --- automatic persisted queries --------------------------------------------------------------


async def test_an_unknown_hash_is_not_found_and_not_cacheable(client: httpx.AsyncClient) -> None:
    for method in ("POST", "GET"):
        response = await by_hash(client, VERSION, method)
        assert response.status_code == 200
        assert response.json() == NOT_FOUND
        assert response.headers["cache-control"] == "private, no-cache, must-revalidate"


async def test_a_registered_query_is_then_answered_by_its_hash_over_post_and_get(
        client: httpx.AsyncClient, redis: Redis) -> None:
    registered = await register(client, VERSION)
    assert registered.status_code == 200 and registered.json()["data"]["version"]
    assert await redis.get(apq_key(sha(VERSION))) == VERSION.encode()
    assert await redis.ttl(apq_key(sha(VERSION))) > 6 * 24 * 3600
    for method in ("POST", "GET"):
        response = await by_hash(client, VERSION, method)
        assert response.status_code == 200
        assert response.json() == registered.json()


async def test_variables_and_the_operation_name_travel_with_the_hash(
        client: httpx.AsyncClient, users: UserFactory, token_for: Callable[..., str]) -> None:
    alice = await users.create(email="alice@example.com")
    token = token_for(alice.id)
    await users.task(alice)
    document = ("query Mine($first: Int!) { tasks(first: $first) { edges { node { title } } } }\n"
                "query Me { me { email } }")
    await register(client, document, token=token, operationName="Me")
    for method in ("POST", "GET"):
        me = await by_hash(client, document, method, token=token, operationName="Me")
        assert me.json() == {"data": {"me": {"email": "alice@example.com"}}}
        mine = await by_hash(client, document, method, token=token, operationName="Mine",
                             variables={"first": 5})
        assert mine.json() == {"data": {"tasks": {"edges": [{"node": {"title": "task"}}]}}}


async def test_a_hash_that_is_not_the_querys_is_refused_and_nothing_is_stored(
        client: httpx.AsyncClient, redis: Redis) -> None:
    # Hash hijacking: another query's hash must not come to name this one.
    response = await client.post("/graphql", json={"query": ME, "extensions": ext(VERSION)})
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": "provided sha does not match query",
                                           "extensions": {"code": "BAD_USER_INPUT"}}]}
    assert await redis.get(apq_key(sha(VERSION))) is None
    assert (await by_hash(client, VERSION)).json() == NOT_FOUND


@pytest.mark.parametrize(("extensions", "message"), [
    ({"persistedQuery": {"version": 2, "sha256Hash": sha(VERSION)}},
     "Unsupported persisted query version"),
    ({"persistedQuery": {"version": "1", "sha256Hash": sha(VERSION)}},
     "Unsupported persisted query version"),
    ({"persistedQuery": {"version": 1, "sha256Hash": "abc"}}, "64 hexadecimal characters"),
    ({"persistedQuery": {"version": 1}}, "64 hexadecimal characters"),
    ({"persistedQuery": "yes"}, "must be an object"),
])
async def test_a_malformed_persisted_query_extension_is_a_400(
        client: httpx.AsyncClient, extensions: dict[str, Any], message: str) -> None:
    for response in (await client.post("/graphql", json={"extensions": extensions}),
                     await client.get("/graphql", params={"extensions": json.dumps(extensions)})):
        assert response.status_code == 400
        error = response.json()["errors"][0]
        assert message in error["message"] and error["extensions"]["code"] == "BAD_USER_INPUT"


@pytest.mark.parametrize("query", ["{ nope }", "{ version", "{ " + "version " * 2000 + "}"])
async def test_a_query_that_graphql_refuses_is_not_stored(
        client: httpx.AsyncClient, redis: Redis, query: str) -> None:
    response = await register(client, query)
    assert response.json()["errors"]
    assert await redis.get(apq_key(sha(query))) is None
    assert (await by_hash(client, query)).json() == NOT_FOUND


async def test_a_mutation_by_hash_is_refused_over_get_as_it_is_as_text(
        client: httpx.AsyncClient, users: UserFactory) -> None:
    await users.create(email="bob@example.com")
    login = (f'mutation {{ login(email: "bob@example.com", password: "{PASSWORD}") '
             "{ accessToken } }")
    assert (await register(client, login)).json()["data"]["login"]["accessToken"]
    response = await by_hash(client, login, "GET")
    assert response.status_code in (400, 405)
    assert "accessToken" not in response.text
    assert (await by_hash(client, login)).json()["data"]["login"]["accessToken"]


async def test_a_get_by_hash_is_answered_not_graphiqls_page(client: httpx.AsyncClient) -> None:
    await register(client, VERSION)
    response = await client.get("/graphql", params={"extensions": json.dumps(ext(VERSION))},
                                headers={"Accept": "text/html,*/*"})
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["data"]["version"]


async def test_a_query_registered_in_one_process_is_found_by_another_through_redis(
        settings: Settings, client: httpx.AsyncClient, redis: Redis) -> None:
    await register(client, VERSION)
    async with running_app(settings) as other:
        assert (await by_hash(other, VERSION)).json()["data"]["version"]
    # A Redis entry that is not the text of its hash (tampered, or a bug) is ignored.
    await redis.set(apq_key(sha(ME)), VERSION)
    async with running_app(settings) as other:
        assert (await by_hash(other, ME)).json() == NOT_FOUND


async def test_redis_lost_is_a_miss_the_client_recovers_from(
        settings: Settings, client: httpx.AsyncClient, redis: Redis) -> None:
    await register(client, VERSION)
    await redis.flushdb()
    assert (await by_hash(client, VERSION)).json()["data"]["version"]  # this process's LRU
    async with running_app(settings) as other:  # a process that never saw it
        assert (await by_hash(other, VERSION)).json() == NOT_FOUND
        assert (await register(other, VERSION)).json()["data"]["version"]
        assert (await by_hash(other, VERSION)).json()["data"]["version"]


async def test_with_redis_down_the_store_works_from_memory_and_a_miss_is_not_found(
        settings: Settings, pool: Any) -> None:
    down = replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0",
                   redis_cache_timeout=0.2, redis_socket_connect_timeout=0.2)
    async with running_app(down) as client:
        miss = await by_hash(client, VERSION)
        assert miss.status_code == 200 and miss.json() == NOT_FOUND
        assert (await register(client, VERSION)).json()["data"]["version"]
        for method in ("POST", "GET"):
            hit = await by_hash(client, VERSION, method)
            assert hit.status_code == 200 and hit.json()["data"]["version"]
        assert (await by_hash(client, ME)).json() == NOT_FOUND


async def test_with_apq_off_a_hash_is_not_supported(settings: Settings, pool: Any,
                                                    redis: Redis) -> None:
    async with running_app(replace(settings, enable_persisted_queries=False)) as client:
        response = await register(client, VERSION)
        assert response.json()["errors"][0]["extensions"]["code"] == \
            "PERSISTED_QUERY_NOT_SUPPORTED"
        assert await redis.get(apq_key(sha(VERSION))) is None
        assert (await client.post("/graphql", json={"query": VERSION})).json()["data"]


async def test_a_lone_surrogate_is_refused_cleanly(client: httpx.AsyncClient) -> None:
    body = '{"query": "{ version } # \\ud800", "extensions": {"persistedQuery": ' \
           '{"version": 1, "sha256Hash": "' + "0" * 64 + '"}}}'
    response = await client.post("/graphql", content=body,
                                 headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["errors"][0]["message"] == "provided sha does not match query"


# --- the whole-response cache ---------------------------------------------------------------


async def test_a_get_by_hash_is_served_by_the_response_cache_like_the_posted_query(
        settings: Settings, pool: Any, redis: Redis, users: UserFactory,
        token_for: Callable[..., str]) -> None:
    alice = await users.create()
    await users.task(alice)
    token = token_for(alice.id)
    async with running_app(replace(settings, enable_response_cache=True)) as client:
        first = await register(client, DASHBOARD, token=token)
        assert first.headers.get("x-response-cache") != "hit"
        assert first.json()["data"]["overview"]["totalTasks"] == 1
        by_get = await by_hash(client, DASHBOARD, "GET", token=token)
        assert by_get.headers.get("x-response-cache") == "hit"
        assert by_get.json()["data"] == first.json()["data"]
        # Someone else's hash request is their own dashboard, never alice's cached one.
        bob = await users.create()
        theirs = await by_hash(client, DASHBOARD, "GET", token=token_for(bob.id))
        assert theirs.headers.get("x-response-cache") != "hit"
        assert theirs.json()["data"]["overview"]["totalTasks"] == 0


# --- trusted documents ------------------------------------------------------------------------


def write_documents(path: Path, *texts: str) -> dict[str, str]:
    """The allow-list written by the command, from `.graphql` files holding `texts`."""
    files = []
    for number, text in enumerate(texts):
        source = path.parent / f"operation{number}.graphql"
        source.write_text(text)
        files.append(str(source))
    assert main(["documents", "add", *files, "--file", str(path)]) == 0
    return {query_hash: doc.body for query_hash, doc in load_trusted(path).items()}


async def test_trusted_documents_only_runs_the_listed_documents(
        settings: Settings, pool: Any, redis: Redis, tmp_path: Path) -> None:
    allow_list = tmp_path / "trusted.json"
    listed = write_documents(allow_list, "query Version {\n  version\n}")
    (query_hash, body), = listed.items()
    trusted = replace(settings, trusted_documents_only=True,
                      trusted_documents_file=str(allow_list))
    async with running_app(trusted) as client:
        for method in ("POST", "GET"):
            assert (await by_hash(client, query_hash, method)).json()["data"]["version"]
        assert (await client.post("/graphql", json={"query": body})).json()["data"]["version"]
        assert (await register(client, body)).json()["data"]["version"]

        unlisted = await client.post("/graphql", json={"query": VERSION})
        assert unlisted.status_code == 400
        assert unlisted.json()["errors"][0]["extensions"]["code"] == "QUERY_NOT_IN_SAFELIST"
        unlisted = await client.get("/graphql", params={"query": VERSION})
        assert unlisted.status_code == 400
        for response in (await by_hash(client, VERSION), await register(client, VERSION)):
            assert response.status_code == 400
            assert response.json()["errors"][0]["extensions"]["code"] == \
                "PERSISTED_QUERY_NOT_IN_LIST"
        assert await redis.get(apq_key(sha(VERSION))) is None  # no registration either


async def test_trusted_documents_only_is_refused_without_a_readable_file(
        settings: Settings, tmp_path: Path) -> None:
    missing = tmp_path / "none.json"
    with pytest.raises(SettingsError, match="TRUSTED_DOCUMENTS_ONLY"):
        Settings.load(environ={"TRUSTED_DOCUMENTS_ONLY": "true",
                               "TRUSTED_DOCUMENTS_FILE": str(missing)}, env_file=None)
    with pytest.raises(SettingsError, match="TRUSTED_DOCUMENTS_FILE"):
        create_app(replace(settings, trusted_documents_only=True,
                           trusted_documents_file=str(missing)))
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "trusted-documents", "version": 1, "documents": '
                      '{"' + sha(VERSION) + '": {"body": "{ me { id } }"}}}')
    with pytest.raises(SettingsError, match="does not have that hash"):
        create_app(replace(settings, trusted_documents_file=str(broken)))
    broken.write_text('{"format": "trusted-documents", "version": 9, "documents": {}}')
    with pytest.raises(SettingsError, match="format version 9"):
        create_app(replace(settings, trusted_documents_file=str(broken)))


# --- python -m gateway documents ------------------------------------------------------------


def test_documents_add_list_show_remove_from_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "dashboard.graphql").write_text(
        "# the dashboard\nquery Dashboard { overview { ...Totals } }\n"
        "query Version { version }\n")
    (tmp_path / "fragments.graphql").write_text(
        "fragment Totals on Overview { totalTasks completedTasks }\n")
    allow_list = tmp_path / "out" / "trusted.json"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway", "documents", *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=120,
                              env={"PATH": "/usr/bin:/bin",
                                   "TRUSTED_DOCUMENTS_FILE": str(allow_list)})

    added = run("add", str(tmp_path / "dashboard.graphql"), str(tmp_path / "fragments.graphql"))
    assert added.returncode == 0, added.stderr
    documents = load_trusted(allow_list)
    by_name = {doc.name: (query_hash, doc.body) for query_hash, doc in documents.items()}
    assert set(by_name) == {"Dashboard", "Version"}
    dashboard_hash, dashboard = by_name["Dashboard"]
    assert "fragment Totals on Overview" in dashboard and "version" not in dashboard
    assert by_name["Version"][1] == "query Version {\n  version\n}"
    assert f"added {dashboard_hash}" in added.stdout

    listing = run("list")
    assert listing.returncode == 0 and dashboard_hash in listing.stdout
    shown = run("show", dashboard_hash)
    assert shown.returncode == 0 and shown.stdout == dashboard + "\n"
    assert "unchanged" in run("add", str(tmp_path / "dashboard.graphql"),
                              str(tmp_path / "fragments.graphql")).stdout
    removed = run("remove", dashboard_hash)
    assert removed.returncode == 0
    assert set(load_trusted(allow_list)) == {by_name["Version"][0]}
    assert run("remove", dashboard_hash).returncode != 0


@pytest.mark.parametrize(("text", "expected"), [
    ("query Broken { overview { noSuchField } }",
     ":1:27: Cannot query field 'noSuchField' on type 'Overview'."),
    ("query Broken { overview {", ":1:26: Syntax Error"),
    ("query Broken { overview { ...Missing } }", "Unknown fragment 'Missing'."),
    ("# nothing but a comment", "Syntax Error"),
])
def test_documents_add_refuses_an_invalid_operation_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str) -> None:
    good = tmp_path / "good.graphql"
    good.write_text("query Version { version }")
    bad = tmp_path / "bad.graphql"
    bad.write_text(text)
    allow_list = tmp_path / "trusted.json"
    assert main(["documents", "add", str(good), str(bad), "--file", str(allow_list)]) != 0
    error = capsys.readouterr().err
    assert expected in error and "nothing written" in error
    assert not allow_list.exists()


def test_documents_add_refuses_files_without_an_operation(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fragments = tmp_path / "fragments.graphql"
    fragments.write_text("fragment Totals on Overview { totalTasks }\n")
    allow_list = tmp_path / "trusted.json"
    assert main(["documents", "add", str(fragments), "--file", str(allow_list)]) != 0
    assert "no operation" in capsys.readouterr().err
    assert not allow_list.exists()
    assert main(["documents", "add", "--file", str(allow_list)]) != 0
