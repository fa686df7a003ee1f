"""The example dashboard's route (gateway/http/dashboard.py), over plain HTTP.

Outside production `/dashboard` serves the page with a strict Content-Security-Policy, and every
file its modules import is served (and nothing but the allowed files); the vendored files match
their manifest; in development the page carries the demo user's e-mail, nowhere else; in
production there is no route at all (nginx serves the files). tests/browser drives the page.
"""

from __future__ import annotations

import base64
import hashlib
import html.parser
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from gateway.dev.embedded import free_port
from gateway.dev.seed import DEMO_EMAIL
from gateway.http.dashboard import DASHBOARD_DIR, VENDOR_DIR
from gateway.ops.settings import Settings
from tests.conftest import running_app

# `import … from "./x.js"`, `export … from "./x.js"`, `import "./x.js"`, and CSS `@import url()`.
JS_IMPORT = re.compile(r"""(?:\bfrom|\bimport)\s*["'](\.{1,2}/[^"']+)["']""")
CSS_IMPORT = re.compile(r"""@import\s+url\(["']?([^"')]+)["']?\)""")
ROOT = Path(__file__).resolve().parent.parent
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")


class Page(html.parser.HTMLParser):
    """The tags of the page worth checking: scripts, links, inputs and labels."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str]] = []
        self.links: list[dict[str, str]] = []
        self.inputs: list[dict[str, str]] = []
        self.label_for: set[str] = set()
        self.metas: dict[str, str] = {}
        self._open_labels = 0
        self.wrapped_inputs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if tag == "script":
            self.scripts.append(found)
        elif tag == "link":
            self.links.append(found)
        elif tag == "meta" and "name" in found:
            self.metas[found["name"]] = found.get("content", "")
        elif tag == "label":
            self._open_labels += 1
            if "for" in found:
                self.label_for.add(found["for"])
        elif tag == "input":
            self.inputs.append(found)
            if self._open_labels:
                self.wrapped_inputs.append(found.get("value", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self._open_labels -= 1


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    return page


def directives(response: httpx.Response) -> dict[str, str]:
    return dict(part.strip().split(" ", 1)
                for part in response.headers["content-security-policy"].split(";"))


def sha384(data: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()


async def test_the_page_has_a_strict_content_security_policy(client: httpx.AsyncClient) -> None:
    for path in ("/dashboard", "/dashboard/"):
        response = await client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        policy = directives(response)
        assert policy["default-src"] == "'none'"
        assert policy["script-src"] == "'self'"  # no inline script, no eval
        assert policy["style-src"] == "'self'"
        assert policy["connect-src"] == "'self' ws://testserver wss://testserver"
        assert policy["frame-ancestors"] == "'none'" and policy["form-action"] == "'none'"
        assert response.headers["cache-control"] == "no-cache"
        page = parse(response.text)
        assert all(script.get("src") for script in page.scripts)  # nothing inline to allow
        assert "https://" not in response.text and "http://" not in response.text


async def test_every_file_the_page_loads_is_served(client: httpx.AsyncClient) -> None:
    """Follow the page's module graph (JS imports, CSS @imports): all of it is served, with the
    right type; vendored files are cached for good, the page's own files revalidated."""
    page = parse((await client.get("/dashboard")).text)
    todo = [s["src"] for s in page.scripts] + [
        link["href"] for link in page.links if link.get("rel") == "stylesheet"]
    seen: set[str] = set()
    while todo:
        url = todo.pop()
        if url in seen:
            continue
        seen.add(url)
        response = await client.get(url)
        assert response.status_code == 200, url
        kind = "text/css" if url.endswith(".css") else "text/javascript"
        assert response.headers["content-type"] == f"{kind}; charset=utf-8", url
        expected = ("public, max-age=31536000, immutable" if "/vendor/" in url
                    else "no-cache")
        assert response.headers["cache-control"] == expected, url
        base = httpx.URL(f"http://testserver{url}")
        found = CSS_IMPORT.findall(response.text) if kind == "text/css" \
            else JS_IMPORT.findall(response.text)
        todo += [base.join(relative).path for relative in found]
    # The page's modules, the vendored ones and their chunk, both stylesheets.
    assert {"/dashboard/app.js", "/dashboard/live.js", "/dashboard/chart.js",
            "/dashboard/vendor.js", "/dashboard/style.css", "/dashboard/vendor.css"} <= seen
    assert any(url.endswith("/uPlot.esm.js") for url in seen)
    assert any(url.endswith("/graphql-ws@6.4.2/dist/client.js") for url in seen)
    assert any("/graphql-ws@6.4.2/dist/common-" in url for url in seen)


