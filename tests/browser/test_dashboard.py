"""The example dashboard in a real browser (Debian's chromium through Playwright).

Signed in through its form, the page must show exactly what the API answers for the same user:
the overview cards, the trend (its data table and the chart's legend), the productivity panel;
a task created through the API (over HTTP, not through the page) must reach the page within a
second through the `dashboard` subscription; WEEK and a date range must show the API's buckets.
At 360 px nothing may overflow sideways, and signing in works from the keyboard alone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from playwright.async_api import Page, expect

from gateway.dev.seed import DEMO_EMAIL, DEMO_PASSWORD
from tests.browser.support import Seeded, Server, Watched, screenshot_path

FIGURES = """
query Figures($period: Period!, $from: Date, $to: Date) {
  overview {
    totalTasks completedTasks pendingTasks inProgressTasks
    overdueTasks dueTodayTasks completionRate
  }
  trends(period: $period, from: $from, to: $to) {
    period from to
    points { date tasksCreated tasksCompleted tasksDue tasksCompletedOnTime productivityScore }
  }
  productivity(from: $from, to: $to) {
    from to score tasksCompleted averageTasksPerDay currentStreak longestStreak
    daysGoalMet onTimeRate leadTimeHours mostProductiveWeekday
  }
}
"""
CREATE_TASK = """
mutation Create($title: String!) { createTask(input: {title: $title}) { id } }
"""
LIVE_WITHIN_MS = 1000  # the promise: a change reaches the page within a second


# --- how the page writes figures (gateway/http/static/dashboard/view.js) ----------------------


def count(value: int) -> str:
    return f"{value:,}"


def decimal(value: float | None) -> str:
    return "–" if value is None else f"{value:,.1f}"


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value:,.1f} %"


def weekday(value: str | None) -> str:
    return "–" if value is None else value.capitalize()


OVERVIEW_TEXT = {
    "totalTasks": count, "completedTasks": count, "pendingTasks": count,
    "inProgressTasks": count, "overdueTasks": count, "dueTodayTasks": count,
    "completionRate": percent,
}
PRODUCTIVITY_TEXT = {
    "score": decimal, "tasksCompleted": count, "averageTasksPerDay": decimal,
    "currentStreak": count, "longestStreak": count, "daysGoalMet": count,
    "onTimeRate": percent, "leadTimeHours": decimal, "mostProductiveWeekday": weekday,
}


def table_rows(trends: dict[str, Any]) -> list[list[str]]:
    return [[p["date"], count(p["tasksCreated"]), count(p["tasksCompleted"]),
             count(p["tasksDue"]), count(p["tasksCompletedOnTime"]),
             decimal(p["productivityScore"])] for p in trends["points"]]


# --- page helpers -----------------------------------------------------------------------------


async def open_dashboard(server: Server, watched: Watched) -> Page:
    page = watched.page
    await page.goto(f"{server.url}/dashboard")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    return page


async def sign_in(page: Page, seeded: Seeded) -> None:
    await page.get_by_label("E-mail").fill(seeded.user.email)
    await page.get_by_label("Password").fill(seeded.password)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#connection-text")).to_have_text("Live")
    await expect(page.locator("#account-name")).to_have_text("Dana Example")


def figure(page: Page, name: str) -> Any:
    return page.locator(f'[data-figure="{name}"]')


async def expect_figures(page: Page, answer: dict[str, Any]) -> None:
    """Every card, the trend's range and table, as the API answered."""
    for name, text in OVERVIEW_TEXT.items():
        await expect(figure(page, name)).to_have_text(text(answer["overview"][name]))
    for name, text in PRODUCTIVITY_TEXT.items():
        await expect(figure(page, name)).to_have_text(text(answer["productivity"][name]))
    trends = answer["trends"]
    await expect(page.locator("#trend-range")).to_have_text(
        f"({trends['period'].lower()}, {trends['from']} to {trends['to']})")
    rows = await page.eval_on_selector_all(
        "#trend-table tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")
    assert rows == table_rows(trends)


async def legend_at_last_point(page: Page) -> dict[str, str]:
    """Hover the chart's right edge: uPlot's legend then shows the last bucket's values."""
    overlay = page.locator("#chart .u-over")
    box = await overlay.bounding_box()
    assert box is not None and box["width"] > 100 and box["height"] > 100, box
    await page.mouse.move(box["x"] + box["width"] - 1, box["y"] + box["height"] / 2)
    labels = await page.locator("#chart .u-legend .u-series .u-label").all_text_contents()
    values = await page.locator("#chart .u-legend .u-series .u-value").all_text_contents()
    return dict(zip(labels, values, strict=True))


async def figures(server: Server, seeded: Seeded, period: str = "DAY",
                  start: str | None = None, end: str | None = None) -> dict[str, Any]:
    return await server.gql(FIGURES, {"period": period, "from": start, "to": end},
                            token=seeded.token)


# --- the tests --------------------------------------------------------------------------------


