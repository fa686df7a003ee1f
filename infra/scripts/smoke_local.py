"""Run the smoke suite (tests/smoke) against a real gateway started here, as production runs it.

    .venv/bin/python infra/scripts/smoke_local.py [pytest arguments]

What it starts, and always stops again (on success, failure, Ctrl-C or SIGTERM):
- a scratch database `gw_smoke_<random>` on the PostgreSQL of `DATABASE_URL`, or on the embedded
  server (started for this run only if it was not running), migrated by `python -m gateway migrate`;
- a private redis-server on a free port (or the Redis of `REDIS_URL`);
- `python -m gateway serve` with `APP_ENV=production`, two uvicorn workers and a random
  `JWT_SECRET_KEY`, on a free loopback port, in its own process group.
Then `SMOKE_URL=http://127.0.0.1:<port> pytest tests/smoke` runs, and its exit code is ours.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from gateway.data.db import normalize_dsn  # noqa: E402
from gateway.dev.embedded import RedisServer, ensure_services, free_port  # noqa: E402

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


class Interrupted(Exception):
    """SIGTERM or SIGHUP arrived: unwind through the `finally` blocks that stop everything."""


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


def _with_database(url: str, name: str) -> str:
    return f"{normalize_dsn(url).rpartition('/')[0]}/{name}"


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(_with_database(url, "postgres"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _wait_until_healthy(base_url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the gateway exited with {process.returncode} while starting")
        try:
            with urllib.request.urlopen(f"{base_url}/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the gateway did not become ready within {START_TIMEOUT_S:.0f} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the gateway's whole process group (uvicorn and its workers), then SIGKILL."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def main(pytest_args: list[str]) -> int:
    began = time.monotonic()
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    os.chdir(ROOT)
    services = ensure_services(os.environ.get("DATABASE_URL"), "redis://unused")
    database = f"gw_smoke_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    created = False
    redis_server: RedisServer | None = None
    gateway: subprocess.Popen[bytes] | None = None
    workdir = tempfile.TemporaryDirectory(prefix="smoke-")
    try:
        asyncio.run(_admin(services.database_url, f'create database "{database}"'))
        created = True
        database_url = _with_database(services.database_url, database)
        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            redis_server = RedisServer(Path(workdir.name) / "redis", port=free_port())
            redis_server.start()
            redis_url = redis_server.url()
        port = free_port()
        env = {**os.environ, "APP_ENV": "production", "DATABASE_URL": database_url,
               "REDIS_URL": redis_url, "JWT_SECRET_KEY": secrets.token_urlsafe(48),
               "HOST": "127.0.0.1", "PORT": str(port), "WORKERS": "2", "LOG_LEVEL": "WARNING",
               "ALLOWED_HOSTS": "*"}
        subprocess.run([sys.executable, "-m", "gateway", "migrate"], env=env, check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        log_path = Path(workdir.name) / "gateway.log"
        with open(log_path, "wb") as log:
            gateway = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], env=env,
                                       stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                       start_new_session=True)
        base_url = f"http://127.0.0.1:{port}"
        try:
            _wait_until_healthy(base_url, gateway)
        except RuntimeError:
            sys.stderr.write(log_path.read_text(errors="replace")[-4000:])
            raise
        print(f"smoke: gateway ready at {base_url} (APP_ENV=production, 2 workers) after "
              f"{time.monotonic() - began:.1f} s", flush=True)
        result = subprocess.run([sys.executable, "-m", "pytest", "tests/smoke", "-p",
                                 "no:cacheprovider", *pytest_args],
                                env={**os.environ, "SMOKE_URL": base_url}, check=False,
                                stdin=subprocess.DEVNULL)
        return result.returncode
    finally:
        if gateway is not None:
            started = time.monotonic()
            _stop(gateway)
            print(f"smoke: gateway stopped in {time.monotonic() - started:.1f} s", flush=True)
        if redis_server is not None:
            redis_server.stop()
        if created:
            asyncio.run(_admin(services.database_url,
                               f'drop database if exists "{database}" with (force)'))
        services.stop_started()
        workdir.cleanup()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