async def test_only_the_pages_files_are_served(client: httpx.AsyncClient) -> None:
    for path in ("/dashboard/vendor/update.py", "/dashboard/vendor/manifest.json",
                 "/dashboard/vendor/README.md", "/dashboard/vendor/",
                 "/dashboard/vendor/uplot@1.6.32/dist/uPlot.cjs.js",
                 "/dashboard/../graphiql.py", "/dashboard/%2e%2e/graphiql.py",
                 "/dashboard/vendor/uplot@1.6.32/%2e%2e/%2e%2e/app.js", "/dashboard/nope.js",
                 "/dashboardapp.js", "/dashboard//app.js"):
        assert (await client.get(path)).status_code == 404, path
    refused = await client.get("/dashboard/vendor/manifest.json")
    assert refused.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    licence = await client.get("/dashboard/vendor/uplot@1.6.32/LICENSE")
    assert licence.status_code == 200 and "MIT" in licence.text
    head = await client.head("/dashboard/app.js")
    assert head.status_code == 200 and head.content == b""


def test_the_vendored_files_match_their_manifest() -> None:
    manifest = json.loads((VENDOR_DIR / "manifest.json").read_text())
    assert {entry["package"] for entry in manifest["packages"]} == {"uplot", "graphql-ws"}
    for entry in manifest["packages"]:
        base = VENDOR_DIR / f"{entry['package']}@{entry['version']}"
        assert entry["license"] == "MIT" and "MIT" in (base / "LICENSE").read_text()
        assert entry["tarball"].startswith("sha512-")
        for name, digest in entry["files"].items():
            assert sha384((base / name).read_bytes()) == digest, name
    # The updater's own offline check agrees (vendor.js and vendor.css as generated, imports).
    checked = subprocess.run([sys.executable, str(VENDOR_DIR / "update.py"), "--check"],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_input_has_a_label() -> None:
    page = parse((DASHBOARD_DIR / "index.html").read_text())
    assert page.inputs
    for field in page.inputs:
        assert field.get("id") in page.label_for or field.get("value") in page.wrapped_inputs, \
            field


async def test_in_development_the_page_carries_the_demo_email(settings: Settings) -> None:
    async with running_app(replace(settings, app_env="development")) as client:
        page = parse((await client.get("/dashboard")).text)
        assert page.metas["dashboard:demo-email"] == DEMO_EMAIL
    for env in ("test", "staging"):
        async with running_app(replace(settings, app_env=env)) as client:
            text = (await client.get("/dashboard")).text
            assert "dashboard:demo" not in text and DEMO_EMAIL not in text, env


async def test_no_dashboard_route_in_production(settings: Settings) -> None:
    production = replace(settings, app_env="production", jwt_secret_key="p" * 40)
    async with running_app(production) as client:
        for path in ("/dashboard", "/dashboard/", "/dashboard/app.js",
                     "/dashboard/vendor/uplot@1.6.32/dist/uPlot.esm.js"):
            response = await client.get(path)
            assert response.status_code == 404, path
            assert DEMO_EMAIL not in response.text


# --- nginx, as production serves the page ----------------------------------------------------


def dashboard_locations() -> str:
    """The `location = /dashboard` and `location /dashboard/` blocks of analytics.conf."""
    text = (ROOT / "infra" / "nginx" / "conf.d" / "analytics.conf").read_text()
    start = text.index("    location = /dashboard {")
    depth, end, opened = 0, start, 0
    for end in range(start, len(text)):
        if text[end] == "{":
            depth += 1
            opened += 1
        elif text[end] == "}":
            depth -= 1
            if depth == 0 and opened >= 3:  # the redirect, the directory and its inner block
                break
    return text[start:end + 1]


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (make test-infra installs it)")
def test_nginx_serves_the_page_with_its_policy_and_nothing_else(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "logs").mkdir()
    locations = dashboard_locations().replace("/usr/share/nginx/dashboard/",
                                              f"{DASHBOARD_DIR}/")
    (tmp_path / "nginx.conf").write_text(f"""
        error_log {tmp_path}/logs/error.log;
        pid {tmp_path}/nginx.pid;
        events {{}}
        http {{
            include /etc/nginx/mime.types;
            access_log off;
            server {{
                listen 127.0.0.1:{port};
                {locations}
            }}
        }}""")
    process = subprocess.Popen([str(NGINX), "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
                                "-g", "daemon off; master_process off;"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}",
                          transport=httpx.HTTPTransport(retries=20)) as http:
            for _ in range(100):  # until it listens
                try:
                    page = http.get("/dashboard/")
                    break
                except httpx.ConnectError:
                    assert process.poll() is None, process.communicate()[1]
                    time.sleep(0.05)
            assert page.status_code == 200
            assert page.text == (DASHBOARD_DIR / "index.html").read_text()
            policy = directives(page)
            assert policy["script-src"] == "'self'" and policy["default-src"] == "'none'"
            assert policy["connect-src"] == "'self' wss://127.0.0.1"
            assert page.headers["x-content-type-options"] == "nosniff"
            assert http.get("/dashboard").headers["location"].endswith("/dashboard/")
            module = http.get("/dashboard/app.js")
            assert module.status_code == 200 and "javascript" in module.headers["content-type"]
            assert "content-security-policy" in module.headers
            for hidden in ("/dashboard/vendor/update.py", "/dashboard/vendor/manifest.json",
                           "/dashboard/vendor/README.md"):
                assert http.get(hidden).status_code == 404, hidden
    finally:
        process.terminate()
        process.wait(10)
