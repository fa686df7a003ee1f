"""`make bench`: seed a benchmark database, serve the API as in production, load it with wrk, and
compare every figure with bare baselines measured in the same run.

    python -m bench.run                  # what `make bench` runs
    python -m bench.run --markdown bench-results/<date>.json   # tables for the docs
    BENCH_QUICK=1 make bench             # 1,000 users, short runs: does the harness work?
    BENCH_USERS=1000 make bench          # a smaller main dataset
    BENCH_LARGE=1 make bench             # also the 100,000-user scaling point

Settings (environment): BENCH_USERS (10000), BENCH_SIZES (the datasets, default "1000,<users>"),
BENCH_LARGE, BENCH_TASKS (tasks per user, 200), BENCH_DAYS (365), BENCH_DURATION (seconds per
run, 8), BENCH_CONCURRENCY ("1,16,64"; the tracing scenarios, the mix and the profiles run at
one level only, `Config.busy`), BENCH_SAMPLE (users the load picks from, 500),
BENCH_RESEED=1 (seed again even when the database is already seeded today), BENCH_PROFILE=1
(py-spy on the API during the dashboard and admin runs), BENCH_TRACING=0 (leave out the tracing
scenarios), BENCH_LIVE=0 (leave out the live subscriptions), BENCH_ONLY (only these groups, e.g.
"live" or "jobs,dashboard"; see SCENARIO_GROUPS), BENCH_OUT (the result file). The live scenarios
have their own (bench/live.py): BENCH_LIVE_SUBSCRIPTIONS, BENCH_LIVE_SECONDS, BENCH_LIVE_IDLE,
BENCH_LIVE_FIELD, BENCH_LIVE_DEFLATE, BENCH_LIVE_PARTS, BENCH_LIVE_DESCRIBED, BENCH_LIVE_WARMUP.
BENCH_PEERS=postgraphile also measures a
peer's equivalent of the uncached `overview` in the dashboard group (bench/peers/, installed under
`.data/bench/peers/` by the run itself).
`DATABASE_URL` / `REDIS_URL` name servers to use instead (databases `gateway_bench_<users>` are
created there). By default the run starts its own PostgreSQL cluster from the embedded binaries
(data under `.data/bench/`, kept so that a dataset seeded today is reused; never the development
database) and a private redis-server. Traffic goes to 127.0.0.1 only, every run is bounded in time,
and every process started here is stopped on exit, errors included.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pickle
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.baseline import redis_key
from bench.live import LiveConfig, bench_live
from bench.peers import PEERS, postgraphile
from bench.processes import (
    BENCH_DATA_DIR,
    ROOT,
    Server,
    log,
    peak_rss_mib,
    start_server,
    stop_process,
    wait_healthy,
)
from bench.report import (
    LIVE_IDLE,
    LIVE_LATENCY,
    PEER_SCENARIOS,
    TRACING_BASELINES,
    TRACING_LEVELS,
    TRACING_MODES,
    Job,
    Report,
    Run,
    TracingLevel,
    apply_baselines,
    apply_peers,
    cpu_notes,
    evaluate_targets,
    merge_runs,
    parse_wrk,
    peer_comparisons,
    render,
    tracing_costs,
    tracing_scenario,
)
from gateway.data.db import normalize_dsn
from gateway.data.migrate import migrate
from gateway.dev.embedded import PostgresServer, RedisServer, _give_to, _run_as, free_port
from gateway.dev.seed import ADMIN_EMAIL, seed
from gateway.ops.settings import Settings
from gateway.security.access import create_access_token

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = ROOT / "bench-results"

DASHBOARD_QUERY = """query Dashboard {
  overview { totalTasks completedTasks pendingTasks inProgressTasks overdueTasks dueTodayTasks
             completionRate priorityDistribution { high medium low }
             statusDistribution { todo inProgress done } }
  trends(period: DAY) { period from to points { date tasksCreated tasksCompleted tasksDue
                                               tasksCompletedOnTime completionRate
                                               productivityScore } }
  productivity { from to score tasksCompleted currentStreak longestStreak daysGoalMet
                 leadTimeHours cycleTimeHours onTimeRate mostProductiveWeekday
                 mostProductiveHour }
}"""
# The overview alone, every field: the uncached figure the issue compares with the bare endpoint
# and with the peers (bench/peers/).
OVERVIEW_QUERY = """query Overview {
  overview { totalTasks completedTasks pendingTasks inProgressTasks overdueTasks dueTodayTasks
             completionRate priorityDistribution { high medium low }
             statusDistribution { todo inProgress done } }
}"""
ADMIN_QUERY = """query Admin {
  users(first: 100) { edges { node { id overview { totalTasks completedTasks pendingTasks
    inProgressTasks overdueTasks dueTodayTasks completionRate
    priorityDistribution { high medium low } statusDistribution { todo inProgress done } } } } }
}"""
CREATE_MUTATION = """mutation Create { createTask(input: {title: "bench task", priority: HIGH}) {
  id status } }"""
COMPLETE_MUTATION = """mutation Complete($id: ID!) { updateTask(id: $id, input: {status: DONE}) {
  id status } }"""

# What BENCH_ONLY can choose: the aggregation jobs, the wrk scenarios, the live subscriptions.
HTTP_GROUPS = ("dashboard", "admin", "tracing", "mix")
SCENARIO_GROUPS = ("jobs", *HTTP_GROUPS, "live")

# Each GraphQL scenario and the baseline it is compared with.
BASELINES = {
    "dashboard warm": "baseline redis dashboard",
    "dashboard cold": "baseline sql dashboard",
    "overview cold": "baseline sql overview",
    postgraphile.SCENARIO: "baseline sql overview",
    "admin warm": "baseline redis admin",
    "admin cold": "baseline sql admin",
    "mutation mix": "baseline sql dashboard",
    **TRACING_BASELINES,
}


@dataclass
class Config:
    users: int
    sizes: list[int]
    tasks: int
    days: int
    duration: int
    concurrency: list[int]
    sample: int
    reseed: bool
    profile: bool
    quick: bool
    out: Path
    workers: int = 1          # BENCH_WORKERS: uvicorn processes of the API
    replica: bool = False     # BENCH_REPLICA=1: analytics reads from a streaming replica
    tracing: bool = True      # BENCH_TRACING=0: no tracing scenarios
    live_enabled: bool = True  # BENCH_LIVE=0: no live subscription scenarios
    only: frozenset[str] = frozenset()  # BENCH_ONLY: these scenario groups (SCENARIO_GROUPS)
    live: LiveConfig = field(default_factory=LiveConfig)
    peers: frozenset[str] = frozenset()  # BENCH_PEERS: peers measured beside the gateway (PEERS)

    @property
    def busy(self) -> int:
        """The concurrency of the scenarios measured at one level only (tracing, the mutation
        mix, the profiles): the lowest of 16 or more (c=16 by default, the level of the issues'
        figures), else the highest."""
        return min((c for c in self.concurrency if c >= 16), default=max(self.concurrency))

    def wants(self, group: str) -> bool:
        """Whether the scenario group runs: in BENCH_ONLY (when set) and not switched off."""
        if self.only and group not in self.only:
            return False
        return {"tracing": self.tracing, "live": self.live_enabled}.get(group, True)

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Config:
        quick = env.get("BENCH_QUICK", "") not in ("", "0", "false")
        users = int(env.get("BENCH_USERS", "1000" if quick else "10000"))
        default_sizes = f"{users}" if quick else f"1000,{users}"
        sizes = sorted({int(s) for s in env.get("BENCH_SIZES", default_sizes).split(",") if s})
        if env.get("BENCH_LARGE", "") not in ("", "0", "false"):
            sizes = sorted({*sizes, 100_000})
        if users not in sizes:
            sizes = sorted({*sizes, users})
        stamp = datetime.now(UTC).strftime("%Y-%m-%d")
        out = Path(env.get("BENCH_OUT") or RESULTS_DIR / f"{stamp}{'-quick' if quick else ''}.json")
        return cls(
            users=users, sizes=sizes, tasks=int(env.get("BENCH_TASKS", "200")),
            days=int(env.get("BENCH_DAYS", "365")),
            duration=int(env.get("BENCH_DURATION", "3" if quick else "8")),
            concurrency=[int(c) for c in env.get("BENCH_CONCURRENCY",
                                                 "1,8" if quick else "1,16,64").split(",")],
            sample=int(env.get("BENCH_SAMPLE", "200" if quick else "500")),
            reseed=env.get("BENCH_RESEED", "") not in ("", "0", "false"),
            profile=env.get("BENCH_PROFILE", "") not in ("", "0", "false"),
            quick=quick, out=out, workers=int(env.get("BENCH_WORKERS", "1")),
            replica=env.get("BENCH_REPLICA", "") not in ("", "0", "false"),
            tracing=env.get("BENCH_TRACING", "1") not in ("0", "false", "no"),
            live_enabled=env.get("BENCH_LIVE", "1") not in ("0", "false", "no"),
            only=scenario_groups(env.get("BENCH_ONLY", "")),
            live=LiveConfig.from_env(env, quick),
            peers=peer_names(env.get("BENCH_PEERS", "")))


def _named(text: str, known: Sequence[str], variable: str, what: str) -> frozenset[str]:
    """The comma-separated names of `text`, each one of `known`; empty: none given."""
    names = frozenset(n.strip() for n in text.split(",") if n.strip())
    unknown = names - set(known)
    if unknown:
        raise SystemExit(f"{variable}: unknown {', '.join(sorted(unknown))}; the {what} are "
                         f"{', '.join(known)}")
    return names


def scenario_groups(text: str) -> frozenset[str]:
    """BENCH_ONLY's groups ("live", "dashboard,admin", ...); empty: all of them."""
    return _named(text, SCENARIO_GROUPS, "BENCH_ONLY", "groups")


