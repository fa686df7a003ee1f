"""`make test-infra`: infra/nginx really passes a GraphQL WebSocket (graphql-transport-ws) on.

`nginx -t` (tests/test_infra.py) says the configuration parses; this says it works. It runs the
real nginx on a copy of infra/nginx (a fresh self-signed certificate, local ports, the upstream
rewritten to a stand-in API), and the stand-in: a WebSocket echo server that reports the headers
the upgrade reached it with. Then, through nginx over TLS:

- a WebSocket on `/graphql` with the `graphql-transport-ws` sub-protocol is upgraded end to end,
  with the forwarding headers of every other request (X-Forwarded-For/Proto, X-Request-ID), and
  messages go both ways;
- a plain POST to `/graphql` still reaches the API as an ordinary request, without an Upgrade.

Everything it starts is stopped on exit. Exit status 0 when both hold, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHandshake
from websockets.http11 import Request, Response

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.dev.embedded import free_port  # noqa: E402

INFRA = ROOT / "infra"
PROTOCOL = "graphql-transport-ws"


def nginx_copy(prefix: Path, upstream: int, https: int, http: int) -> Path:
    """infra/nginx under `prefix`, listening on local ports, its upstream the stand-in API."""
    etc = prefix / "etc"
    (etc / "conf.d").mkdir(parents=True)
    (prefix / "certs").mkdir()
    (prefix / "logs").mkdir()
    shutil.copy("/etc/nginx/mime.types", etc / "mime.types")
    certs = prefix / "certs"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=api.example.com", "-keyout", str(certs / "privkey.pem"),
                    "-out", str(certs / "fullchain.pem")],
                   check=True, capture_output=True, stdin=subprocess.DEVNULL)
    main = ((INFRA / "nginx" / "nginx.conf").read_text()
            .replace("/etc/nginx/conf.d", str(etc / "conf.d"))
            .replace("/etc/nginx/mime.types", str(etc / "mime.types"))
            .replace("/var/run/nginx.pid", str(prefix / "nginx.pid"))
            .replace("/var/log/nginx", str(prefix / "logs"))
            .replace("user nginx;", "")
            # Raising the descriptor limit needs a privilege a container may lack; not tested here.
            .replace("worker_rlimit_nofile", "# worker_rlimit_nofile"))
    (etc / "nginx.conf").write_text(main)
    for conf in (INFRA / "nginx" / "conf.d").glob("*.conf"):
        text = (conf.read_text()
                .replace("/etc/nginx/certs", str(prefix / "certs"))
                .replace("server api:8000", f"server 127.0.0.1:{upstream}")
                .replace("listen 443 ssl", f"listen 127.0.0.1:{https} ssl")
                .replace("listen [::]:443 ssl http2;", "")
                .replace("listen 80;", f"listen 127.0.0.1:{http};")
                .replace("listen [::]:80;", ""))
        (etc / "conf.d" / conf.name).write_text(text)
    return etc / "nginx.conf"


async def stand_in(connection: ServerConnection) -> None:
    """The API's stand-in: the upgrade's headers as the first message, then an echo."""
    headers = connection.request.headers if connection.request else Headers()
    await connection.send(json.dumps({
        "path": connection.request.path if connection.request else None,
        "subprotocol": connection.subprotocol,
        **{name: headers.get(name) for name in ("X-Forwarded-For", "X-Forwarded-Proto",
                                                "X-Request-ID", "Upgrade")}}))
    async for message in connection:
        await connection.send(message)


def plain_http(connection: ServerConnection, request: Request) -> Response | None:
    """A request without an upgrade answered as HTTP, with the headers it arrived with."""
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return None
    body = json.dumps({"upgrade": request.headers.get("Upgrade"),
                       "connection": request.headers.get("Connection")})
    return connection.respond(200, body)


async def check(https: int, upstream: int, config: Path, prefix: Path) -> list[str]:
    problems: list[str] = []
    async with serve(stand_in, "127.0.0.1", upstream, subprotocols=[PROTOCOL],  # type: ignore[list-item]
                     process_request=plain_http):
        nginx = await asyncio.create_subprocess_exec(
            "nginx", "-p", str(prefix), "-c", str(config),
            "-g", f"daemon off; error_log {prefix / 'logs' / 'error.log'};",
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            tls = ssl.create_default_context()
            tls.check_hostname = False
            tls.verify_mode = ssl.CERT_NONE
            for _ in range(50):  # nginx binds within a second
                try:
                    async with connect(f"wss://127.0.0.1:{https}/graphql", ssl=tls,
                                       subprotocols=[PROTOCOL],  # type: ignore[list-item]
                                       open_timeout=5) as socket:
                        seen: dict[str, Any] = json.loads(await socket.recv())
                        await socket.send('{"type":"ping"}')
                        echo = await asyncio.wait_for(socket.recv(), 5)
                    break
                except InvalidHandshake as exc:  # nginx answered, but did not upgrade
                    return [f"the WebSocket upgrade on /graphql failed: {exc}"]
                except OSError:
                    await asyncio.sleep(0.1)
            else:
                return ["nginx did not accept a connection"]
            if seen["path"] != "/graphql" or seen["subprotocol"] != PROTOCOL:
                problems.append(f"the upgrade reached the API as {seen}")
            if (seen["X-Forwarded-For"] != "127.0.0.1" or seen["X-Forwarded-Proto"] != "https"
                    or not seen["X-Request-ID"]):
                problems.append(f"forwarding headers missing on the upgrade: {seen}")
            if echo != '{"type":"ping"}':
                problems.append(f"the echo came back as {echo!r}")
            async with httpx.AsyncClient(verify=False) as client:  # a self-signed certificate
                answer = await client.post(f"https://127.0.0.1:{https}/graphql", json={})
            plain = answer.json() if answer.status_code == 200 else {"status": answer.status_code}
            if plain.get("upgrade") is not None or plain.get("connection") not in (None, ""):
                problems.append(f"a plain POST reached the API as {plain}")
        finally:
            nginx.terminate()
            await asyncio.wait_for(nginx.wait(), 10)
    return problems


def main() -> int:
    if shutil.which("nginx") is None or not Path("/etc/nginx/mime.types").exists():
        print("check_websocket_proxy: nginx is not installed", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="ws-proxy-") as tmp:
        upstream, https, http = free_port(), free_port(), free_port()
        config = nginx_copy(Path(tmp), upstream, https, http)
        problems = asyncio.run(check(https, upstream, config, Path(tmp)))
        if problems:
            log = (Path(tmp) / "logs" / "error.log")
            print("\n".join(problems), file=sys.stderr)
            if log.exists():
                print(log.read_text()[-2000:], file=sys.stderr)
            return 1
    print("check_websocket_proxy: nginx upgrades /graphql to a WebSocket with the forwarding "
          "headers; plain requests are not upgraded")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
