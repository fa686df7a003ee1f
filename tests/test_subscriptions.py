"""Live dashboards: GraphQL subscriptions over WebSocket (issue 16; docs/api.md, "Subscriptions").

Every test runs the real gateway under uvicorn in this process (tests/live_client.py), with the
session's PostgreSQL and Redis, and talks to it with a real graphql-transport-ws client. Two
servers on the same database and Redis are two API processes: each has its own hub and its own
Redis listener, so a push on one for a write made on the other went through Redis pub/sub.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from redis.asyncio import Redis

from gateway.cache.fields import cache_of
from gateway.live.fanout import CHANNEL, Change, decode_change, encode_change, publish
from gateway.ops.settings import Settings
from gateway.security.access import create_access_token
from tests.factories import User, UserFactory
from tests.live_client import LiveClient, live_server
from tests.samples import sample, statements_run

DASHBOARD = """subscription Live($period: Period!, $from: Date, $to: Date) {
  dashboard {
    overview { totalTasks completedTasks completionRate overdueTasks }
    trends(period: $period, from: $from, to: $to) {
      period from to points { date tasksCreated tasksCompleted productivityScore } }
    productivity { score currentStreak tasksCompleted }
  }
}"""
DASHBOARD_QUERY = """query Same($period: Period!, $from: Date, $to: Date) {
  overview { totalTasks completedTasks completionRate overdueTasks }
  trends(period: $period, from: $from, to: $to) {
    period from to points { date tasksCreated tasksCompleted productivityScore } }
  productivity { score currentStreak tasksCompleted }
}"""
OVERVIEW = "subscription($id: ID) { overview(userId: $id) { totalTasks } }"
CREATE = 'mutation { createTask(input: {title: "live"}) { id } }'


@pytest.fixture
def live_settings(settings: Settings) -> Settings:
    """Short coalescing, so that the tests wait little for their pushes."""
    return replace(settings, live_coalesce_ms=50)


async def _post(base: str, query: str, token: str, variables: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(f"{base}/graphql", json={"query": query,
                                                            "variables": variables},
                                   headers={"Authorization": f"Bearer {token}"})
    body: dict[str, Any] = response.json()
    assert "errors" not in body, body
    return body


async def _total_after_pushes(client: LiveClient, op_id: str, expected: int) -> int:
    """Read pushes of an `overview` subscription until one shows `expected` tasks; how many."""
    pushes = 0
    while True:
        pushes += 1
        if (await client.data(op_id))["overview"]["totalTasks"] == expected:
            return pushes




async def test_first_event_is_the_answer_of_the_same_query_and_a_write_pushes_the_new_one(
        live_settings: Settings, users: UserFactory, pool: asyncpg.Pool, redis: Redis,
        token_for: Callable[..., str]) -> None:
    user = await users.create(timezone="Asia/Tokyo")
    await users.task(user, status="done", completed_at=datetime.now(UTC))
    await users.task(user, status="in_progress", started_at=datetime.now(UTC))
    await users.task(user)
    token = token_for(user.id)
    variables = {"period": "WEEK", "from": None, "to": None}
    async with live_server(live_settings) as server, \
            LiveClient.connect(server.ws, token) as client:
        await client.subscribe("dash", DASHBOARD, variables)
        first = await client.data("dash")
        answer = (await _post(server.http, DASHBOARD_QUERY, token, variables))["data"]
        assert first["dashboard"] == answer
        assert answer["overview"]["totalTasks"] == 3

        await _post(server.http, CREATE, token)
        pushed = await client.data("dash")
        assert pushed["dashboard"]["overview"]["totalTasks"] == 4
        assert pushed["dashboard"] == (await _post(server.http, DASHBOARD_QUERY, token,
                                                   variables))["data"]
    assert sample("analytics_live_pushes_total", field="dashboard") >= 2


async def test_live_pushes_leave_the_processs_kept_figures_alone(
        live_settings: Settings, users: UserFactory, pool: asyncpg.Pool, redis: Redis,
        token_for: Callable[..., str]) -> None:
    """The hub keeps what a push needs (resolvers/live.py); the field cache's values kept in the
    process (CACHE_LOCAL_ENTRIES) are for requests. 10,000 idle subscriptions' first pushes
    would otherwise fill them, some 6 MiB of an idle process (docs/performance.md)."""
    user = await users.create()
    await users.task(user)
    token = token_for(user.id)
    variables = {"period": "DAY", "from": None, "to": None}
    async with live_server(live_settings) as server, \
            LiveClient.connect(server.ws, token) as client:
        kept = cache_of(server.app.state.resources)._local
        await client.subscribe("dash", DASHBOARD, variables)
        await client.data("dash")
        await _post(server.http, CREATE, token)
        assert (await client.data("dash"))["dashboard"]["overview"]["totalTasks"] == 2
        assert not [key for key in kept.keys() if str(user.id) in key]
        await _post(server.http, DASHBOARD_QUERY, token, variables)  # a request keeps them
        assert [key for key in kept.keys() if str(user.id) in key]


async def test_a_burst_of_writes_is_coalesced_and_the_last_push_is_the_final_state(
        settings: Settings, users: UserFactory, pool: asyncpg.Pool, redis: Redis,
        token_for: Callable[..., str]) -> None:
    coalesce = 1.0
    user = await users.create()
    token = token_for(user.id)
    async with live_server(replace(settings, live_coalesce_ms=int(coalesce * 1000))) as server, \
            LiveClient.connect(server.ws, token) as client:
        await client.subscribe("o", OVERVIEW)
        assert (await client.data("o"))["overview"]["totalTasks"] == 0
        started = time.monotonic()
        for _ in range(10):
            await _post(server.http, CREATE, token)
        burst = time.monotonic() - started
        pushes = await _total_after_pushes(client, "o", 10)
        # Nothing more is owed; a late message may still bring one more push of the same state.
        late: list[dict[str, Any]] = []
        try:
            while True:
                late.append(await client.data("o", wait=3 * coalesce))
        except TimeoutError:
            pass
        assert all(event["overview"]["totalTasks"] == 10 for event in late)
        # At most one push per LIVE_COALESCE_MS while the writes went on, and one after them.
        assert pushes + len(late) <= 2 + int(burst / coalesce), (pushes, late, burst)


async def test_a_write_on_one_process_is_pushed_by_the_other(
        live_settings: Settings, users: UserFactory, pool: asyncpg.Pool, redis: Redis,
        token_for: Callable[..., str]) -> None:
    user = await users.create()
    token = token_for(user.id)
    async with live_server(live_settings) as a, live_server(live_settings) as b, \
            LiveClient.connect(b.ws, token) as client:
        await client.subscribe("o", OVERVIEW)
        assert (await client.data("o"))["overview"]["totalTasks"] == 0
        await _post(a.http, CREATE, token)
        assert (await client.data("o"))["overview"]["totalTasks"] == 1
    assert sample("analytics_live_push_delay_seconds_count") >= 1


async def test_a_worker_bumping_data_versions_publishes_the_change(redis: Redis) -> None:
    """workers/jobs.py and domain/changes.py publish through `publish`: the message format."""
    pubsub = redis.pubsub()
    await pubsub.subscribe(CHANNEL)
    try:
        import uuid

        ids = [uuid.uuid4(), uuid.uuid4()]
        assert await publish(redis, ids, [(ids[1], 7, ["described"])])
        message = None
        async with asyncio.timeout(10):
            while message is None or message["type"] != "message":
                message = await pubsub.get_message(timeout=1)
        change = decode_change(message["data"])
        assert change is not None and change.users == ids
        assert change.tasks == [(ids[1], 7, ["described"])]
        assert decode_change(b'{"v": 2, "users": []}') is None  # another version: ignored
        assert decode_change(encode_change(ids, at=5.0)) == Change(ids, 5.0)
        # A malformed description is left out; its user still counts as changed.
        odd = decode_change(orjson.dumps({"v": 1, "users": [str(ids[0])],
                                          "tasks": [[str(ids[0]), "7", []], "x", [1, 2]]}))
        assert odd == Change([ids[0]], None)
    finally:
        await pubsub.aclose()


@pytest.mark.parametrize("payload", [
    {},
    {"Authorization": "Bearer not-a-token"},
    {"Authorization": "Basic dXNlcjpwYXNz"},
    "expired",
])
async def test_connection_init_without_a_valid_token_is_closed_4401(
        payload: Any, live_settings: Settings, users: UserFactory, pool: asyncpg.Pool,
        redis: Redis) -> None:
    user = await users.create()
    if payload == "expired":
        an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
        payload = {"authorization": "Bearer " + create_access_token(live_settings, user.id,
                                                                     "user", now=an_hour_ago)}
    async with live_server(live_settings) as server, \
            LiveClient.connect(server.ws, init=False) as client:
        await client.send({"type": "connection_init", "payload": payload})
        code, reason = await client.closed()
    assert code == 4401 and reason.startswith("Unauthorized"), (code, reason)
    assert sample("analytics_live_closed_total", reason="unauthorized") >= 1


async def test_a_subscribe_before_connection_init_is_closed_4401(
        live_settings: Settings, pool: asyncpg.Pool, redis: Redis) -> None:
    async with live_server(live_settings) as server, \
            LiveClient.connect(server.ws, init=False) as client:
        await client.subscribe("o", OVERVIEW)
        assert (await client.closed())[0] == 4401


async def test_a_user_may_follow_only_themselves_and_an_admin_anyone(
        live_settings: Settings, users: UserFactory, pool: asyncpg.Pool, redis: Redis,
        token_for: Callable[..., str]) -> None:
    alice = await users.create()
    bob = await users.create()
    await users.task(bob)
    admin = await users.create(role="admin")
    async with live_server(live_settings) as server:
        async with LiveClient.connect(server.ws, token_for(alice.id)) as client:
            await client.subscribe("bob", OVERVIEW, {"id": str(bob.id)})
            refused = await client.next("bob")
            assert refused["type"] == "error", refused
            assert refused["payload"][0]["extensions"]["code"] == "FORBIDDEN"
            await client.subscribe("me", OVERVIEW)  # the connection stays open
            assert (await client.data("me"))["overview"]["totalTasks"] == 0
        async with LiveClient.connect(server.ws, token_for(admin.id, "admin")) as client:
            await client.subscribe("bob", OVERVIEW, {"id": str(bob.id)})
            assert (await client.data("bob"))["overview"]["totalTasks"] == 1
            await client.subscribe("nobody", OVERVIEW, {"id": str(bob.id)[:-1] + "0"
                                                        if str(bob.id)[-1] != "0" else
                                                        str(bob.id)[:-1] + "1"})
            missing = await client.next("nobody")
            assert missing["type"] == "error"
            assert missing["payload"][0]["extensions"]["code"] == "NOT_FOUND"
            await _post(server.http, CREATE, token_for(bob.id))
            assert (await client.data("bob"))["overview"]["totalTasks"] == 2


async def test_a_demoted_admin_is_refused_from_the_database_role(
        live_settings: Settings, users: UserFactory, pool: asyncpg.Pool, redis: Redis,
        token_for: Callable[..., str]) -> None:
    """The token says admin, the database says user: the role comes from the database."""
    bob = await users.create()
    demoted = await users.create(role="user")
    async with live_server(live_settings) as server, \
            LiveClient.connect(server.ws, token_for(demoted.id, "admin")) as client:
        await client.subscribe("bob", OVERVIEW, {"id": str(bob.id)})
        refused = await client.next("bob")
        assert refused["type"] == "error"
        assert refused["payload"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_caps_per_connection_per_user_and_per_process(
        live_settings: Settings, users: UserFactory, pool: asyncpg.Pool, redis: Redis,
        token_for: Callable[..., str]) -> None:
    user = await users.create()
    token = token_for(user.id)
    capped = replace(live_settings, live_max_subscriptions_per_connection=2,
                     live_max_subscriptions_per_user=3, live_max_connections=2)
    async with live_server(capped) as server:
        async with LiveClient.connect(server.ws, token) as one, \
                LiveClient.connect(server.ws, token) as two:
            for op_id in ("a", "b"):
                await one.subscribe(op_id, OVERVIEW)
                await one.data(op_id)
            await one.subscribe("c", OVERVIEW)
            refused = await one.next("c")
            assert refused["type"] == "error"
            assert refused["payload"][0]["extensions"]["code"] == "TOO_MANY_SUBSCRIPTIONS"

            await two.subscribe("d", OVERVIEW)
            await two.data("d")
            await two.subscribe("e", OVERVIEW)  # the user's fourth in this process
            refused = await two.next("e")
            assert refused["payload"][0]["extensions"]["code"] == "TOO_MANY_SUBSCRIPTIONS"

            await one.send({"id": "a", "type": "complete"})  # a slot is free again
            await two.subscribe("f", OVERVIEW)
            assert (await two.data("f"))["overview"]["totalTasks"] == 0

            async with LiveClient.connect(server.ws, init=False) as three:
                assert (await three.closed())[0] == 1013
    assert sample("analytics_live_closed_total", reason="capacity") >= 1


async def test_the_connection_is_closed_4401_when_its_token_expires(
        live_settings: Settings, users: UserFactory, pool: asyncpg.Pool, redis: Redis) -> None:
    user = await users.create()
    lifetime = timedelta(minutes=live_settings.jwt_access_token_expire_minutes)
    token = create_access_token(live_settings, user.id, "user",
                                now=datetime.now(UTC) - lifetime + timedelta(seconds=2))
    async with live_server(live_settings) as server, \
            LiveClient.connect(server.ws, token) as client:
        await client.subscribe("o", OVERVIEW)
        await client.data("o")
        code, reason = await client.closed()
    assert (code, reason) == (4401, "Unauthorized: Access token expired")
    assert sample("analytics_live_closed_total", reason="expired") >= 1


async def test_a_deleted_account_is_closed_4403_at_the_next_push(
        live_settings: Settings, users: UserFactory, pool: asyncpg.Pool, redis: Redis,
        token_for: Callable[..., str]) -> None:
    user = await users.create()
    async with live_server(live_settings) as server, \
            LiveClient.connect(server.ws, token_for(user.id)) as client:
        await client.subscribe("o", OVERVIEW)
        await client.data("o")
        await pool.execute("delete from users where id = $1", user.id)
        await publish(redis, [user.id])
        assert await client.closed() == (4403, "Account deleted")
    assert sample("analytics_live_closed_total", reason="deleted") >= 1


async def test_many_connections_following_one_user_compute_each_figure_once_per_change(
        live_settings: Settings, users: UserFactory, pool: asyncpg.Pool, redis: Redis,
        token_for: Callable[..., str]) -> None:
    user = await users.create()
    await users.task(user)
    token = token_for(user.id)
    variables = {"period": "DAY", "from": None, "to": None}
    # every kind of figure in one statement (loaders/cached.py's shared batch), none alone
    expected = {"analytics_figures": 1.0, "analytics_overview": 0.0,
                "analytics_daily_series": 0.0, "analytics_productivity_extras": 0.0}
    statements = tuple(expected)
    async with live_server(live_settings) as server:
        async with LiveClient.connect(server.ws, token) as c1, \
                LiveClient.connect(server.ws, token) as c2, \
                LiveClient.connect(server.ws, token) as c3, \
                LiveClient.connect(server.ws, token) as c4, \
                LiveClient.connect(server.ws, token) as c5:
            clients = [c1, c2, c3, c4, c5]
            for client in clients:
                await client.subscribe("dash", DASHBOARD, variables)
                await client.data("dash")
            before = statements_run(statements)
            await _post(server.http, CREATE, token)  # a new data version: every cache misses
            for client in clients:
                pushed = await client.data("dash")
                assert pushed["dashboard"]["overview"]["totalTasks"] == 2
            after = statements_run(statements)
    assert {name: after[name] - before[name] for name in statements} == expected


async def test_users_changed_together_are_pushed_with_one_statement_per_figure(
        live_settings: Settings, users: UserFactory, pool: asyncpg.Pool, redis: Redis,
        token_for: Callable[..., str]) -> None:
    """Flushes falling due in the same tick share one batch (gateway/live/hub.py): six users
    changed by one message get their pushes from one statement for their rows and one for every
    kind of figure (analytics_figures), not six."""
    followed = [await users.create() for _ in range(6)]
    for user in followed:
        await users.task(user)
    variables = {"period": "DAY", "from": None, "to": None}
    expected = {"analytics_users": 1.0, "analytics_figures": 1.0, "analytics_overview": 0.0,
                "analytics_daily_series": 0.0, "analytics_productivity_extras": 0.0}
    statements = tuple(expected)
    async with live_server(live_settings) as server, contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(
            LiveClient.connect(server.ws, token_for(user.id))) for user in followed]
        for client in clients:
            await client.subscribe("dash", DASHBOARD, variables)
            await client.data("dash")
        for user in followed:  # plain SQL (the trigger raises the data version): no message
            await users.task(user)
        await asyncio.sleep(2 * live_settings.live_coalesce_ms / 1000)  # all due at once
        before = statements_run(statements)
        await publish(redis, [user.id for user in followed])
        for client in clients:
            pushed = await client.data("dash")
            assert pushed["dashboard"]["overview"]["totalTasks"] == 2
        after = statements_run(statements)
    assert {name: after[name] - before[name] for name in statements} == expected


async def test_the_legacy_graphql_ws_protocol_is_refused(
        live_settings: Settings, pool: asyncpg.Pool, redis: Redis) -> None:
    async with live_server(live_settings) as server, \
            LiveClient.connect(server.ws, init=False, subprotocols=("graphql-ws",)) as client:
        assert await client.closed() == (4406, "Subprotocol not acceptable")


async def test_sockets_skip_the_http_middleware_but_not_the_host_check(
        live_settings: Settings, pool: asyncpg.Pool, redis: Redis,
        token_for: Callable[..., str], users: UserFactory) -> None:
    """WebSockets bypass the HTTP middleware (gateway/http/app.py `Gateway`): ALLOWED_HOSTS
    still refuses a foreign Host, and a socket on any other path is closed."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    user = await users.create()
    settings = replace(live_settings, allowed_hosts=("localhost",))
    async with live_server(settings) as server:
        assert "127.0.0.1" in server.ws
        with pytest.raises(InvalidStatus) as refused:
            async with LiveClient.connect(server.ws, token_for(user.id)):
                pass
        assert refused.value.response.status_code == 400  # as for HTTP: "Invalid host header"
        allowed = server.ws.replace("127.0.0.1", "localhost")
        async with LiveClient.connect(allowed, token_for(user.id)) as client:
            await client.subscribe("o", OVERVIEW)
            assert (await client.data("o"))["overview"]["totalTasks"] == 0
        with pytest.raises(InvalidStatus):
            async with connect(allowed.replace("/graphql", "/elsewhere")):
                pass