def peer_names(text: str) -> frozenset[str]:
    """BENCH_PEERS's peers ("postgraphile"); empty: none."""
    return _named(text, PEERS, "BENCH_PEERS", "peers")


# --- processes (bench/processes.py) -------------------------------------------------------------


@dataclass
class Processes:
    """Everything this run started, stopped in reverse order whatever happens."""

    servers: list[Server] = field(default_factory=list)
    redis: RedisServer | None = None
    stop_embedded: list[Any] = field(default_factory=list)
    replica_url: str | None = None  # the streaming replica's server URL (BENCH_REPLICA=1)

    def stop_servers(self) -> None:
        for server in reversed(self.servers):
            stop_process(server.process)
        self.servers.clear()

    def stop_all(self) -> None:
        self.stop_servers()
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        for server in reversed(self.stop_embedded):
            server.stop()
        self.stop_embedded.clear()


def _proc_stats() -> Iterator[tuple[int, int, int, int]]:
    """(pid, parent pid, process group, clock ticks) of every process now; the ticks are its
    user+sys time and that of its children that ended (so that a PostgreSQL backend that exits
    during a run still counts, in its postmaster)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # After the command name in parentheses: state ppid pgrp ... utime (12th), stime,
        # cutime, cstime.
        fields = text.rpartition(")")[2].split()
        yield (int(entry.name), int(fields[1]), int(fields[2]),
               sum(int(value) for value in fields[11:15]))


def cpu_seconds(group: int | None = None, postmasters: Sequence[int] = ()) -> float | None:
    """User+sys CPU seconds so far of the processes of process group `group` (a server started in
    a session of its own, with its workers), or of `postmasters` and their children (PostgreSQL's
    backends). None when /proc cannot be read. A process that ended meanwhile counts in its
    parent when that is one of them (a backend in its postmaster), and not at all otherwise."""
    try:
        stats = list(_proc_stats())
    except (OSError, IndexError, ValueError):
        return None
    ticks = sum(t for pid, ppid, pgrp, t in stats
                if (group is not None and pgrp == group)
                or pid in postmasters or ppid in postmasters)
    return ticks / os.sysconf("SC_CLK_TCK")


def postmaster_pids(procs: Processes) -> list[int]:
    """The postmasters of the clusters this run started (their `postmaster.pid`); none when the
    database is someone else's (DATABASE_URL)."""
    pids = []
    for server in procs.stop_embedded:
        pgdata = getattr(server, "pgdata", None)
        if pgdata is None:
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            pids.append(int((Path(pgdata) / "postmaster.pid").read_text().split()[0]))
    return pids


