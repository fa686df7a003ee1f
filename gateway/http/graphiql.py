"""GraphiQL outside production, working with no network: the IDE page of `GET /graphql` and the
files it loads, served from `/graphiql/`.

The page is our copy of Strawberry's (`graphiql.html` here) whose `<script>` and stylesheet tags
name the files vendored in `static/graphiql/` (the ones Strawberry's page loads from unpkg, with
the same `integrity`; `static/graphiql/README.md` says how they are re-fetched). It is sent with a
`Content-Security-Policy` that allows nothing but this origin, and the inline script by its nonce.

Its default query is the dashboard (overview, trends, productivity) with comments saying how to
sign in and how to follow the figures live. Subscriptions run from the page: GraphiQL's bundle
carries the graphql-ws client, and the page's fetcher is given `subscriptionUrl` (this path, ws:
or wss:), to which GraphiQL sends the Headers tab as the `connection_init` payload, so its
`Authorization` signs the socket in; the policy's `connect-src` names that WebSocket origin.

In development (`APP_ENV=development`, what `make run` uses) the headers editor holds an access
token minted for the seeded demo user (`DEMO_EMAIL`) when the page is served, if that user exists;
in any other environment it holds a placeholder and the comments show `login` to run.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response

from gateway.data.db import query
from gateway.data.resources import Resources
from gateway.dev.seed import DEMO_EMAIL, DEMO_PASSWORD
from gateway.http.bodies import error_body
from gateway.http.responses import ORJSONResponse
from gateway.ops.settings import Settings
from gateway.security.access import create_access_token

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "graphiql.html"
ASSET_DIR = HERE / "static" / "graphiql"
ASSET_PREFIX = "/graphiql/"
ASSET_ROUTE = ASSET_PREFIX + "{path:path}"
# Each file's path carries its package's version: a new version is a new URL.
IMMUTABLE = "public, max-age=31536000, immutable"
MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css"}  # Starlette adds the charset
DEMO_LOOKUP_TIMEOUT = 2.0  # seconds; the page is served without a token rather than late
HEADERS_PLACEHOLDER = '{\n  "Authorization": "Bearer <the accessToken that login returns>"\n}'
_PLACEHOLDER = re.compile(r"\{\{ ([A-Z_]+) \}\}")
# A Host header that can be written into a policy as it is: a name or IP literal, maybe a port.
_HOST = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")

SIGN_IN_PREFILLED = """\
# Signed in: the Headers tab (below) holds an access token
# for the demo user {email}, minted when this page
# was served (development only). It expires after
# {minutes} minutes: reload the page for a fresh one.
#
# To be someone else, run (in a new tab: +)
#
#   mutation {{
#     login(email: "{email}",
#           password: "{password}") {{
#       accessToken expiresIn
#     }}
#   }}
#
# and put its accessToken in the Headers tab:
#   {{"Authorization": "Bearer <accessToken>"}}
"""
SIGN_IN_FIRST = """\
# Sign in first: every field below needs an access token.
# Run this mutation (in a new tab: +):
#
#   mutation {{
#     login(email: "{email}",
#           password: "{password}") {{
#       accessToken expiresIn
#     }}
#   }}
#
# then put its accessToken in the Headers tab (below), in
# place of the placeholder:
#   {{"Authorization": "Bearer <accessToken>"}}
# and run this query. No account yet? The `register`
# mutation makes one (docs/api.md).
"""
LIVE_HINT = """\
# Live figures: a subscription pushes them at once and on
# every change, over a WebSocket (the Headers tab is sent
# when it connects). Run it in a new tab; ■ stops it:
#
#   subscription {
#     dashboard {
#       overview { totalTasks completedTasks }
#     }
#   }
"""
DASHBOARD_QUERY = """\
query Dashboard {
  me { email displayName timezone dailyGoal }
  overview {
    totalTasks completedTasks pendingTasks
    inProgressTasks overdueTasks dueTodayTasks
    completionRate
    priorityDistribution { high medium low }
    statusDistribution { todo inProgress done }
  }
  trends(period: DAY) {
    period from to
    points {
      date tasksCreated tasksCompleted tasksDue
      tasksCompletedOnTime completionRate
      productivityScore
    }
  }
  productivity {
    from to score tasksCompleted averageTasksPerDay
    currentStreak longestStreak daysGoalMet
    leadTimeHours cycleTimeHours onTimeRate
    mostProductiveWeekday mostProductiveHour
  }
}
"""


@dataclass(frozen=True)
class Asset:
    """One vendored file, as `static/graphiql/manifest.json` lists it."""

    kind: str  # "script" or "stylesheet"
    package: str
    version: str
    file: str
    integrity: str

    @property
    def path(self) -> str:
        return f"{self.package}@{self.version}/{self.file}"

    @property
    def url(self) -> str:
        return ASSET_PREFIX + self.path

    def tag(self) -> str:
        if self.kind == "stylesheet":
            return (f'<link crossorigin rel="stylesheet" href="{self.url}" '
                    f'integrity="{self.integrity}" />')
        return f'<script crossorigin src="{self.url}" integrity="{self.integrity}"></script>'


@functools.cache
def assets() -> tuple[Asset, ...]:
    """The vendored files, in the order of Strawberry's page (scripts run in this order)."""
    manifest = json.loads((ASSET_DIR / "manifest.json").read_text(encoding="utf-8"))
    return tuple(Asset(entry["kind"], entry["package"], entry["version"], entry["file"],
                       entry["integrity"]) for entry in manifest["assets"])


