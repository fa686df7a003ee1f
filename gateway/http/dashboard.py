"""The example dashboard outside production: `GET /dashboard` and the files under `/dashboard/`.

The dashboard (`static/dashboard/`, described in docs/dashboard.md) is plain HTML, CSS and
JavaScript modules with no build step: it signs in with the `login` mutation and follows the
`dashboard` subscription over `ws(s)://<this host>/graphql`. In production nginx serves the same
files (infra/nginx); the gateway's route does not exist there, and this handler refuses as well.

Only the page's own files (`*.html`, `*.js`, `*.css` at the top of the folder) and the vendored
files that `static/dashboard/vendor/manifest.json` lists, with their LICENSEs, are served; never
the updater, its manifest or README. The page is sent with a `Content-Security-Policy` allowing
this origin only (and its WebSocket URLs). In development (`APP_ENV=development`, what `make run`
uses) it carries the seeded demo user's e-mail (`DEMO_EMAIL`, gateway/dev/seed.py), which the
sign-in form is prefilled with; in no other environment.
"""

from __future__ import annotations

import functools
import html
import json
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response

from gateway.dev.seed import DEMO_EMAIL, DEMO_PASSWORD
from gateway.http.bodies import error_body
from gateway.http.graphiql import websocket_sources
from gateway.http.responses import ORJSONResponse
from gateway.ops.settings import Settings

DASHBOARD_DIR = Path(__file__).resolve().parent / "static" / "dashboard"
VENDOR_DIR = DASHBOARD_DIR / "vendor"
# One route for the page (`/dashboard`, `/dashboard/`) and its files (`/dashboard/<file>`).
DASHBOARD_ROUTE = "/dashboard{path:path}"
OWN_SUFFIXES = {".html", ".js", ".css"}
MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", "": "text/plain"}  # "": LICENSE
# Vendored paths carry their package's version (a new version is a new URL); the page's own
# files change with the checkout, so the browser asks again each time.
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
DEV_CONFIG_MARKER = "<!-- development-config -->"


@functools.cache
def served_files() -> dict[str, tuple[Path, str]]:
    """URL path under `/dashboard/` -> (file, cache-control): the allow-list of what is served."""
    files = {path.name: (path, REVALIDATE) for path in DASHBOARD_DIR.iterdir()
             if path.is_file() and path.suffix in OWN_SUFFIXES and path.name != "index.html"}
    manifest = json.loads((VENDOR_DIR / "manifest.json").read_text(encoding="utf-8"))
    for entry in manifest["packages"]:
        base = f"vendor/{entry['package']}@{entry['version']}"
        for name in [*entry["files"], "LICENSE"]:
            files[f"{base}/{name}"] = (DASHBOARD_DIR / base / name, IMMUTABLE)
    return files


@functools.cache
def _index() -> str:
    return (DASHBOARD_DIR / "index.html").read_text(encoding="utf-8")


def content_security_policy(request: Request) -> str:
    """This origin only: no inline script or style (uPlot sets styles through the CSSOM, which
    the policy does not restrict), and GraphQL over HTTP and WebSocket to this host."""
    return "; ".join((
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'" + websocket_sources(request),
        "base-uri 'none'",
        "form-action 'none'",  # the sign-in form is sent by script, never as a navigation
        "frame-ancestors 'none'",
    ))


def render_index(settings: Settings) -> str:
    """The page; in development with the demo user's e-mail (and where its password is) as
    `<meta>` elements that app.js reads."""
    if settings.app_env != "development":
        return _index()
    meta = (f'<meta name="dashboard:demo-email" content="{html.escape(DEMO_EMAIL)}">\n    '
            f'<meta name="dashboard:demo-password" content="{html.escape(DEMO_PASSWORD)}">')
    return _index().replace(DEV_CONFIG_MARKER, meta, 1)


def _not_found() -> Response:
    return ORJSONResponse(error_body("Not Found", "NOT_FOUND"), status_code=404)


async def dashboard(request: Request) -> Response:
    """`GET /dashboard`, `/dashboard/` (the page) and `/dashboard/<file>` (an allowed file)."""
    settings: Settings = request.app.state.settings
    if settings.is_production:  # the route is not even added there; nginx serves the files
        return _not_found()
    path = request.path_params["path"]
    if path in ("", "/", "/index.html"):
        return HTMLResponse(render_index(settings), headers={
            "content-security-policy": content_security_policy(request),
            "cache-control": REVALIDATE,
            "referrer-policy": "no-referrer",
            "x-content-type-options": "nosniff",
        })
    found = served_files().get(path.removeprefix("/")) if path.startswith("/") else None
    if found is None:
        return _not_found()
    file, cache_control = found
    return FileResponse(file, media_type=MEDIA_TYPES.get(file.suffix, "application/octet-stream"),
                        headers={"cache-control": cache_control,
                                 "x-content-type-options": "nosniff"})
