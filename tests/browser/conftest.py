"""Fixtures of the browser tests: the real app under uvicorn on a loopback port, Debian's chromium
driven by Playwright, a seeded user, and GraphQL over real HTTP to the same server.

Run by `make test-browser` (which installs the `browser` extra and, when missing, chromium);
`make test` leaves this folder out (pyproject.toml `addopts`). Nothing is downloaded: Playwright
launches `/usr/bin/chromium`. Every server, browser and context started here is stopped in a
`finally`, and screenshots go to tests/browser/artifacts/ (not committed).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx
import pytest
import uvicorn
from playwright.async_api import Browser, BrowserContext, async_playwright

from gateway.dev.embedded import free_port
from gateway.http.app import create_app
from gateway.ops.settings import Settings
from tests.browser.support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    Seeded,
    Server,
    Watched,
    seed_user_with_tasks,
)
from tests.factories import UserFactory

STARTUP_TIMEOUT = 10.0  # seconds for uvicorn to start serving

if not CHROMIUM.exists():  # make test-browser installs it; a plain pytest run says what is wrong
    pytest.exit(f"{CHROMIUM} is missing: run `make test-browser` (it installs Debian's chromium)",
                returncode=4)


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Server]:
    """The app on a loopback port under uvicorn (as `python -m gateway serve` runs it, WebSockets
    included), in a thread of its own with its own event loop and pools; stopped on exit."""
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                       log_level="warning", lifespan="on",
                                       ws="gateway.http.live_socket:LiveWebSocketProtocol"))
    thread = threading.Thread(target=uv.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT):
            while not uv.started:
                assert thread.is_alive(), "uvicorn stopped while starting"
                await asyncio.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            yield Server(url, http)
    finally:
        uv.should_exit = True
        await asyncio.to_thread(thread.join, 30)


@pytest.fixture(scope="session")
async def server(settings: Settings) -> AsyncIterator[Server]:
    """The gateway (APP_ENV=test) for the whole session; the tables are emptied before each test
    that seeds (`users`), Redis flushed (`redis`)."""
    async with serving(settings) as running:
        yield running


@pytest.fixture
async def dev_server(settings: Settings) -> AsyncIterator[Server]:
    """The gateway with APP_ENV=development, for one test."""
    async with serving(replace(settings, app_env="development")) as running:
        yield running


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    """Debian's chromium, headless, for the whole session."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                   args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def new_page(browser: Browser) -> AsyncIterator[Callable[..., Awaitable[Watched]]]:
    """`await new_page(width=…)`: a page in a fresh context (its own sessionStorage), closed
    after the test; the test then errors if the page logged an error or threw."""
    contexts: list[BrowserContext] = []
    watched: list[Watched] = []

    async def make(width: int = 1280, height: int = 900) -> Watched:
        context = await browser.new_context(viewport={"width": width, "height": height},
                                            locale="en-GB", timezone_id="UTC")
        contexts.append(context)
        page = await context.new_page()
        page.set_default_timeout(10_000)
        entry = Watched(page)
        page.on("console", entry.on_console)
        page.on("pageerror", lambda error: entry.problems.append(f"uncaught: {error}"))
        watched.append(entry)
        return entry

    try:
        yield make
    finally:
        for context in contexts:
            await context.close()
    for entry in watched:
        assert entry.problems == [], entry.problems


@pytest.fixture
async def dana(users: UserFactory, token_for: Callable[..., str], redis: Any) -> Seeded:
    """The seeded user (tables emptied and Redis flushed first: `users` and `redis`)."""
    return await seed_user_with_tasks(users, token_for)