@functools.cache
def _assets_by_path() -> dict[str, Asset]:
    return {asset.path: asset for asset in assets()}


@functools.cache
def _template() -> str:
    return TEMPLATE.read_text(encoding="utf-8")


async def graphiql_asset(request: Request) -> Response:
    """`GET /graphiql/<package>@<version>/<file>`: a vendored file (only those the manifest
    lists), cached for a year. The route exists outside production only (gateway/http/app.py)."""
    asset = _assets_by_path().get(request.path_params["path"])
    if asset is None:
        return ORJSONResponse(error_body("Not Found", "NOT_FOUND"), status_code=404)
    media_type = MEDIA_TYPES.get(Path(asset.file).suffix, "application/octet-stream")
    return FileResponse(ASSET_DIR / asset.path, media_type=media_type,
                        headers={"cache-control": IMMUTABLE})


def script_literal(value: Any) -> str:
    """`value` as a JavaScript literal that is safe inside an inline `<script>`: JSON, with `<`,
    `>`, `&` and the two line separators escaped, so no string can close the element."""
    text = json.dumps(value, ensure_ascii=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text


def websocket_sources(request: Request) -> str:
    """` ws://host wss://host` for the host the page was asked from: the subscriptions' socket
    (same path as HTTP) allowed by `connect-src` in every browser (CSP 3 lets `'self'` match it,
    older browsers do not); nothing when the Host header is not a plain host[:port]."""
    host = request.headers.get("host", "")
    return f" ws://{host} wss://{host}" if _HOST.fullmatch(host) else ""


def content_security_policy(nonce: str, websockets: str = "") -> str:
    """This origin only (and `websockets`, from `websocket_sources`). The inline script by its
    nonce; styles may be inline (GraphiQL and its editors set them at run time); fonts and the
    icon are `data:` URLs of the vendored CSS and of the page."""
    return "; ".join((
        "default-src 'none'",
        f"script-src 'self' 'nonce-{nonce}'",
        "style-src 'self' 'unsafe-inline'",
        "font-src 'self' data:",
        "img-src 'self' data:",
        "connect-src 'self'" + websockets,
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'self'",
    ))


def default_query(settings: Settings, prefilled: bool) -> str:
    development = settings.app_env == "development"
    email, password = (DEMO_EMAIL, DEMO_PASSWORD) if development else ("you@example.com",
                                                                        "your-password")
    sign_in = (SIGN_IN_PREFILLED if prefilled else SIGN_IN_FIRST).format(
        email=email, password=password, minutes=settings.jwt_access_token_expire_minutes)
    return ("# The analytics gateway: a dashboard in one request.\n"
            "# Run it with Ctrl-Enter (or the ▶ button). Ctrl-Space\n"
            "# completes; the Docs panel (top left) lists every field.\n#\n"
            + sign_in + "#\n" + LIVE_HINT + "\n" + DASHBOARD_QUERY)


async def demo_token(settings: Settings, resources: Resources | None) -> str | None:
    """An access token for the seeded demo user: in development only, when that user exists."""
    if settings.app_env != "development" or resources is None:
        return None
    try:
        async with asyncio.timeout(DEMO_LOOKUP_TIMEOUT):
            user = await resources.pool.fetchrow(query("user_for_login"), DEMO_EMAIL)
    except Exception as exc:  # the IDE still opens, with the sign-in comments instead
        log.warning("GraphiQL: could not look up the demo user: %s", type(exc).__name__)
        return None
    if user is None:
        return None
    return create_access_token(settings, user["id"], user["role"])


def render_page(settings: Settings, nonce: str, token: str | None) -> str:
    headers = (json.dumps({"Authorization": f"Bearer {token}"}, indent=2) if token
               else HEADERS_PLACEHOLDER)
    values = {
        "NONCE": nonce,
        "STYLESHEETS": "\n    ".join(a.tag() for a in assets() if a.kind == "stylesheet"),
        "SCRIPTS": "\n    ".join(a.tag() for a in assets() if a.kind == "script"),
        "DEFAULT_QUERY": script_literal(default_query(settings, prefilled=token is not None)),
        "DEFAULT_HEADERS": script_literal(headers),
        "HEADERS_PREFILLED": "true" if token else "false",
    }
    # One pass: a value is never read again for placeholders.
    return _PLACEHOLDER.sub(lambda match: values[match[1]], _template())


async def graphiql_page(request: Request) -> Response:
    """The IDE page (`GET /graphql` from a browser, outside production)."""
    settings: Settings = request.app.state.settings
    if settings.is_production:  # GraphQLApp has no IDE there; this is a second lock
        return ORJSONResponse(error_body("Not Found", "NOT_FOUND"), status_code=404)
    token = await demo_token(settings, getattr(request.app.state, "resources", None))
    nonce = secrets.token_urlsafe(18)
    return HTMLResponse(render_page(settings, nonce, token), headers={
        "content-security-policy": content_security_policy(nonce, websocket_sources(request)),
        # It may carry a token, and its nonce is for this response only.
        "cache-control": "no-store",
    })
