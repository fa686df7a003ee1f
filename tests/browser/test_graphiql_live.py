"""GraphiQL runs subscriptions: the `dashboard` subscription, typed in its editor and run with the
Headers tab's token, shows the figures and then their change when a task is created through the
API. GraphiQL's bundle carries the graphql-ws client; the page gives it the WebSocket URL of
/graphql and sends the headers editor's `Authorization` in `connection_init`.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

from playwright.async_api import expect

from tests.browser.support import Seeded, Server, screenshot_path

SUBSCRIPTION = """subscription Live {
  dashboard {
    overview { totalTasks completedTasks }
  }
}"""
CREATE_TASK = 'mutation { createTask(input: {title: "from the API"}) { id } }'


async def test_a_subscription_runs_in_graphiql(server: Server, new_page: Any,
                                               dana: Seeded) -> None:
    watched = await new_page(width=1280, height=800)
    page = watched.page
    headers = json.dumps({"Authorization": f"Bearer {dana.token}"})
    # The page takes its editors' contents from the URL (`q`, `headers`), as Strawberry's does;
    # it decodes them with decodeURIComponent, so spaces are %20, not +.
    search = urlencode({"q": SUBSCRIPTION, "headers": headers}, quote_via=quote)
    await page.goto(f"{server.url}/graphql?{search}")
    await page.locator(".graphiql-execute-button").click()
    result = page.locator(".result-window")
    await expect(result).to_contain_text('"totalTasks": 13')

    await server.gql(CREATE_TASK, token=dana.token)
    await expect(result).to_contain_text('"totalTasks": 14')
    await page.screenshot(path=screenshot_path("graphiql-subscription"))