async def test_the_page_shows_the_apis_figures_and_follows_changes_live(
        server: Server, new_page: Any, dana: Seeded) -> None:
    page = await open_dashboard(server, await new_page())
    await page.screenshot(path=screenshot_path("sign-in"))
    await sign_in(page, dana)

    answer = await figures(server, dana)
    assert answer["overview"]["totalTasks"] == 13  # the seed, as the API counts it
    await expect_figures(page, answer)
    last = answer["trends"]["points"][-1]
    legend = await legend_at_last_point(page)
    assert legend["From"] == last["date"]
    assert legend["Created"] == str(last["tasksCreated"])
    assert legend["Completed"] == str(last["tasksCompleted"])
    assert legend["Score"] == f"{last['productivityScore']:.1f}"
    await page.mouse.move(0, 0)
    await page.screenshot(path=screenshot_path("dashboard-day"), full_page=True)

    # A task created through the API (not the page) reaches the page through the subscription.
    await server.gql(CREATE_TASK, {"title": "from the API"}, token=dana.token)
    await expect(figure(page, "totalTasks")).to_have_text(
        count(answer["overview"]["totalTasks"] + 1), timeout=LIVE_WITHIN_MS)
    await expect(figure(page, "pendingTasks")).to_have_text(
        count(answer["overview"]["pendingTasks"] + 1), timeout=LIVE_WITHIN_MS)
    await expect(page.locator("#updated")).to_contain_text("Figures updated at")
    await expect_figures(page, await figures(server, dana))

    # WEEK: re-subscribed with the new period; the page shows the API's weekly buckets.
    await page.get_by_role("radio", name="Week").check()
    await expect_figures(page, await figures(server, dana, "WEEK"))
    await page.screenshot(path=screenshot_path("dashboard-week"), full_page=True)

    # A date range applies to the trend and the productivity panel.
    today = datetime.now(UTC).date()
    start, end = (today - timedelta(days=20)).isoformat(), (today - timedelta(days=3)).isoformat()
    await page.get_by_label("From", exact=True).fill(start)
    await page.get_by_label("To", exact=True).fill(end)
    ranged = await figures(server, dana, "WEEK", start, end)
    assert ranged["productivity"]["from"] == start
    await expect_figures(page, ranged)
    await page.get_by_role("radio", name="Month").check()
    await expect_figures(page, await figures(server, dana, "MONTH", start, end))

    # A range the wrong way round is refused on the page, with the reason, and nothing changes.
    await page.get_by_label("From", exact=True).fill(end)
    await page.get_by_label("To", exact=True).fill(start)
    await expect(page.locator("#controls-error")).to_contain_text("first day comes after")
    await page.get_by_role("button", name="Clear dates").click()
    await expect(page.locator("#controls-error")).to_be_empty()
    await expect_figures(page, await figures(server, dana, "MONTH"))


async def test_at_phone_width_nothing_overflows_sideways(
        server: Server, new_page: Any, dana: Seeded) -> None:
    page = await open_dashboard(server, await new_page(width=360, height=780))
    await sign_in(page, dana)
    await expect_figures(page, await figures(server, dana))
    await page.locator(".trend-data summary").click()  # the table too, opened
    widths = await page.evaluate("""() => ({
        viewport: window.innerWidth,
        document: document.documentElement.scrollWidth,
        body: document.body.scrollWidth,
        // Elements sticking out to the right, outside a scrolling box of their own.
        offenders: [...document.querySelectorAll('body *')]
          .filter(e => e.getClientRects().length && !e.closest('.table-scroll, .visually-hidden'))
          .filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5)
          .map(e => e.tagName + (e.id ? '#' + e.id : '') + '.' + e.className),
    })""")
    assert widths["viewport"] == 360
    assert widths["document"] <= 360 and widths["body"] <= 360, widths
    assert widths["offenders"] == [], widths
    await page.screenshot(path=screenshot_path("dashboard-phone"), full_page=True)
    await page.locator("#trend-title").scroll_into_view_if_needed()
    await page.screenshot(path=screenshot_path("dashboard-phone-trend"))


async def test_signing_in_with_the_keyboard_alone(
        server: Server, new_page: Any, dana: Seeded) -> None:
    page = await open_dashboard(server, await new_page())

    async def focused() -> dict[str, str]:
        info: dict[str, str] = await page.evaluate("""() => {
            const e = document.activeElement, style = getComputedStyle(e);
            return {id: e.id, text: e.textContent.trim(), outline: style.outlineStyle,
                    width: style.outlineWidth};
        }""")
        return info

    await page.keyboard.press("Tab")
    assert (await focused())["text"] == "Skip to the main content"
    await page.keyboard.press("Tab")
    email = await focused()
    assert email["id"] == "email"
    assert email["outline"] == "solid" and email["width"] == "3px"  # a visible focus ring
    await page.keyboard.type(dana.user.email)
    await page.keyboard.press("Tab")
    assert (await focused())["id"] == "password"
    await page.keyboard.type(dana.password)
    await page.keyboard.press("Enter")
    await expect(page.locator("#connection-text")).to_have_text("Live")
    assert (await focused())["id"] == "dashboard-title"  # focus follows, for screen readers
    await expect_figures(page, await figures(server, dana))
    # The period from the keyboard: Tab to the radio group, arrows move the choice.
    await page.get_by_role("radio", name="Day").focus()
    await page.keyboard.press("ArrowRight")
    await expect(page.get_by_role("radio", name="Week")).to_be_checked()
    await expect_figures(page, await figures(server, dana, "WEEK"))


