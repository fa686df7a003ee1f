"""GraphiQL with no network: its page and vendored assets, the default query, the demo token.

The page (`GET /graphql` from a browser) is served outside production only; every file it loads
is served by the gateway itself with the `integrity` of Strawberry's own CDN tags; its default
query runs; in development the headers editor carries a token for the seeded demo user. With
Debian's chromium installed, the page is also rendered with the network cut off.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html.parser
import json
import re
import shutil
import subprocess
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import strawberry
import uvicorn

from gateway.dev.embedded import free_port
from gateway.dev.seed import DEMO_EMAIL
from gateway.http.app import create_app
from gateway.http.graphiql import ASSET_DIR, assets, script_literal
from gateway.ops.settings import Settings
from gateway.security.access import decode_access_token
from tests.conftest import running_app
from tests.factories import UserFactory

HTML = {"Accept": "text/html"}
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class Tags(html.parser.HTMLParser):
    """The `<script>` and `<link>` tags of a page, and the inline scripts' nonces."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str]] = []
        self.links: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if tag == "script":
            self.scripts.append(found)
        elif tag == "link":
            self.links.append(found)


def tags_of(page: str) -> Tags:
    parser = Tags()
    parser.feed(page)
    return parser


def integrity_of(data: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()


def constant(page: str, name: str) -> Any:
    """A `const NAME = <JSON literal>;` of the page's inline script."""
    match = re.search(rf"const {name} = (.*);\n", page)
    assert match is not None, name
    return json.loads(match[1])


def development(settings: Settings) -> Settings:
    return replace(settings, app_env="development")


async def page_of(client: httpx.AsyncClient) -> str:
    response = await client.get("/graphql", headers=HTML)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    return response.text


# --- the page and its assets ------------------------------------------------------------------


async def test_the_page_loads_only_local_files_with_their_integrity(
        client: httpx.AsyncClient) -> None:
    page = await page_of(client)
    assert "https://" not in page and "unpkg" not in page
    tags = tags_of(page)
    external = [t["src"] for t in tags.scripts if t.get("src")]
    stylesheets = [t for t in tags.links if t.get("rel") == "stylesheet"]
    assert len(external) == 5 and len(stylesheets) == 2
    for tag in tags.links:  # the icon is an inline `data:` image: no request
        assert tag in stylesheets or tag["href"].startswith("data:")
    for tag, url in [*((t, t["src"]) for t in tags.scripts if t.get("src")),
                     *((t, t["href"]) for t in stylesheets)]:
        assert url.startswith("/graphiql/"), url
        response = await client.get(url)
        assert response.status_code == 200, url
        assert integrity_of(response.content) == tag["integrity"], url
        kind = "text/css" if url.endswith(".css") else "text/javascript"
        assert response.headers["content-type"] == f"{kind}; charset=utf-8"
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"


async def test_the_page_has_a_self_only_content_security_policy(
        client: httpx.AsyncClient) -> None:
    response = await client.get("/graphql", headers=HTML)
    policy = dict(part.strip().split(" ", 1) for part in
                  response.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'none'"
    nonce = re.fullmatch(r"'self' 'nonce-([A-Za-z0-9_-]+)'", policy["script-src"])
    assert nonce is not None
    for directive, value in policy.items():
        assert "http" not in value and "*" not in value, directive
    inline = [t for t in tags_of(response.text).scripts if not t.get("src")]
    assert inline and all(t.get("nonce") == nonce[1] for t in inline)
    assert response.headers["cache-control"] == "no-store"
    again = await client.get("/graphql", headers=HTML)
    assert again.headers["content-security-policy"] != response.headers["content-security-policy"]


def test_the_vendored_files_are_strawberrys_cdn_files() -> None:
    """The manifest names the tags of the installed Strawberry's own page, with the same
    integrity; after a Strawberry upgrade that changes them: `make graphiql-assets`."""
    theirs = (Path(strawberry.__file__).parent / "static" / "graphiql.html").read_text()
    parsed = tags_of(theirs)
    cdn = [(t["src"], t["integrity"]) for t in parsed.scripts if t.get("src")]
    cdn += [(t["href"], t["integrity"]) for t in parsed.links if t.get("rel") == "stylesheet"]
    ours = [(f"https://unpkg.com/{a.path}", a.integrity) for a in assets()]
    assert sorted(ours) == sorted(cdn)
    for asset in assets():
        assert integrity_of((ASSET_DIR / asset.path).read_bytes()) == asset.integrity
        assert (ASSET_DIR / f"{asset.package}@{asset.version}" / "LICENSE").is_file()


async def test_only_the_listed_files_are_served(client: httpx.AsyncClient) -> None:
    for path in ("/graphiql/", "/graphiql/manifest.json", "/graphiql/README.md",
                 "/graphiql/update.py", "/graphiql/react@18.2.0/LICENSE",
                 "/graphiql/react@18.2.0/umd/react.development.js",
                 "/graphiql/../graphiql.py", "/graphiql/%2e%2e/graphiql.py",
                 "/graphiql/react@18.2.0/../../graphiql.html"):
        assert (await client.get(path)).status_code == 404, path
    unknown = await client.get("/graphiql/manifest.json")
    assert unknown.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    head = await client.head(f"/graphiql/{assets()[0].path}")
    assert head.status_code == 200 and head.content == b""


async def test_no_graphiql_and_no_assets_in_production(settings: Settings) -> None:
    production = replace(settings, app_env="production", jwt_secret_key="p" * 40)
    async with running_app(production) as client:
        page = await client.get("/graphql", headers=HTML)
        assert page.status_code == 404 and "graphiql" not in page.text.lower()
        for asset in assets():
            assert (await client.get(f"/graphiql/{asset.path}")).status_code == 404


async def test_the_page_runs_subscriptions_over_a_websocket_of_this_host(
        client: httpx.AsyncClient) -> None:
    """GraphiQL's own bundle carries the graphql-ws client; the page hands it this path's
    WebSocket URL (`subscriptionUrl`, to which GraphiQL sends the Headers tab in
    `connection_init`), and the policy allows that socket. tests/browser runs one for real."""
    response = await client.get("/graphql", headers=HTML)
    page = response.text
    assert re.search(r"createFetcher\(\{[^}]*subscriptionUrl[^}]*\}\)", page), page
    assert "const subscriptionUrl = httpUrlToWebSockeUrl(fetchURL);" in page
    bundle = next(t["src"] for t in tags_of(page).scripts if t.get("src", "").endswith(
        "/graphiql.min.js"))
    code = (await client.get(bundle)).text
    assert "graphql-transport-ws" in code and "connection_init" in code  # the ws client
    policy = dict(part.strip().split(" ", 1) for part in
                  response.headers["content-security-policy"].split(";"))
    assert policy["connect-src"] == "'self' ws://testserver wss://testserver"
    # A Host header that is not a plain host name is not written into the policy.
    odd = await client.get("/graphql", headers={**HTML, "host": "x.example;script-src"})
    assert "connect-src 'self';" in odd.headers["content-security-policy"]


def test_the_default_querys_live_hint_is_a_valid_subscription() -> None:
    from graphql import parse, validate

    from gateway.http.graphiql import LIVE_HINT
    from schema.schema import schema

    example = LIVE_HINT[LIVE_HINT.index("#   subscription {"):]
    document = "\n".join(line.removeprefix("#") for line in example.splitlines())
    assert document.split() == ["subscription", "{", "dashboard", "{", "overview", "{",
                                "totalTasks", "completedTasks", "}", "}", "}"]
    assert validate(schema._schema, parse(document)) == []


def test_values_cannot_close_the_inline_script() -> None:
    literal = script_literal("</script><script>alert(1)</script>&\u2028")
    assert "<" not in literal and ">" not in literal and "\u2028" not in literal
    assert json.loads(literal) == "</script><script>alert(1)</script>&\u2028"


# --- the default query and the headers ----------------------------------------------------------


async def test_the_default_query_shows_the_dashboard_and_runs(
        client: httpx.AsyncClient, users: UserFactory,
        token_for: Callable[..., str]) -> None:
    page = await page_of(client)
    query = constant(page, "EXAMPLE_QUERY")
    assert "mutation {" in query and "login(email:" in query  # how to sign in, in comments
    assert "demo-password" not in query  # not in test (nor staging, production)
    user = await users.create()
    await users.task(user)
    response = await client.post("/graphql", json={"query": query},
                                 headers={"Authorization": f"Bearer {token_for(user.id)}"})
    body = response.json()
    assert response.status_code == 200 and "errors" not in body, body
    data = body["data"]
    assert data["me"]["email"] == user.email
    assert data["overview"]["totalTasks"] == 1
    assert len(data["trends"]["points"]) == 30
    assert data["productivity"]["from"] <= data["productivity"]["to"]
    # Signed out, it says so rather than failing to parse or validate.
    signed_out = (await client.post("/graphql", json={"query": query})).json()
    assert {e["extensions"]["code"] for e in signed_out["errors"]} == {"UNAUTHENTICATED"}


async def test_outside_development_the_headers_hold_a_placeholder(
        client: httpx.AsyncClient, users: UserFactory) -> None:
    await users.create(email=DEMO_EMAIL)
    page = await page_of(client)
    assert constant(page, "HEADERS_PREFILLED") is False
    headers = json.loads(constant(page, "DEFAULT_HEADERS"))
    assert "eyJ" not in page  # no JWT anywhere on the page
    # The placeholder does not stand in the way of the login mutation that replaces it.
    login = await client.post("/graphql", headers=headers, json={
        "query": 'mutation { login(email: "nobody@example.com", password: "x") { expiresIn } }'})
    assert login.json()["errors"][0]["message"] == "Invalid email or password"


async def test_in_development_the_headers_hold_a_token_for_the_demo_user(
        settings: Settings, users: UserFactory) -> None:
    async with running_app(development(settings)) as client:
        page = await page_of(client)  # no demo user yet: the placeholder
        assert constant(page, "HEADERS_PREFILLED") is False and "eyJ" not in page
        assert "demo-password" in constant(page, "EXAMPLE_QUERY")  # login, with the demo login
        demo = await users.create(email=DEMO_EMAIL)
        page = await page_of(client)
        assert constant(page, "HEADERS_PREFILLED") is True
        headers = json.loads(constant(page, "DEFAULT_HEADERS"))
        token = headers["Authorization"].removeprefix("Bearer ")
        assert decode_access_token(settings, token).id == demo.id
        response = await client.post("/graphql", headers=headers,
                                     json={"query": constant(page, "EXAMPLE_QUERY")})
        body = response.json()
        assert "errors" not in body, body
        assert body["data"]["me"]["email"] == DEMO_EMAIL


async def test_a_database_outage_still_opens_the_page_in_development(
        settings: Settings, users: UserFactory) -> None:
    await users.create(email=DEMO_EMAIL)
    async with running_app(development(settings)) as client:
        await client.app.state.resources.pool.close()  # type: ignore[attr-defined]
        page = await page_of(client)
        assert constant(page, "HEADERS_PREFILLED") is False


# --- in a browser, offline ----------------------------------------------------------------------


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[str]:
    """The app on a loopback port, in a thread of its own (its own event loop and pools)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on",
                                           ws="gateway.http.live_socket:LiveWebSocketProtocol"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.05)
        assert server.started, "the server did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 30)


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed")
async def test_graphiql_mounts_in_a_browser_with_no_network(
        settings: Settings, users: UserFactory, tmp_path: Path) -> None:
    await users.create(email=DEMO_EMAIL)
    async with serving(development(settings)) as base:
        process = await asyncio.create_subprocess_exec(
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-extensions", "--disable-background-networking", "--no-proxy-server",
            # Every name but the loopback address fails to resolve: no network.
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
            f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
            "--virtual-time-budget=20000", "--dump-dom", f"{base}/graphql",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(process.communicate(), 120)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
    dom, log = out.decode(), err.decode()
    assert process.returncode == 0, log[-2000:]
    console = "\n".join(line for line in log.splitlines() if "CONSOLE" in line)
    assert "Content Security Policy" not in console, console
    assert "integrity" not in console, console
    assert "graphiql-editors" in dom and "Loading..." not in dom, (dom[:2000], console)
    assert "Dashboard" in dom  # the default query is in the editor