async def test_opening_sockets_counts_against_the_clients_rate_limit(
        live_settings: Settings, pool: asyncpg.Pool, redis: Redis,
        token_for: Callable[..., str], users: UserFactory) -> None:
    """Sockets skip the HTTP middleware, not the rate limit: each opening is one request of the
    client's IP; over RATE_LIMIT_PER_MINUTE the handshake is a 429 with Retry-After."""
    from websockets.exceptions import InvalidStatus

    user = await users.create()
    settings = replace(live_settings, rate_limit_enabled=True, rate_limit_per_minute=2)
    async with live_server(settings) as server:
        for _ in range(2):
            async with LiveClient.connect(server.ws, token_for(user.id)):
                pass
        with pytest.raises(InvalidStatus) as refused:
            async with LiveClient.connect(server.ws, token_for(user.id)):
                pass
    response = refused.value.response
    assert response.status_code == 429 and int(response.headers["Retry-After"]) >= 1
    assert b"RATE_LIMITED" in response.body


async def test_queries_go_over_http_and_subscriptions_over_the_websocket(
        live_settings: Settings, users: UserFactory, pool: asyncpg.Pool, redis: Redis,
        token_for: Callable[..., str]) -> None:
    user = await users.create()
    token = token_for(user.id)
    async with live_server(live_settings) as server:
        async with LiveClient.connect(server.ws, token) as client:
            await client.subscribe("q", "{ overview { totalTasks } }")
            refused = await client.next("q")
            assert refused["type"] == "error"
            assert refused["payload"][0]["extensions"]["code"] == "BAD_USER_INPUT"
            await client.subscribe("bad", "subscription { overview { totalTasks }")
            refused = await client.next("bad")  # a syntax error: an error, not a closed socket
            assert refused["payload"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
        async with httpx.AsyncClient() as http:
            response = await http.post(f"{server.http}/graphql", json={"query": OVERVIEW},
                                       headers={"Authorization": f"Bearer {token}"})
        errors = response.json()["errors"]
        assert errors[0]["extensions"]["code"] == "BAD_USER_INPUT"
        assert "WebSocket" in errors[0]["message"]


async def test_the_query_limits_apply_to_subscriptions(
        live_settings: Settings, users: UserFactory, pool: asyncpg.Pool, redis: Redis,
        token_for: Callable[..., str]) -> None:
    user = await users.create()
    limited = replace(live_settings, max_query_cost=100)
    async with live_server(limited) as server, \
            LiveClient.connect(server.ws, token_for(user.id)) as client:
        await client.subscribe("big", """subscription { dashboard {
            trends(period: DAY, from: "2020-01-01", to: "2024-12-31") { points { date } } } }""")
        refused = await client.next("big")
        assert refused["type"] == "error"
        assert refused["payload"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"
        await client.subscribe("bad", 'subscription { trends(from: "2024-02-01", '
                                      'to: "2024-01-01") { from } }')
        refused = await client.next("bad")
        assert refused["payload"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_with_live_disabled_the_websocket_is_refused(
        live_settings: Settings, pool: asyncpg.Pool, redis: Redis) -> None:
    from websockets.exceptions import InvalidStatus

    async with live_server(replace(live_settings, live_enabled=False)) as server:
        with pytest.raises(InvalidStatus) as refused:
            async with LiveClient.connect(server.ws, init=False):
                pass
    assert refused.value.response.status_code == 403


async def test_a_client_that_stops_reading_is_closed_as_a_slow_consumer(
        settings: Settings, users: UserFactory, pool: asyncpg.Pool, redis: Redis,
        token_for: Callable[..., str]) -> None:
    """Pushes of a year of days to a client that reads nothing: the server's buffers fill, a
    send waits past LIVE_SEND_TIMEOUT_S and the socket is closed (4008), nothing buffered."""
    user: User = await users.create()
    token = token_for(user.id)
    year = """subscription { dashboard { trends(period: DAY, from: "2024-01-01",
        to: "2024-12-31") { points { date tasksCreated tasksCompleted tasksDue
        tasksCompletedOnTime completionRate productivityScore } } } }"""
    fast = replace(settings, live_coalesce_ms=0, live_send_timeout_s=0.5)
    async with live_server(fast) as server:
        host, port = server.http.removeprefix("http://").split(":")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window...
        sock.connect((host, int(port)))
        sock.setblocking(False)
        # ...and a client that stops taking frames after the first: only the server buffers.
        async with LiveClient.connect(server.ws, token, max_queue=1, sock=sock,
                                      ping_interval=None, compression=None) as client:
            for op_id in range(10):
                await client.subscribe(str(op_id), year)
            hub = server.app.state.live_hub
            # The client reads nothing from here on; the user keeps changing until the server
            # gives up on the client.
            async with asyncio.timeout(120):
                while hub.connections:
                    hub.changed([user.id])
                    await asyncio.sleep(0.01)
            code, reason = await client.closed()
    assert (code, reason) in ((4008, "slow consumer"), (None, ""))  # the frame may not fit
    assert sample("analytics_live_closed_total", reason="slow") >= 1


@pytest.mark.parametrize(("zone", "now", "seconds"), [
    ("UTC", datetime(2024, 3, 1, 23, 59, 30, tzinfo=UTC), 30.0),
    ("Asia/Tokyo", datetime(2024, 3, 1, 14, 0, tzinfo=UTC), 3600.0),  # 23:00 in Tokyo
    ("America/New_York", datetime(2024, 3, 10, 5, 0, tzinfo=UTC), 23 * 3600.0),
])
def test_the_midnight_push_waits_for_the_users_own_next_local_midnight(
        zone: str, now: datetime, seconds: float) -> None:
    """A push at each followed user's local midnight (the default ranges end "today"), also
    after a day of 23 hours (New York's spring-forward day starts at 05:00 UTC)."""
    from domain.ranges import seconds_to_midnight

    assert seconds_to_midnight(zone, now) == seconds


async def test_deflate_is_negotiated_without_context_takeover_so_an_idle_socket_keeps_no_zlib_state(
        live_settings: Settings, users: UserFactory, token_for: Callable[..., str]) -> None:
    """The browser's permessage-deflate offer is accepted, each message compressed on its own
    (docs/api.md, "Compression"): no compressor or decompressor lives between pushes."""
    from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

    user = await users.create()
    offer = [ClientPerMessageDeflateFactory(client_max_window_bits=True)]  # as browsers offer
    async with live_server(live_settings) as server, \
            LiveClient.connect(server.ws, token_for(user.id), compression=None,
                               extensions=offer) as client:
        await client.subscribe("o", OVERVIEW)
        assert (await client.data("o"))["overview"]["totalTasks"] == 0
        accepted = client.ws.response.headers["Sec-WebSocket-Extensions"]
        assert accepted.startswith("permessage-deflate")
        assert "server_no_context_takeover" in accepted
        assert "client_no_context_takeover" in accepted
        (extension,) = client.ws.protocol.extensions
        assert not hasattr(extension, "encoder") and not hasattr(extension, "decoder")


def test_a_flush_due_at_once_is_scheduled_on_uvloop_too(settings: Settings) -> None:
    """uvloop (what uvicorn runs) schedules a time already past as a plain Handle, without
    `when()`. A change arriving while such a flush was pending once raised in the listener, which
    then reconnected and recomputed every followed user's figures, over and over under load."""
    import uuid

    import uvloop

    from gateway.live.hub import Hub

    async def close(code: int, reason: str) -> None:
        return None

    async def scenario() -> None:
        hub = Hub(settings)
        connection = hub.open(close)
        assert connection is not None
        first, second = uuid.uuid4(), uuid.uuid4()
        followers = [hub.follow(connection, user, user, "overview") for user in (first, second)]
        loop = asyncio.get_running_loop()
        hub._due[first] = loop.time() - 1.0  # overdue: uvloop hands back a plain Handle
        hub._arm()
        hub.changed([second])  # compared with the pending flush's time
        for follower in followers:
            assert await follower.next_batch(settings.live_coalesce_ms / 1000 + 1.0) is not None

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())
