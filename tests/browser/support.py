"""What the browser tests share besides fixtures: the server handle, the watched page, the seeded
user and where screenshots go (tests/browser/artifacts/, not committed)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import ConsoleMessage, Page

from tests.factories import PASSWORD, User, UserFactory

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@dataclass
class Server:
    """The gateway under uvicorn, and a GraphQL client of it over real HTTP."""

    url: str
    http: httpx.AsyncClient

    async def gql(self, query: str, variables: dict[str, Any] | None = None,
                  token: str | None = None) -> dict[str, Any]:
        """POST a document; returns `data`, failing the test on any error."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = await self.http.post("/graphql", json={"query": query, "variables": variables},
                                        headers=headers)
        body: dict[str, Any] = response.json()
        assert "errors" not in body, body
        data: dict[str, Any] = body["data"]
        return data


@dataclass
class Watched:
    """A page, with what its console said: the tests fail on script errors and CSP reports."""

    page: Page
    problems: list[str] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        # A refused sign-in is an HTTP 200 with errors, so no "Failed to load resource" is
        # expected either; every console error is a defect of the page.
        if message.type == "error":
            self.problems.append(message.text)


def screenshot_path(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / f"{name}.png"


@dataclass(frozen=True)
class Seeded:
    user: User
    password: str
    token: str


async def seed_user_with_tasks(users: UserFactory, token_for: Callable[..., str]) -> Seeded:
    """A user with tasks spread over the last weeks: done (some late), in progress, to do,
    overdue and due today, so that every card and most trend buckets are non-zero."""
    user = await users.create(email="dana@example.com", display_name="Dana Example",
                              daily_goal=2)
    now = datetime.now(UTC).replace(microsecond=0)
    today = now.date()
    for days_ago in (1, 2, 3, 5, 8, 13, 20, 27, 40):
        created = now - timedelta(days=days_ago + 2)
        await users.task(user, title=f"done {days_ago}", status="done", created_at=created,
                         started_at=created + timedelta(hours=3),
                         completed_at=now - timedelta(days=days_ago),
                         due_date=today - timedelta(days=days_ago - (1 if days_ago % 2 else -1)))
    await users.task(user, title="in progress", status="in_progress",
                     created_at=now - timedelta(days=4), started_at=now - timedelta(days=1))
    await users.task(user, title="overdue", created_at=now - timedelta(days=9),
                     due_date=today - timedelta(days=2))
    await users.task(user, title="due today", created_at=now - timedelta(days=6),
                     due_date=today)
    await users.task(user, title="later", priority="high", created_at=now - timedelta(days=1),
                     due_date=today + timedelta(days=7))
    return Seeded(user, PASSWORD, token_for(user.id))