def ensure_wrk() -> str:
    """The wrk binary; installed from Debian's packages when missing and we are root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("wrk is missing: apt-get install -y wrk")
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False,
                       stdin=subprocess.DEVNULL, timeout=300)
        found = shutil.which("wrk")
        if found:
            return found
        subprocess.run(["apt-get", "update", "-qq"], check=False, timeout=300)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False,
                       stdin=subprocess.DEVNULL, timeout=300)
        found = shutil.which("wrk")
        if found:
            return found
    raise SystemExit("make bench needs wrk (Debian/Ubuntu: apt-get install wrk; macOS: brew "
                     "install wrk)")


def run_wrk(wrk: str, url: str, mode: str, data_dir: Path, concurrency: int,
            duration: int) -> dict[str, Any]:
    """One bounded wrk run; the figures of its BENCH_JSON line."""
    argv = [wrk, "-t1", f"-c{concurrency}", f"-d{duration}s", "--timeout", "10s",
            "-s", str(BENCH_DIR / "wrk.lua"), url, "--", mode, str(data_dir)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60,
                         stdin=subprocess.DEVNULL, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            return parse_wrk(json.loads(line.removeprefix("BENCH_JSON ")))
    raise RuntimeError(f"wrk gave no result (exit {out.returncode}): {out.stderr[-2000:]}")


# --- database -------------------------------------------------------------------------------------


def with_database(url: str, name: str) -> str:
    base, _, _ = normalize_dsn(url).rpartition("/")
    return f"{base}/{name}"


def seed_marker(cfg: Config, users: int) -> str:
    return (f"bench-seed users={users} tasks={cfg.tasks} days={cfg.days} "
            f"date={datetime.now(UTC).date().isoformat()}")


async def prepare_database(server_url: str, users: int, cfg: Config) -> tuple[str, Job | None]:
    """The database of one dataset, migrated and seeded. A database seeded today with the same
    arguments is reused (the seed is relative to now, so an older one is seeded again)."""
    name = f"gateway_bench_{users}"
    dsn = with_database(server_url, name)
    admin = await asyncpg.connect(with_database(server_url, "postgres"))
    try:
        comment = await admin.fetchval(
            "select shobj_description(oid, 'pg_database') from pg_database where datname = $1",
            name)
        if comment == seed_marker(cfg, users) and not cfg.reseed:
            await migrate(dsn)
            log(f"{name}: reusing the data seeded today")
            return dsn, None
        await admin.execute(f'drop database if exists "{name}" with (force)')
        await admin.execute(f'create database "{name}"')
    finally:
        await admin.close()
    await migrate(dsn)
    log(f"{name}: seeding {users} users x {cfg.tasks} tasks over {cfg.days} days")
    conn = await asyncpg.connect(dsn)
    try:
        result = await seed(conn, users=users, days=cfg.days, tasks_per_user=cfg.tasks)
        await conn.execute(f"comment on database \"{name}\" is '{seed_marker(cfg, users)}'")
    finally:
        await conn.close()
    log(f"{name}: seeded {result.tasks:,} tasks and {result.events:,} events "
        f"in {result.seconds:.1f} s")
    return dsn, Job("seed", users, round(result.seconds, 2), result.tasks + result.events)


# What asyncpg's pool sends when a connection goes back to the pool (Connection.reset): one round
# trip, but four statements in pg_stat_statements. Counted apart from the queries.
POOL_RESET_STATEMENTS = ("SELECT pg_advisory_unlock_all()", "CLOSE ALL", "UNLISTEN *",
                         "RESET ALL")


async def statement_counts(conn: asyncpg.Connection) -> tuple[int, int] | None:
    """(all statements, statements other than the pool's reset) executed in this database so far
    (pg_stat_statements, top level), this harness's own look-ups excluded."""
    try:
        row = await conn.fetchrow("""
            select coalesce(sum(calls), 0) as total,
                   coalesce(sum(calls) filter (where not (btrim(query) = any($1::text[]))), 0)
                       as queries
            from pg_stat_statements
            where dbid = (select oid from pg_database where datname = current_database())
              and query not ilike '%pg_stat_statements%'""", list(POOL_RESET_STATEMENTS))
    except asyncpg.PostgresError:
        return None
    return int(row["total"]), int(row["queries"])


async def aggregation_jobs(dsn: str, users: int, settings: Settings) -> list[Job]:
    """The nightly one-day aggregation and a 365-day backfill, from an empty rollup, on a pool
    made as the worker makes its own. A job that fails is reported, and the run goes on."""
    names = ("aggregate one day", "backfill 365 days")
    try:
        from workers.aggregation import aggregate_closed_days, aggregate_range
    except ImportError as exc:
        return [Job(name, users, 0, 0, f"workers.aggregation not importable ({exc})")
                for name in names]
    from gateway.data.db import create_pool

    options: dict[str, Any] = {}
    with contextlib.suppress(ImportError):
        from workers.settings import worker_pool_options

        options = worker_pool_options(settings)
    pool = await create_pool(settings, dsn, min_size=1, max_size=4, **options)
    jobs: list[Job] = []
    try:
        await pool.execute("truncate daily_analytics, rollup_coverage")
        today = datetime.now(UTC).date()
        work = (lambda: aggregate_closed_days(pool),
                lambda: aggregate_range(pool, today - timedelta(days=365), None))
        for name, job in zip(names, work, strict=True):
            started = time.perf_counter()
            try:
                rows = await job()
            except Exception as exc:  # reported in the results; the HTTP scenarios still run
                seconds = time.perf_counter() - started
                jobs.append(Job(name, users, round(seconds, 2), 0,
                                f"failed after {seconds:.0f} s: {type(exc).__name__}: {exc}"))
                log(f"{name}: {jobs[-1].skipped}")
                continue
            jobs.append(Job(name, users, round(time.perf_counter() - started, 2), rows))
            log(f"{name}: {rows:,} rows in {jobs[-1].seconds:.1f} s")
        await pool.execute("vacuum (analyze) daily_analytics")
        await pool.execute("vacuum (analyze) rollup_coverage")
        return jobs
    finally:
        await pool.close()


# --- what the schema offers -----------------------------------------------------------------------


def schema_fields() -> dict[str, set[str]]:
    """Field names of Query, Mutation and User in the code's schema (production servers refuse
    introspection, so it is read here)."""
    from schema.schema import schema

    fields: dict[str, set[str]] = {}
    for type_name in ("Query", "Mutation", "User", "Subscription"):
        graphql_type = schema._schema.type_map.get(type_name)
        fields[type_name] = set(getattr(graphql_type, "fields", {}) or {})
    return fields


def missing_for(scenario: str, fields: dict[str, set[str]], live_field: str = "dashboard"
                ) -> str | None:
    needs = {
        "dashboard": [("Query", "overview"), ("Query", "trends"), ("Query", "productivity")],
        "admin": [("Query", "users"), ("User", "overview")],
        "mix": [("Query", "overview"), ("Query", "trends"), ("Query", "productivity"),
                ("Mutation", "createTask"), ("Mutation", "updateTask")],
        "live": [("Subscription", live_field)],
        "overview": [("Query", "overview")],
    }[scenario]
    missing = [f"{t}.{f}" for t, f in needs if f not in fields.get(t, set())]
    return f"schema has no {', '.join(missing)}" if missing else None


# --- recording the SQL of one request -------------------------------------------------------------


@contextlib.contextmanager
def recording_statements() -> Iterator[list[tuple[str, tuple[Any, ...], bool]]]:
    """Record (sql, args, returns rows) of every statement asyncpg runs in this process."""
    recorded: list[tuple[str, tuple[Any, ...], bool]] = []
    cls = asyncpg.connection.Connection
    original_execute = cls._execute
    original_plain = cls.execute

    async def _execute(self: Any, query: str, args: Any, limit: int, timeout: Any,  # noqa: ASYNC109
                       **kwargs: Any) -> Any:
        recorded.append((query, tuple(args), not kwargs.get("return_status", False)))
        return await original_execute(self, query, args, limit, timeout, **kwargs)

    async def execute(self: Any, query: str, *args: Any,
                      timeout: Any = None) -> Any:  # noqa: ASYNC109
        # Not the pool's reset on release: the baseline's own pool does that once anyway.
        if not args and not query.lstrip().startswith(POOL_RESET_STATEMENTS[0]):
            recorded.append((query, (), False))
        return await original_plain(self, query, *args, timeout=timeout)

    cls._execute = _execute
    cls.execute = execute
    try:
        yield recorded
    finally:
        cls._execute = original_execute
        cls.execute = original_plain


async def record_sql(settings: Settings, requests: dict[str, tuple[uuid.UUID, str, str]]
                     ) -> dict[str, dict[str, Any]]:
    """For each named request (user, token, body): the SQL one uncached GraphQL request runs,
    recorded in this process through the real application."""
    from gateway.http.app import create_app

    app = create_app(replace(settings, enable_query_cache=False))
    recorded: dict[str, dict[str, Any]] = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            for name, (user, token, body) in requests.items():
                headers = {"authorization": f"Bearer {token}",
                           "content-type": "application/json"}
                await client.post("/graphql", content=body, headers=headers)  # connections
                with recording_statements() as statements:
                    response = await client.post("/graphql", content=body, headers=headers)
                if response.status_code != 200 or "errors" in response.json():
                    raise RuntimeError(f"{name}: {response.text[:500]}")
                recorded[name] = {"user": user, "statements": list(statements)}
                log(f"recorded {len(statements)} SQL statements of one {name} request")
    return recorded


# --- one dataset ----------------------------------------------------------------------------------


def bench_environment(dsn: str, redis_url: str, secret: str, workers: int = 1,
                      read_dsn: str | None = None) -> dict[str, str]:
    """The API's production-like configuration for the run: tracing off, whatever OTEL_*
    variables the caller has (the tracing scenarios set their own, traced_environment)."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("BENCH_", "OTEL_"))}
    env.update({
        "OTEL_TRACES_EXPORTER": "none",
        "APP_ENV": "production",
        "HOST": "127.0.0.1",
        "WORKERS": str(workers),
        "DATABASE_URL": dsn,
        "DATABASE_READ_URL": read_dsn or "",
        "REDIS_URL": redis_url,
        "JWT_SECRET_KEY": secret,
        "JWT_ACCESS_TOKEN_EXPIRE_MINUTES": "240",
        "LOG_LEVEL": "WARNING",
        "RATE_LIMIT_ENABLED": "false",
        "ENABLE_QUERY_CACHE": "true",
        # Long enough that no cached figure expires in the middle of a run.
        "CACHE_TTL_OVERVIEW": "3600",
        "CACHE_TTL_TRENDS": "3600",
        "CACHE_TTL_PRODUCTIVITY": "3600",
    })
    return env


def write_load_files(directory: Path, tokens: list[str], body: str,
                     tasks: list[str] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lines = [f"{t} {tasks[i] if tasks else ''}".rstrip() for i, t in enumerate(tokens)]
    (directory / "tokens.txt").write_text("\n".join(lines) + "\n")
    (directory / "read.json").write_text(body)
    return directory


def gql_body(query: str, variables: dict[str, Any] | None = None) -> str:
    return json.dumps({"query": query, "variables": variables or {}})


async def warm_and_store(url: str, redis: Any, name: str, tokens: dict[uuid.UUID, str],
                         body: str, concurrency: int = 8) -> int:
    """Ask the caching API once per user (filling its cache) and store each answer in Redis for
    the bare endpoint. Returns the number of answers with errors."""
    errors = 0
    queue = list(tokens.items())

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while queue:
            user, token = queue.pop()
            response = await client.post(url, content=body, headers={
                "authorization": f"Bearer {token}", "content-type": "application/json"})
            if response.status_code != 200 or b'"errors"' in response.content:
                errors += 1
            await redis.set(redis_key(name, user), response.content, ex=7200)

    async with httpx.AsyncClient(timeout=60) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return errors


@contextlib.contextmanager
def profiling(server: Server, seconds: int, label: str, cfg: Config) -> Iterator[None]:
    """py-spy on the server while the block runs (BENCH_PROFILE=1); its hot spots are printed
    and written beside the results."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        log("BENCH_PROFILE: py-spy is not installed (pip install py-spy); not profiling")
        yield
        return
    raw = cfg.out.with_name(f"{cfg.out.stem}-profile-{label}.txt")
    process = subprocess.Popen([py_spy, "record", "--pid", str(server.process.pid), "--duration",
                                str(seconds), "--format", "raw", "--nonblocking", "-o",
                                str(raw.with_suffix(".raw"))], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        try:
            process.wait(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            process.kill()
    summary = hot_spots(raw.with_suffix(".raw"))
    raw.write_text(summary + "\n")
    log(f"profile of {label} (self time by line; full stacks in {raw.with_suffix('.raw')}):\n"
        + summary)


def hot_spots(raw_path: Path, top: int = 25) -> str:
    """Self and total samples per `file:line` from py-spy's collapsed stacks."""
    if not raw_path.exists():
        return "(no profile)"
    self_counts: dict[str, int] = {}
    total_counts: dict[str, int] = {}
    total = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        self_counts[frames[-1]] = self_counts.get(frames[-1], 0) + count
        for frame in set(frames):
            total_counts[frame] = total_counts.get(frame, 0) + count
    if not total:
        return "(no samples)"
    lines = [f"{total} samples; top self time:"]
    for frame, count in sorted(self_counts.items(), key=lambda x: -x[1])[:top]:
        lines.append(f"  {100 * count / total:5.1f}%  {frame}")
    lines.append("top inclusive time (project code):")
    ours = [(f, c) for f, c in total_counts.items()
            if any(p in f for p in ("gateway/", "loaders/", "resolvers/", "schema/"))]
    for frame, count in sorted(ours, key=lambda x: -x[1])[:top]:
        lines.append(f"  {100 * count / total:5.1f}%  {frame}")
    return "\n".join(lines)


async def bench_dataset(users: int, dsn: str, redis_url: str, cfg: Config, wrk: str,
                        procs: Processes, workdir: Path, report: Report, main: bool) -> None:
    """Every scenario of one dataset that BENCH_ONLY leaves in: aggregation, the HTTP scenarios,
    then (main dataset) the live subscriptions, with the HTTP scenarios' servers stopped."""
    secret = secrets.token_urlsafe(48)
    read_dsn = with_database(procs.replica_url, dsn.rpartition("/")[2]) \
        if procs.replica_url else None
    env = bench_environment(dsn, redis_url, secret, cfg.workers, read_dsn)
    settings = Settings.load(environ=env, env_file=None)
    if cfg.wants("jobs"):
        report.jobs.extend(await aggregation_jobs(dsn, users, settings))
    if any(cfg.wants(group) for group in HTTP_GROUPS):
        await bench_http(users, dsn, redis_url, cfg, wrk, procs, workdir, report, main, env,
                         settings)
    if main and cfg.wants("live"):
        missing = missing_for("live", schema_fields(), cfg.live.field)
        if missing:
            for scenario in (LIVE_LATENCY, LIVE_IDLE):
                report.runs.append(Run(scenario, users, 0, skipped=missing, kind="live"))
            log(f"live scenarios: skipped ({missing})")
        else:
            await bench_live(users, dsn, redis_url, env, cfg.live, report,
                             lambda user: create_access_token(settings, user, "user"))


async def bench_http(users: int, dsn: str, redis_url: str, cfg: Config, wrk: str,
                     procs: Processes, workdir: Path, report: Report, main: bool,
                     env: dict[str, str], settings: Settings) -> None:
    """The HTTP scenarios of one dataset: wrk against the API and the bare baselines."""
    conn = await asyncpg.connect(dsn)
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_url)
    try:
        with contextlib.suppress(asyncpg.PostgresError):
            await conn.execute("create extension if not exists pg_stat_statements")
        sample = [r["id"] for r in await conn.fetch(
            "select id from users where role = 'user' order by md5(id::text) limit $1",
            cfg.sample)]
        admin_id = await conn.fetchval("select id from users where lower(email) = $1",
                                       ADMIN_EMAIL)
        open_tasks = {r["user_id"]: str(r["id"]) for r in await conn.fetch("""
            select distinct on (user_id) user_id, id from tasks
            where user_id = any($1::uuid[]) and status <> 'done' and deleted = false
            order by user_id, created_at desc""", sample)}
        tokens = {u: create_access_token(settings, u, "user") for u in sample}
        admin_token = create_access_token(settings, admin_id, "admin")
        fields = schema_fields()
        skip = {name: missing_for(name, fields)
                for name in ("dashboard", "admin", "mix", "overview")}
        dashboard_body, admin_body = gql_body(DASHBOARD_QUERY), gql_body(ADMIN_QUERY)
        dash_dir = write_load_files(workdir / f"dash-{users}", list(tokens.values()),
                                    dashboard_body)
        admin_dir = write_load_files(workdir / f"admin-{users}", [admin_token], admin_body)
        mix_dir = write_load_files(workdir / f"mix-{users}", list(tokens.values()),
                                   dashboard_body, [open_tasks.get(u, "") for u in tokens])
        (mix_dir / "create.json").write_text(gql_body(CREATE_MUTATION))
        (mix_dir / "complete.json").write_text(gql_body(COMPLETE_MUTATION, {"id": "__TASK__"}))
        overview_body = gql_body(OVERVIEW_QUERY)
        overview_dir = write_load_files(workdir / f"overview-{users}", list(tokens.values()),
                                        overview_body)
        # The peers get the same callers' tokens with their own equivalent query.
        peer_dir = write_load_files(workdir / f"peer-{users}", list(tokens.values()),
                                    postgraphile.BODY)

        to_record = {}
        if not skip["dashboard"]:
            to_record["dashboard"] = (sample[0], tokens[sample[0]], dashboard_body)
        if not skip["admin"] and main:
            to_record["admin"] = (admin_id, admin_token, admin_body)
        if not skip["overview"] and cfg.wants("dashboard"):
            to_record["overview"] = (sample[0], tokens[sample[0]], overview_body)
        recorded = await record_sql(settings, to_record) if to_record else {}
        statements_file = workdir / f"statements-{users}.pkl"
        statements_file.write_bytes(pickle.dumps(recorded))

        serve = ["-m", "gateway", "serve"]
        api_warm = start_server(f"api-warm-{users}", serve, env)
        api_cold = start_server(f"api-cold-{users}", serve,
                                {**env, "ENABLE_QUERY_CACHE": "false"})
        baseline = start_server(f"baseline-{users}", [
            "-m", "uvicorn", "bench.baseline:create_app", "--factory", "--host",
            "127.0.0.1", "--port", "{port}", "--log-level", "warning", "--no-access-log"],
            {**env, "BENCH_STATEMENTS": str(statements_file)})
        procs.servers += [api_warm, api_cold, baseline]
        for server in (api_warm, api_cold):
            wait_healthy(server, "/health")
        wait_healthy(baseline, "/nothing")
        peer, peer_skip = await start_peer(cfg, users, dsn, conn, settings, tokens, procs,
                                           report, main, skip["overview"])
        postmasters = postmaster_pids(procs)

        async def measure(scenario: str, server: Server, path: str, mode: str,
                          data_dir: Path, concurrency: int, kind: str = "graphql",
                          duration: int | None = None) -> Run | None:
            duration = duration or cfg.duration
            before = await statement_counts(conn)
            cpu_before = cpu_seconds(group=server.process.pid)
            pg_before = cpu_seconds(postmasters=postmasters) if postmasters else None
            label = f"{scenario.replace(' ', '-')}-{users}-c{concurrency}"
            profile = (cfg.profile and main and concurrency == cfg.busy
                       and scenario in ("dashboard cold", "dashboard warm", "overview cold",
                                       "admin warm"))
            try:
                with (profiling(server, duration, label, cfg) if profile
                      else contextlib.nullcontext()):
                    figures = await asyncio.to_thread(run_wrk, wrk, server.url + path, mode,
                                                      data_dir, concurrency, duration)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                reason = f"failed: {str(exc)[:200]}"
                if server.process.poll() is not None:
                    reason += f" ({server.name} exited; see its log)"
                report.runs.append(Run(scenario, users, concurrency, skipped=reason, kind=kind))
                log(f"{scenario} c={concurrency}: {reason}")
                return None
            cpu_after = cpu_seconds(group=server.process.pid)
            pg_after = cpu_seconds(postmasters=postmasters) if postmasters else None
            after = await statement_counts(conn)
            per_request = queries = cpu_ms = pg_cpu_ms = None
            if before is not None and after is not None and figures["requests"]:
                per_request = round((after[0] - before[0]) / figures["requests"], 2)
                queries = round((after[1] - before[1]) / figures["requests"], 2)
            if cpu_before is not None and cpu_after is not None and figures["requests"]:
                # 0.1 µs: a cached request is about 0.1 ms, and tracing's cost a few µs of it.
                cpu_ms = round((cpu_after - cpu_before) * 1000 / figures["requests"], 4)
            if pg_before is not None and pg_after is not None and figures["requests"]:
                pg_cpu_ms = round((pg_after - pg_before) * 1000 / figures["requests"], 3)
            run = Run(scenario, users, concurrency, statements_per_request=per_request,
                      queries_per_request=queries, peak_rss_mib=peak_rss_mib(server.process.pid),
                      kind=kind, cpu_ms_per_request=cpu_ms, pg_cpu_ms_per_request=pg_cpu_ms,
                      **figures)
            report.runs.append(run)
            log(f"{scenario:<26} users={users:<6} c={concurrency:<3} {run.rps:8.1f} req/s  "
                f"p50 {run.p50_ms} ms  p95 {run.p95_ms} ms  errors {run.errors}  "
                f"SQL/req {per_request} ({queries} without pool resets)")
            return run

        async def side_by_side(concurrency: int,
                               *entries: tuple[str, Server, str, str, Path, str]) -> None:
            """Each scenario (scenario, server, path, mode, data dir, kind) beside the others,
            in two rounds of half the duration, A B .. then .. B A: a load on the machine that
            rises or falls during the measurement weighs alike on each, so that their ratios
            (a scenario to its baseline, to the peer) are not the drift between two moments."""
            half = max(1, cfg.duration // 2)
            parts: dict[str, list[Run]] = {entry[0]: [] for entry in entries}
            for number in range(2):
                for scenario, server, path, mode, data_dir, kind in (
                        entries if number == 0 else entries[::-1]):
                    await measure(scenario, server, path, mode, data_dir, concurrency, kind,
                                  duration=half)
                    parts[scenario].append(report.runs.pop())  # measured or skipped
            for scenario, *_ in entries:
                report.runs.append(merge_runs(parts[scenario], scenario))

        def skipped(scenario: str, reason: str) -> None:
            log(f"{scenario}: skipped ({reason})")
            for c in cfg.concurrency:
                report.runs.append(Run(scenario, users, c, skipped=reason))

        if not cfg.wants("dashboard"):
            pass
        elif skip["dashboard"]:
            for scenario in ("dashboard warm", "dashboard cold"):
                skipped(scenario, skip["dashboard"])
        else:
            errors = await warm_and_store(api_warm.url + "/graphql", redis, "dashboard", tokens,
                                          dashboard_body)
            log(f"warmed the cache for {len(tokens)} users ({errors} answers with errors)")
            for c in cfg.concurrency:
                await side_by_side(
                    c, ("baseline redis dashboard", baseline, "/redis/dashboard", "read",
                        dash_dir, "baseline"),
                    ("dashboard warm", api_warm, "/graphql", "read", dash_dir, "graphql"))
            for c in cfg.concurrency:
                await side_by_side(
                    c, ("baseline sql dashboard", baseline, "/sql/dashboard", "read",
                        dash_dir, "baseline"),
                    ("dashboard cold", api_cold, "/graphql", "read", dash_dir, "graphql"))
        if not cfg.wants("dashboard"):
            pass
        elif skip["overview"]:
            for scenario in ("baseline sql overview", "overview cold"):
                skipped(scenario, skip["overview"])
        else:
            # The uncached overview beside the floor of its statements and the peers' equivalent,
            # at each concurrency in turn. Each server first gets the same short warm-up (the
            # peer's JIT, the pools' connections), unmeasured.
            warmup = max(1, cfg.duration // 4)
            warm_targets = [(api_cold, overview_dir), (baseline, overview_dir)]
            if peer is not None:
                warm_targets.append((peer, peer_dir))
            for server, data_dir in warm_targets:
                path = "/sql/overview" if server is baseline else "/graphql"
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    await asyncio.to_thread(run_wrk, wrk, server.url + path, "read", data_dir,
                                            max(cfg.concurrency), warmup)
            for c in cfg.concurrency:
                overview_entries = [
                    ("baseline sql overview", baseline, "/sql/overview", "read", overview_dir,
                     "baseline"),
                    ("overview cold", api_cold, "/graphql", "read", overview_dir, "graphql")]
                if peer is not None:
                    overview_entries.append((postgraphile.SCENARIO, peer, "/graphql", "read",
                                             peer_dir, "peer"))
                await side_by_side(c, *overview_entries)
                if peer is None and peer_skip is not None:
                    report.runs.append(Run(postgraphile.SCENARIO, users, c, skipped=peer_skip,
                                           kind="peer"))
        if peer is not None:  # measured: its pool need not stay open through the rest
            stop_process(peer.process)
        if main and cfg.wants("admin"):
            if skip["admin"]:
                for scenario in ("admin warm", "admin cold"):
                    skipped(scenario, skip["admin"])
            else:
                await warm_and_store(api_warm.url + "/graphql", redis, "admin",
                                     {admin_id: admin_token}, admin_body, concurrency=1)
                for c in cfg.concurrency:
                    await side_by_side(
                        c, ("baseline redis admin", baseline, "/redis/admin", "read",
                            admin_dir, "baseline"),
                        ("admin warm", api_warm, "/graphql", "read", admin_dir, "graphql"))
                for c in cfg.concurrency:
                    await side_by_side(
                        c, ("baseline sql admin", baseline, "/sql/admin", "read", admin_dir,
                            "baseline"),
                        ("admin cold", api_cold, "/graphql", "read", admin_dir, "graphql"))
        if main:
            # Before the mix, whose writes invalidate some of the cached dashboards.
            if not skip["dashboard"]:
                if cfg.wants("tracing"):
                    await bench_tracing(users, env, cfg, wrk, procs, report, dash_dir, measure)
                elif not cfg.tracing:
                    report.notes.append("tracing scenarios left out (BENCH_TRACING=0)")
            if not cfg.wants("mix"):
                pass
            elif skip["mix"]:
                skipped("mutation mix", skip["mix"])
            else:
                await measure("mutation mix", api_warm, "/graphql", "mix", mix_dir, cfg.busy)
                # What the mix created is removed again, so that a reused database stays close
                # to what was seeded (the tasks it completed stay completed).
                await conn.execute("delete from tasks where title = 'bench task'")
    finally:
        procs.stop_servers()
        await redis.aclose()
        await conn.close()


async def start_peer(cfg: Config, users: int, dsn: str, conn: asyncpg.Connection,
                     settings: Settings, tokens: dict[uuid.UUID, str], procs: Processes,
                     report: Report, main: bool, missing: str | None
                     ) -> tuple[Server | None, str | None]:
    """The PostGraphile peer (BENCH_PEERS=postgraphile) installed, started on this dataset's
    database and verified, for the main dataset's dashboard group: (its server, None), or (None,
    why it is not measured), or (None, None) when it was not asked for here. Its failure is
    reported loudly, and the rest of the run goes on."""
    if postgraphile.NAME not in cfg.peers or not main or not cfg.wants("dashboard"):
        return None, None
    if missing:
        reason = f"nothing to compare with: {missing}"
    else:
        try:
            server, info = await postgraphile.launch(dsn, conn, settings, tokens, procs.servers,
                                                     users)
        except postgraphile.PeerError as exc:
            reason = f"FAILED: {exc}"
        else:
            report.peers[postgraphile.NAME] = info
            return server, None
    log(f"PEER {postgraphile.NAME} NOT MEASURED, {reason}")
    report.notes.append(f"peer {postgraphile.NAME} not measured, {reason}")
    report.peers[postgraphile.NAME] = {"skipped": reason}
    return None, reason[:300]


# --- tracing --------------------------------------------------------------------------------------

# How long the spans of the warm-up may take to reach the sink: the SDK's batch processor exports
# every 5 s (OTEL_BSP_SCHEDULE_DELAY) or every 512 spans.
SPAN_WAIT_SECONDS = 12.0
# Rounds of each tracing scenario (an even number: A B C, C B A, ...), each of BENCH_DURATION
# seconds. Four, not two: two rounds of the uncached dashboard moved its cost by ±10 points from
# one run to the next (its untraced rounds alone differed by 24 % at 22:23).
TRACING_ROUNDS = 4


def traced_environment(env: dict[str, str], sink_url: str, prefix: str,
                       level: TracingLevel) -> dict[str, str]:
    """The API's environment with tracing on at `level`, exporting OTLP/HTTP (protobuf) to the
    bench's sink under its own path prefix, so that the sink counts each server apart."""
    endpoint = f"{sink_url}/{prefix}"
    traced = {**env,
              "OTEL_TRACES_EXPORTER": "otlp",
              "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
              "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
              "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{endpoint}/v1/traces",
              "OTEL_SERVICE_NAME": "analytics-gateway-bench",
              "OTEL_TRACES_SAMPLER": level.sampler}
    if level.sampler_arg:
        traced["OTEL_TRACES_SAMPLER_ARG"] = level.sampler_arg
    return traced


def sink_stats(sink: Server) -> dict[str, dict[str, int]]:
    """What the OTLP sink received so far, by path prefix ({} when it does not answer)."""
    try:
        stats: dict[str, dict[str, int]] = httpx.get(sink.url + "/stats", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return {}
    return stats


async def bench_tracing(users: int, env: dict[str, str], cfg: Config, wrk: str,
                        procs: Processes, report: Report, dash_dir: Path,
                        measure: Callable[..., Awaitable[Run | None]]) -> None:
    """The cached and uncached dashboard at `cfg.busy` concurrency with tracing on at each of
    TRACING_LEVELS, each next to the same scenario without tracing, measured just before.

    Every server here is started anew and warmed up the same way, the untraced one included
    (`OTEL_TRACES_EXPORTER=none`), so that tracing is the only difference between them. The
    traced APIs export over OTLP/HTTP to `bench.otlp_sink`, started here on 127.0.0.1, which
    reads and counts every batch. A traced server whose spans never reach the sink (tracing not
    built yet, or the exporter not installed) has its scenarios skipped with a note, and so has
    anything else that fails here, so that the rest of the run goes on."""
    concurrency = cfg.busy
    off = "off"
    started: list[Server] = []
    # (mode, level label or "off") -> its server; the sink's path prefix of each traced one.
    servers: dict[tuple[str, str], Server] = {}
    prefixes: dict[tuple[str, str], str] = {}
    requests: dict[tuple[str, str], int] = {}
    unavailable: dict[tuple[str, str], str] = {}

    def skip_all(reason: str) -> None:
        report.notes.append(f"tracing scenarios skipped: {reason}")
        log(f"tracing scenarios skipped: {reason}")
        for mode, _ in TRACING_MODES:
            for level in TRACING_LEVELS:
                report.runs.append(Run(tracing_scenario(mode, level.label), users, concurrency,
                                       skipped="tracing unavailable (see notes)"))

    sink = start_server(f"otlp-sink-{users}", ["-m", "bench.otlp_sink"], env)
    procs.servers.append(sink)
    started.append(sink)
    try:
        try:
            wait_healthy(sink, "/stats")
        except RuntimeError as exc:
            skip_all(f"the OTLP sink did not start: {str(exc)[:300]}")
            return
        for mode, _ in TRACING_MODES:
            for level in (None, *TRACING_LEVELS):
                key = (mode, level.label if level else off)
                if level is None:
                    server_env = dict(env)
                else:
                    prefixes[key] = f"{mode}-{level.label.rstrip('%')}"
                    server_env = traced_environment(env, sink.url, prefixes[key], level)
                if mode == "cold":
                    server_env["ENABLE_QUERY_CACHE"] = "false"
                server = start_server(f"api-{mode}-tracing-{key[1].rstrip('%')}-{users}",
                                      ["-m", "gateway", "serve"], server_env)
                procs.servers.append(server)
                started.append(server)
                servers[key] = server
        for key, server in servers.items():
            try:
                wait_healthy(server, "/health")
            except RuntimeError as exc:
                unavailable[key] = f"the API did not start: {str(exc)[:300]}"
        # The same short warm-up for each server (connections, caches, the exporter's session),
        # which is also the test that the spans arrive.
        warmup = max(1, cfg.duration // 4)
        for key, server in servers.items():
            if key in unavailable:
                continue
            try:
                figures = await asyncio.to_thread(run_wrk, wrk, server.url + "/graphql", "read",
                                                  dash_dir, concurrency, warmup)
                requests[key] = int(figures["requests"])
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                unavailable[key] = f"warm-up failed: {str(exc)[:300]}"
        deadline = time.monotonic() + SPAN_WAIT_SECONDS
        while True:
            stats = await asyncio.to_thread(sink_stats, sink)
            waiting = [key for key in prefixes if key not in unavailable
                       and not stats.get(prefixes[key], {}).get("spans")]
            if not waiting or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        for key in waiting:
            log(f"tracing {key[1]} ({key[0]}): no span in {SPAN_WAIT_SECONDS:.0f} s after "
                f"{requests.get(key, 0)} requests; log: {servers[key].log_path}")
            unavailable[key] = ("no span reached the OTLP sink after the warm-up: tracing "
                                "unavailable in this build")
        for mode, _ in TRACING_MODES:  # without its untraced reference a mode cannot be judged
            if (mode, off) in unavailable:
                for key in prefixes:
                    if key[0] == mode:
                        unavailable.setdefault(
                            key, f"its untraced reference failed: {unavailable[(mode, off)]}")
        for key, reason in unavailable.items():
            log(f"tracing {key[1]} ({key[0]}): {reason}")
        if all(key in unavailable for key in prefixes):
            logs = BENCH_DATA_DIR.relative_to(ROOT) / "logs" / f"api-*-tracing-*-{users}.log"
            skip_all("; ".join(sorted({unavailable[key] for key in prefixes}))
                     + f" (servers' logs: {logs})")
            return

        # Rounds in the order A B C, then C B A, ...: a load on the machine that grows or falls
        # steadily during the measurement weighs the same on every scenario.
        for mode, _ in TRACING_MODES:
            keys = [(mode, off), *((mode, level.label) for level in TRACING_LEVELS)]
            if all(key in unavailable for key in keys[1:]):
                for key in keys[1:]:
                    report.runs.append(Run(tracing_scenario(*key), users, concurrency,
                                           skipped=unavailable[key]))
                continue
            available = [key for key in keys if key not in unavailable]
            parts: dict[tuple[str, str], list[Run]] = {key: [] for key in available}
            for number in range(TRACING_ROUNDS):
                for key in available if number % 2 == 0 else available[::-1]:
                    await measure(f"{tracing_scenario(*key)} (round {number + 1})",
                                  servers[key], "/graphql", "read", dash_dir, concurrency)
                    part = report.runs.pop()  # measured or skipped, merged below
                    parts[key].append(part)
                    requests[key] = requests.get(key, 0) + part.requests
            for key in keys:
                if key in unavailable:
                    report.runs.append(Run(tracing_scenario(*key), users, concurrency,
                                           skipped=unavailable[key]))
                    continue
                report.runs.append(merge_runs(parts[key], tracing_scenario(*key)))
                report.tracing.setdefault("rounds", {})[tracing_scenario(*key)] = [
                    None if part.skipped else part.rps for part in parts[key]]

        # Stop the servers (the exporters flush on shutdown), then count what arrived.
        for server in started[1:]:
            stop_process(server.process)
        received: dict[str, dict[str, int]] = {}
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            stats = await asyncio.to_thread(sink_stats, sink)
            if stats == received:
                break
            received = stats
            await asyncio.sleep(1.5)
        exports = []
        for key, prefix in prefixes.items():
            got, sent = received.get(prefix, {}), requests.get(key, 0)
            exports.append({
                "scenario": tracing_scenario(*key), "sampling": key[1], "requests": sent,
                "spans": got.get("spans", 0), "bytes": got.get("bytes", 0),
                "exports": got.get("exports", 0), "rejected": got.get("bad", 0),
                "spans_per_request": round(got.get("spans", 0) / sent, 2) if sent else None,
                "bytes_per_request": round(got.get("bytes", 0) / sent) if sent else None})
        report.tracing["sink"] = ("bench.otlp_sink on 127.0.0.1: OTLP/HTTP protobuf, every "
                                  "batch read and its spans counted, then dropped")
        report.tracing["exports"] = exports
        for entry in exports:
            if entry["requests"]:
                report.notes.append(
                    f"{entry['scenario']}: the OTLP sink received {entry['spans']:,} spans in "
                    f"{entry['exports']:,} exports ({entry['bytes']:,} bytes) for "
                    f"{entry['requests']:,} requests (warm-up included): "
                    f"{entry['spans_per_request']} spans, {entry['bytes_per_request']} bytes "
                    f"per request")
    finally:
        for server in reversed(started):
            stop_process(server.process)
            if server in procs.servers:
                procs.servers.remove(server)


# --- the run --------------------------------------------------------------------------------------


def start_private_postgres(procs: Processes) -> str:
    """A PostgreSQL cluster of the benchmark's own under `.data/bench/` (embedded binaries, the
    same server settings as `make run`'s, pg_stat_statements preloaded), on a free port.

    Its own cluster, not a database on the development one: the test suites of other sessions
    create databases there all day, and their statements would evict ours from
    pg_stat_statements and compete for its buffers.
    """
    server = PostgresServer(BENCH_DATA_DIR / "postgres", port=free_port())
    if server.is_running():  # left over from an interrupted run
        server.stop()
    log(f"starting the benchmark's PostgreSQL on 127.0.0.1:{server.port} ({server.data_dir})")
    server.start()
    procs.stop_embedded.append(server)
    return server.url("postgres")


def start_private_replica(procs: Processes) -> str:
    """A streaming hot standby of the benchmark's cluster (`pg_basebackup -R`), made anew on each
    run under `.data/bench/replica`, for `BENCH_REPLICA=1`: analytics reads then go to it
    (`DATABASE_READ_URL`), writes and auth to the primary."""
    primary = procs.stop_embedded[-1]
    replica = PostgresServer(BENCH_DATA_DIR / "replica", port=free_port())
    if replica.is_running():
        replica.stop()
    shutil.rmtree(replica.data_dir, ignore_errors=True)
    replica.data_dir.mkdir(parents=True)
    _give_to(replica.data_dir, _run_as())
    log(f"copying the cluster to a streaming replica on 127.0.0.1:{replica.port}")
    result = primary._run("pg_basebackup", "-R", "-X", "stream", "-c", "fast",
                          "-D", str(replica.pgdata.resolve()), "-h", "127.0.0.1",
                          "-p", str(primary.port), "-U", "postgres", timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"pg_basebackup failed; see {primary.data_dir / 'commands.log'}")
    replica.start()
    procs.stop_embedded.append(replica)
    return replica.url("postgres")


def machine_info(server_version: str | None) -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=ROOT, check=False).stdout.strip()
    changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                             capture_output=True, text=True, cwd=ROOT, check=False).stdout
    if changed.strip():
        commit += " with uncommitted changes"
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True,
                                 check=False).stdout.split("\n")[0].strip() \
        if shutil.which("wrk") else "wrk not installed"
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory": memory,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(), "postgresql": server_version,
        "load_generator": wrk_version, "commit": commit,
        "loadavg_start": os.getloadavg(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }


async def run(cfg: Config) -> Report:
    wrk = ensure_wrk() if any(cfg.wants(group) for group in HTTP_GROUPS) else "wrk"
    if cfg.peers and not cfg.wants("dashboard"):
        log("BENCH_PEERS: the peers are measured in the dashboard group, which this run leaves "
            "out")
    procs = Processes()
    report = Report(machine={}, config={
        "users": cfg.users, "sizes": cfg.sizes, "tasks_per_user": cfg.tasks, "days": cfg.days,
        "duration_s": cfg.duration, "concurrency": cfg.concurrency, "sample_users": cfg.sample,
        "quick": cfg.quick, "only": sorted(cfg.only) or "all", "peers": sorted(cfg.peers),
        "api": f"python -m gateway serve (uvicorn, {cfg.workers} worker(s), APP_ENV=production, "
               f"LOG_LEVEL=WARNING, rate limits off"
               f"{', analytics reads on a streaming replica' if cfg.replica else ''})",
        "load": "wrk -t1, closed loop, random user per request"})
    try:
        server_url = os.environ.get("DATABASE_URL")
        if not server_url:
            server_url = start_private_postgres(procs)
            if cfg.replica:
                procs.replica_url = start_private_replica(procs)
        elif cfg.replica:
            raise SystemExit("BENCH_REPLICA=1 makes a replica of the benchmark's own cluster: "
                             "unset DATABASE_URL")
        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            procs.redis = RedisServer(Path(tempfile.mkdtemp(prefix="bench-redis-")),
                                      port=free_port())
            procs.redis.start()
            redis_url = procs.redis.url()
        admin = await asyncpg.connect(with_database(server_url, "postgres"))
        try:
            version = await admin.fetchval("show server_version")
        finally:
            await admin.close()
        report.machine = machine_info(version)
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            for users in cfg.sizes:
                dsn, seeded = await prepare_database(server_url, users, cfg)
                if seeded:
                    report.jobs.append(seeded)
                await bench_dataset(users, dsn, redis_url, cfg, wrk, procs, Path(tmp), report,
                                    main=users == cfg.users)
    finally:
        procs.stop_all()
    report.machine["loadavg_end"] = os.getloadavg()
    apply_baselines(report.runs, BASELINES)
    apply_peers(report.runs, PEER_SCENARIOS)
    comparisons = peer_comparisons(report.runs, PEER_SCENARIOS)
    if comparisons:
        report.peers["comparisons"] = comparisons
    if any(r.scenario == "overview cold" and not r.skipped for r in report.runs):
        report.notes += cpu_notes(report.runs, ("baseline sql overview", "overview cold",
                                                *PEER_SCENARIOS.values()))
    report.targets = evaluate_targets(report.runs, report.jobs, cfg.users)
    if any(r.scenario in TRACING_BASELINES for r in report.runs):
        report.tracing["costs"] = tracing_costs(report.runs, cfg.users)
    return report


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--markdown"] and len(argv) == 2:  # a result file, as the docs show it
        print(render(Report.from_json(json.loads(Path(argv[1]).read_text())), markdown=True))
        return 0

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    cfg = Config.from_env(dict(os.environ))
    # One run at a time: two would share (and stop) the same cluster, and measure each other.
    BENCH_DATA_DIR.mkdir(parents=True, exist_ok=True)
    lock = (BENCH_DATA_DIR / "run.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("another `make bench` is running on this machine; try again when it has finished",
              file=sys.stderr)
        return 1
    log(f"datasets {cfg.sizes} (main {cfg.users}), {cfg.duration} s per run, "
        f"concurrency {cfg.concurrency}")
    started = time.monotonic()
    report = asyncio.run(run(cfg))
    report.config["wall_seconds"] = round(time.monotonic() - started)
    report.write(cfg.out)
    print()
    print(render(report))
    print(f"\nwritten to {cfg.out.relative_to(ROOT) if cfg.out.is_relative_to(ROOT) else cfg.out}"
          f" in {report.config['wall_seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