async def test_a_wrong_password_is_said_and_signing_out_revokes_the_session(
        server: Server, new_page: Any, dana: Seeded) -> None:
    page = await open_dashboard(server, await new_page())
    await page.get_by_label("E-mail").fill(dana.user.email)
    await page.get_by_label("Password").fill("not the password")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_have_text("Invalid email or password")
    await expect(page.get_by_label("Password")).to_have_attribute("aria-invalid", "true")
    await page.screenshot(path=screenshot_path("sign-in-refused"))

    await sign_in(page, dana)
    stored = await page.evaluate(
        "() => JSON.parse(sessionStorage.getItem('analytics-dashboard:session'))")
    assert stored["refreshToken"] and stored["accessToken"]
    async with page.expect_response(lambda r: r.request.method == "POST"
                                    and "logout" in (r.request.post_data or "")) as logout:
        await page.get_by_role("button", name="Sign out").click()
    assert (await (await logout.value).json())["data"]["logout"] is True
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await expect(page.locator("#connection-text")).to_have_text("Not signed in")
    assert await page.evaluate("() => sessionStorage.length") == 0
    # `logout` revoked the refresh token: trading it is refused.
    response = await server.http.post("/graphql", json={
        "query": "mutation($t: String!) { refreshToken(refreshToken: $t) { expiresIn } }",
        "variables": {"t": stored["refreshToken"]}})
    assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    # The figures of the previous user are gone from the page.
    await expect(figure(page, "totalTasks")).to_have_text("–")


async def test_a_refused_token_is_refreshed_and_the_figures_follow_again(
        server: Server, new_page: Any, dana: Seeded) -> None:
    """The socket is closed with 4401 when its token is refused: the page trades its refresh
    token for a new pair and subscribes again (as when a token expires on an open socket)."""
    page = await open_dashboard(server, await new_page())
    await sign_in(page, dana)
    key = "analytics-dashboard:session"
    before = await page.evaluate(f"""() => {{
        const state = JSON.parse(sessionStorage.getItem('{key}'));
        sessionStorage.setItem('{key}', JSON.stringify({{...state, accessToken: 'not-a-jwt'}}));
        return state;
    }}""")
    await page.reload()
    await expect(page.locator("#connection-text")).to_have_text("Live")
    await expect_figures(page, await figures(server, dana))
    after = await page.evaluate(f"() => JSON.parse(sessionStorage.getItem('{key}'))")
    assert after["accessToken"] not in ("not-a-jwt", before["accessToken"])
    assert after["refreshToken"] != before["refreshToken"]  # the old one was used up
    await server.gql(CREATE_TASK, {"title": "after the refresh"}, token=dana.token)
    await expect(figure(page, "totalTasks")).to_have_text(count(14), timeout=LIVE_WITHIN_MS)


async def test_in_development_the_form_holds_the_demo_email(
        dev_server: Server, new_page: Any) -> None:
    watched = await new_page()
    page = await open_dashboard(dev_server, watched)
    await expect(page.get_by_label("E-mail")).to_have_value(DEMO_EMAIL)
    await expect(page.locator("#demo-hint")).to_contain_text(DEMO_PASSWORD)
    await expect(page.get_by_label("Password")).to_have_value("")  # typed by the person
    await page.screenshot(path=screenshot_path("sign-in-development"))


async def test_elsewhere_the_form_is_empty(server: Server, new_page: Any) -> None:
    page = await open_dashboard(server, await new_page())
    await expect(page.get_by_label("E-mail")).to_have_value("")
    await expect(page.locator("#demo-hint")).to_be_hidden()


async def test_a_range_the_api_refuses_is_said_and_a_valid_one_recovers(
        server: Server, new_page: Any, dana: Seeded) -> None:
    page = await open_dashboard(server, await new_page())
    await sign_in(page, dana)
    await page.get_by_label("From", exact=True).fill("2020-01-01")  # > 1000 days: refused
    await expect(page.locator("#live-error")).to_have_text(
        "the range spans more than 1000 days")
    await expect(page.locator("#connection-text")).to_have_text("Live")  # the socket stays
    # Months would do for the trend, but the dates bound the (daily) productivity panel too.
    await page.get_by_role("radio", name="Month").check()
    await expect(page.locator("#trend-range")).to_contain_text("(day,")
    await page.get_by_role("button", name="Clear dates").click()
    await expect(page.locator("#live-error")).to_be_empty()
    await expect_figures(page, await figures(server, dana, "MONTH"))
