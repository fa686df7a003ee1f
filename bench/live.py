"""`make bench`, live subscriptions (issue 16): how fast a write reaches a live dashboard, and what
holding idle subscriptions costs a process.

- **push latency** (`live push latency`): two API processes (`python -m gateway serve`, one
  uvicorn worker each) on the same PostgreSQL and Redis; `BENCH_LIVE_SUBSCRIPTIONS` users (1,000;
  100 quick) each follow their own figures with one subscription, alternately on either process.
  Every user then gets one change per second, at a phase of their own, for `BENCH_LIVE_SECONDS`:
  a task inserted with SQL (its trigger raises the user's `data_version`, as a mutation's
  transaction does) and, once committed, the change message published on the fan-out channel
  (`analytics:live:v1`, made by gateway/live/fanout.py as a mutation's `tasks_changed` makes it).
  Writes go straight to the database rather than through the API (on connections that say their
  changes are announced, as the API's do): 1,000 HTTP mutations a second
  would take the two cores from the processes being measured. The delay of a write is from the
  moment its commit returned (before the publication) to the arrival, at the subscriber, of the
  first push whose `totalTasks` includes it.
- **idle subscriptions** (`live idle subscriptions`): one API process; `BENCH_LIVE_IDLE` WebSockets
  (10,000; 500 quick), each with one subscription of a user of its own (users repeat when the
  dataset has fewer), opened by several client processes; then the process's resident memory
  while it holds them (VmRSS, and its peak VmHWM).

The subscribers are separate processes (`python -m bench.live client SPEC`), asyncio with the
`websockets` client, speaking `graphql-transport-ws` as a browser's `graphql-ws` client does, with
the permessage-deflate offer browsers make (`BENCH_LIVE_DEFLATE=off`: none). Timestamps are
`time.monotonic()`, one clock for every process on Linux. `BENCH_LIVE_PARTS=idle` (or `latency`)
runs one scenario only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import resource
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.processes import (
    BENCH_DATA_DIR,
    ROOT,
    Server,
    log,
    peak_rss_mib,
    rss_mib,
    start_server,
    stop_process,
    wait_healthy,
)
from bench.report import LIVE_IDLE, LIVE_LATENCY, Report, Run
from domain.deltas import TaskChange, TaskFacts
from gateway.data.db import CHANGES_ANNOUNCED, keep_session
from gateway.live.fanout import CHANNEL, encode_change

PROTOCOL = "graphql-transport-ws"
PARTS = ("latency", "idle")  # the two scenarios, which BENCH_LIVE_PARTS may narrow
TASK_TITLE = "bench live task"  # what the writes insert, deleted again at the end
QUERIES = {
    "overview": """subscription Live { overview { totalTasks completedTasks pendingTasks
      overdueTasks completionRate } }""",
    "dashboard": """subscription Live { dashboard {
      overview { totalTasks completedTasks pendingTasks overdueTasks completionRate }
      trends(period: DAY) { period from to points { date tasksCreated tasksCompleted
                                                    productivityScore } }
      productivity { score currentStreak tasksCompleted } } }""",
}


@dataclass
class LiveConfig:
    """The live scenarios' settings (environment, see docs/performance.md)."""

    subscriptions: int = 1000   # BENCH_LIVE_SUBSCRIPTIONS: followed users in the latency run
    seconds: int = 20           # BENCH_LIVE_SECONDS: how long each user gets a change a second
    idle: int = 10_000          # BENCH_LIVE_IDLE: WebSockets held by one process
    field: str = "dashboard"    # BENCH_LIVE_FIELD: the subscription's root field
    deflate: bool = True        # BENCH_LIVE_DEFLATE=off: no permessage-deflate offer
    described: bool = True      # BENCH_LIVE_DESCRIBED=off: messages without the task change
    warmup: float = 2.0         # BENCH_LIVE_WARMUP: seconds of writes not judged (shown apart)
    clients: int = 4            # client processes opening the idle WebSockets
    parts: tuple[str, ...] = PARTS  # BENCH_LIVE_PARTS: "latency", "idle" or both (the default)

    @classmethod
    def from_env(cls, env: dict[str, str], quick: bool) -> LiveConfig:
        live_field = env.get("BENCH_LIVE_FIELD", "dashboard")
        if live_field not in QUERIES:
            raise SystemExit(f"BENCH_LIVE_FIELD: one of {', '.join(QUERIES)}, not {live_field!r}")
        parts = tuple(p.strip() for p in env.get("BENCH_LIVE_PARTS", ",".join(PARTS)).split(",")
                      if p.strip())
        if not parts or set(parts) - set(PARTS):
            raise SystemExit(f"BENCH_LIVE_PARTS: some of {', '.join(PARTS)}, not "
                             f"{env.get('BENCH_LIVE_PARTS')!r}")
        return cls(
            subscriptions=int(env.get("BENCH_LIVE_SUBSCRIPTIONS", "100" if quick else "1000")),
            seconds=int(env.get("BENCH_LIVE_SECONDS", "5" if quick else "20")),
            idle=int(env.get("BENCH_LIVE_IDLE", "500" if quick else "10000")),
            field=live_field,
            deflate=env.get("BENCH_LIVE_DEFLATE", "browser") not in ("off", "0", "false"),
            described=env.get("BENCH_LIVE_DESCRIBED", "on") not in ("off", "0", "false"),
            warmup=float(env.get("BENCH_LIVE_WARMUP", "1" if quick else "2")),
            clients=1 if quick else 4, parts=parts)


# --- the pure part: delays from writes and arrivals -----------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank q-quantile (0 < q <= 1) of the values; None for none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class Delays:
    """The delays of the writes that arrived, and the writes that never did."""

    seconds: list[float] = field(default_factory=list)
    written: list[float] = field(default_factory=list)  # each delay's write time, in order
    missing: int = 0
    early: int = 0  # pushes that included a write before its commit had returned (delay 0)

    def since(self, start: float) -> list[float]:
        """The delays of the writes made at `start` or later."""
        return [d for d, w in zip(self.seconds, self.written, strict=True) if w >= start]


def match_delays(writes: dict[str, list[float]],
                 arrivals: dict[str, list[tuple[float, int]]]) -> Delays:
    """Each write's delay: from its time to the arrival of the first push whose total includes it.

    `writes[user]` are the times of the user's writes in order (each adds one task);
    `arrivals[user]` the (time, totalTasks) of every push the user's subscriber received, the
    first being the figures sent on subscribe, before any write. Write k (from 1) is in a push
    whose total is at least the first total + k. Pushes are coalesced, so one push may carry
    several writes; a push may even carry a write whose commit had not yet returned to the writer
    (computed just after the commit): that delay counts as 0.
    """
    delays = Delays()
    for user, times in writes.items():
        pushes = arrivals.get(user, [])
        if not pushes:
            delays.missing += len(times)
            continue
        first_total = pushes[0][1]
        position = 1
        for k, written in enumerate(times, start=1):
            while position < len(pushes) and pushes[position][1] < first_total + k:
                position += 1
            if position == len(pushes):
                delays.missing += len(times) - k + 1
                break
            delay = pushes[position][0] - written
            if delay < 0:
                delays.early += 1
            delays.seconds.append(max(0.0, delay))
            delays.written.append(written)
    return delays


def total_tasks(data: dict[str, Any], live_field: str) -> int | None:
    """totalTasks from a push of either subscription."""
    figures = data.get(live_field) or {}
    if live_field == "dashboard":
        figures = figures.get("overview") or {}
    value = figures.get("totalTasks")
    return value if isinstance(value, int) else None


# --- the subscribers: `python -m bench.live client SPEC` ------------------------------------------


def raise_open_files_limit() -> int:
    """The soft limit of open files raised to the hard one (a WebSocket is a descriptor)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def run_client(spec: dict[str, Any]) -> dict[str, Any]:
    """Open every subscription of the spec (`subs`: [url, token, user]), print READY with how
    many opened, hold them until a line arrives on stdin, then close them and return what was
    seen: every push's (time, totalTasks) by user, failures, server-side closes."""
    from websockets.asyncio.client import ClientConnection, connect
    from websockets.exceptions import ConnectionClosed
    from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

    raise_open_files_limit()
    live_field: str = spec["field"]
    query = QUERIES[live_field]
    gate = asyncio.Semaphore(spec["open_concurrency"])
    # What a browser offers (Chrome, Firefox): deflate, the client's window left to the server.
    extensions = [ClientPerMessageDeflateFactory(client_max_window_bits=True)] \
        if spec["deflate"] else None
    arrivals: dict[str, list[tuple[float, int]]] = {}
    failures: list[str] = []  # subscriptions that could not be opened
    ended: list[str] = []     # subscriptions the server ended (error, complete)
    closes: dict[str, int] = {}
    sockets: list[ClientConnection] = []
    stopping = False
    pushes = subscribed = 0
    all_settled = asyncio.Event()

    def settled() -> None:
        if subscribed + len(failures) == len(spec["subs"]):
            all_settled.set()

    def seen(user: str, message: dict[str, Any]) -> None:
        nonlocal pushes
        pushes += 1
        total = total_tasks((message.get("payload") or {}).get("data") or {}, live_field)
        if total is not None:
            arrivals.setdefault(user, []).append((time.monotonic(), total))

    async def next_event(socket: ClientConnection) -> dict[str, Any]:
        while True:
            message = json.loads(await asyncio.wait_for(socket.recv(), 120))
            if message.get("type") == "ping":
                await socket.send('{"type":"pong"}')
                continue
            return dict(message)

    async def follow(url: str, token: str, user: str) -> None:
        nonlocal subscribed
        async with gate:
            try:
                socket = await connect(url, subprotocols=[PROTOCOL],  # type: ignore[list-item]
                                       compression=None, extensions=extensions,
                                       open_timeout=120, ping_interval=None, max_queue=64)
                sockets.append(socket)
                await socket.send(json.dumps({"type": "connection_init",
                                              "payload": {"Authorization": f"Bearer {token}"}}))
                ack = await next_event(socket)
                if ack.get("type") != "connection_ack":
                    raise RuntimeError(f"connection_init answered {ack}")
                await socket.send(json.dumps({"id": "1", "type": "subscribe",
                                              "payload": {"query": query}}))
                first = await next_event(socket)
                if first.get("type") != "next" or (first.get("payload") or {}).get("errors"):
                    raise RuntimeError(f"subscribe answered {json.dumps(first)[:300]}")
                seen(user, first)
                subscribed += 1
            except Exception as exc:  # counted and reported; the others go on
                failures.append(f"{type(exc).__name__}: {str(exc)[:300]}")
                return
            finally:
                settled()
        try:
            async for raw in socket:
                message = json.loads(raw)
                kind = message.get("type")
                if kind == "next":
                    seen(user, message)
                elif kind == "ping":
                    await socket.send('{"type":"pong"}')
                elif kind in ("error", "complete"):
                    ended.append(f"{kind}: {json.dumps(message)[:300]}")
        except ConnectionClosed as exc:
            if not stopping:
                reason = f"{exc.rcvd.code} {exc.rcvd.reason}" if exc.rcvd else "no close frame"
                closes[reason] = closes.get(reason, 0) + 1

    started = time.monotonic()
    tasks = [asyncio.create_task(follow(*sub)) for sub in spec["subs"]]
    if tasks:
        await all_settled.wait()  # each one subscribed or failed
    print("READY " + json.dumps({"subscribed": subscribed, "failed": len(failures),
                                 "failures": failures[:3],
                                 "seconds": round(time.monotonic() - started, 2)}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    stopping = True
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(s.close() for s in sockets),
                                              return_exceptions=True), 30)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for message in ended:
        closes[message[:120]] = closes.get(message[:120], 0) + 1
    return {"arrivals": arrivals, "failures": failures[:20], "failed": len(failures),
            "closes": closes, "pushes": pushes}


def client_main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    result = asyncio.run(run_client(spec))
    Path(spec["out"]).write_text(json.dumps(result))
    print("DONE", flush=True)
    return 0


# --- driving the subscribers ----------------------------------------------------------------------


@dataclass
class Client:
    """One subscriber process and the file it writes its result to."""

    process: asyncio.subprocess.Process
    out: Path
    ready: dict[str, Any] = field(default_factory=dict)


async def start_clients(specs: list[dict[str, Any]], workdir: Path, name: str) -> list[Client]:
    """One subscriber process per spec, each in a process group of its own."""
    clients = []
    for number, spec in enumerate(specs):
        out = workdir / f"{name}-{number}.json"
        spec_path = workdir / f"{name}-{number}-spec.json"
        spec_path.write_text(json.dumps({**spec, "out": str(out)}))
        log_file = (BENCH_DATA_DIR / "logs" / f"{name}-client-{number}.log").open("wb")
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.live", "client", str(spec_path), cwd=ROOT,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log_file,
            start_new_session=True)
        clients.append(Client(process, out))
    return clients


async def wait_ready(clients: list[Client], limit_s: float) -> None:
    """Until every subscriber printed READY (with its counts)."""
    async def one(client: Client) -> None:
        assert client.process.stdout is not None
        while True:
            line = await client.process.stdout.readline()
            if not line:
                raise RuntimeError("a subscriber process exited before opening its WebSockets; "
                                   f"see {BENCH_DATA_DIR / 'logs'}")
            if line.startswith(b"READY "):
                client.ready = json.loads(line[6:])
                return

    await asyncio.wait_for(asyncio.gather(*(one(c) for c in clients)), limit_s)


async def stop_clients(clients: list[Client], limit_s: float = 90) -> list[dict[str, Any]]:
    """Tell each subscriber to close its WebSockets; their results."""
    results = []
    for client in clients:
        if client.process.stdin is not None and client.process.returncode is None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                client.process.stdin.write(b"STOP\n")
                await client.process.stdin.drain()
    for client in clients:
        try:
            await asyncio.wait_for(client.process.wait(), limit_s)
        except TimeoutError:
            kill_client(client)
        if client.out.exists():
            results.append(json.loads(client.out.read_text()))
    return results


def ready_failures(clients: list[Client], keep: int = 5) -> list[str]:
    """The first reasons subscriptions could not be opened, as the subscribers reported them."""
    return [reason for c in clients for reason in c.ready.get("failures", [])][:keep]


def kill_client(client: Client) -> None:
    if client.process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(client.process.pid, signal.SIGKILL)


def cpu_seconds(pid: int) -> float | None:
    """User and system CPU time the process has used so far (/proc/PID/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14 and 15)


def live_metrics(server: Server) -> dict[str, float]:
    """The analytics_live_* samples of the server's /metrics (summed over labels, but for the
    sources of the pushes' figures)."""
    try:
        text = httpx.get(server.url + "/metrics", timeout=10).text
    except httpx.HTTPError:
        return {}
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("analytics_live_"):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name == "analytics_live_figures_total":
                name = line.rsplit(" ", 1)[0]
            with contextlib.suppress(ValueError):
                samples[name] = samples.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return samples


# --- the scenarios --------------------------------------------------------------------------------


async def live_users(conn: asyncpg.Connection, count: int) -> list[uuid.UUID]:
    """`count` users of the dataset (role user, a fixed pseudo-random order), repeated if the
    dataset has fewer."""
    rows = await conn.fetch("select id from users where role = 'user' order by md5(id::text) "
                            "limit $1", count)
    users = [r["id"] for r in rows]
    if not users:
        raise RuntimeError("the dataset has no users")
    return [users[i % len(users)] for i in range(count)]


def live_server_env(env: dict[str, str]) -> dict[str, str]:
    """The API's bench environment with one uvicorn process (so that its pid is the server's)."""
    return {**env, "WORKERS": "1"}


def start_api(name: str, env: dict[str, str], servers: list[Server]) -> Server:
    server = start_server(name, ["-m", "gateway", "serve"], live_server_env(env))
    servers.append(server)
    wait_healthy(server, "/health")
    return server


def ws_url(server: Server) -> str:
    return f"ws://127.0.0.1:{server.port}/graphql"


async def _define_write(conn: asyncpg.Connection) -> None:
    """The writer's change, on each of its connections: a task inserted, and the data version
    its statement raised (the trigger runs at the end of the insert, before the select)."""
    await conn.execute("""
        create function pg_temp.bench_live_write(owner uuid, name text,
            out status text, out priority text, out due_date date, out created_at timestamptz,
            out completed_at timestamptz, out deleted boolean, out data_version bigint)
        language plpgsql as $$
        begin
            insert into tasks as t (user_id, title, priority) values (owner, name, 'high')
            returning t.status, t.priority, t.due_date, t.created_at, t.completed_at, t.deleted
            into status, priority, due_date, created_at, completed_at, deleted;
            select u.data_version into data_version from users u where u.id = owner;
        end $$""")


async def write_changes(dsn: str, redis_url: str, users: list[uuid.UUID], seconds: int,
                        described: bool = True) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """One change per user per second for `seconds`, each user at a phase of their own: insert a
    task, then publish the contract's message. Returns each user's commit times and the writer's
    own figures (achieved rate, lag behind the schedule)."""
    from redis.asyncio import Redis

    rng = random.Random(16)
    phases = {user: rng.random() for user in users}
    # Announced as the API announces its own writes (the change message below), so its
    # connections tell migration 0005's trigger not to NOTIFY, as the API's do. Released
    # without asyncpg's reset statements, as the API's are (gateway/data/db.py).
    pool = await asyncpg.create_pool(dsn, min_size=8, max_size=8, init=_define_write,
                                     reset=keep_session,
                                     server_settings={CHANGES_ANNOUNCED: "on"})
    redis = Redis.from_url(redis_url)
    writes: dict[str, list[float]] = {str(u): [] for u in users}
    lags: list[float] = []
    failures: list[str] = []
    gate = asyncio.Semaphore(32)

    async def write(user: uuid.UUID, due: float) -> None:
        async with gate:
            lags.append(time.monotonic() - due)
            try:
                # As a task mutation of the API does: the insert, then the data version it
                # raised, read in its transaction (`_define_write`: in one round trip, which
                # leaves the cores to the processes measured); the message describes the
                # change (domain/deltas.py), unless BENCH_LIVE_DESCRIBED=off.
                row = await pool.fetchrow("select * from pg_temp.bench_live_write($1, $2)",
                                          user, TASK_TITLE)
                writes[str(user)].append(time.monotonic())
                change = TaskChange(row["data_version"], None, TaskFacts.of_row(row))
                tasks = [(user, row["data_version"], change.encode())] if described else []
                await redis.publish(CHANNEL, encode_change([user], tasks=tasks))
            except (asyncpg.PostgresError, OSError) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

    schedule = sorted((second + phase, user) for second in range(seconds)
                      for user, phase in phases.items())
    pending: set[asyncio.Task[None]] = set()
    start = time.monotonic() + 0.5
    try:
        for offset, user in schedule:
            due = start + offset
            delay = due - time.monotonic()
            if delay > 0.002:
                await asyncio.sleep(delay)
            task = asyncio.create_task(write(user, due))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
        elapsed = time.monotonic() - start
    finally:
        await redis.aclose()
        await pool.close()
    made = sum(len(t) for t in writes.values())
    return writes, {"writes": made, "start": start, "rate_per_s": round(made / elapsed, 1),
                    "lag_p99_ms": round((percentile(lags, 0.99) or 0) * 1000, 1),
                    "failures": failures[:5], "failed": len(failures)}


def split(items: list[Any], parts: int) -> list[list[Any]]:
    return [items[i::parts] for i in range(parts) if items[i::parts]]


async def bench_latency(users_in_dataset: int, dsn: str, redis_url: str, env: dict[str, str],
                        tokens: dict[uuid.UUID, str], cfg: LiveConfig, workdir: Path,
                        report: Report) -> None:
    """The push latency scenario (module docstring)."""
    users = list(tokens)
    servers: list[Server] = []
    clients: list[Client] = []
    scenario = LIVE_LATENCY
    try:
        apis = [start_api(f"api-live-{name}-{users_in_dataset}", env, servers)
                for name in ("a", "b")]
        subs = [[ws_url(apis[i % 2]), tokens[user], str(user)] for i, user in enumerate(users)]
        specs = [{"subs": part, "field": cfg.field, "deflate": cfg.deflate,
                  "open_concurrency": 32} for part in split(subs, 2)]
        clients = await start_clients(specs, workdir, "live-latency")
        await wait_ready(clients, limit_s=600)
        subscribed = sum(c.ready.get("subscribed", 0) for c in clients)
        failed = sum(c.ready.get("failed", 0) for c in clients)
        log(f"{scenario}: {subscribed} subscriptions open on 2 processes ({failed} failed); "
            f"a change per user per second for {cfg.seconds} s")
        if not subscribed:
            raise RuntimeError(f"no subscription could be opened ({failed} failed); see the "
                               f"client logs in {BENCH_DATA_DIR / 'logs'}")
        load_before = os.getloadavg()[0]
        cpu_before = [cpu_seconds(api.process.pid) for api in apis]
        writes, writer = await write_changes(dsn, redis_url, users, cfg.seconds,
                                             cfg.described)
        await asyncio.sleep(2.0)  # the last pushes
        load = os.getloadavg()[0]
        cpu_after = [cpu_seconds(api.process.pid) for api in apis]
        api_cpu = sum(after - before for before, after in zip(cpu_before, cpu_after, strict=True)
                      if before is not None and after is not None)
        metrics = [live_metrics(api) for api in apis]
        rss = [peak_rss_mib(api.process.pid) for api in apis]
        results = await stop_clients(clients)
        arrivals: dict[str, list[tuple[float, int]]] = {}
        for result in results:
            arrivals.update({u: [(t, n) for t, n in a] for u, a in result["arrivals"].items()})
        delays = match_delays(writes, arrivals)
        closes = server_closes(results)
        # Judged on the steady state: the writes of the first BENCH_LIVE_WARMUP seconds are
        # each subscription's first changes, whose figures are computed from the database (the
        # pushes after them follow the changes: resolvers/live.py); shown apart.
        everything = [d * 1000 for d in delays.seconds]
        ms = [d * 1000 for d in delays.since(writer.pop("start") + cfg.warmup)]
        pushed = sum(r.get("pushes", 0) for r in results) - subscribed  # after the first ones

        def rounded(q: float, values: list[float] = ms) -> float | None:
            value = percentile(values, q)
            return None if value is None else round(value, 2)

        run = Run(scenario, users_in_dataset, subscribed, requests=len(ms),
                  seconds=float(cfg.seconds),
                  rps=round(len(ms) / max(1.0, cfg.seconds - cfg.warmup), 1),
                  p50_ms=rounded(0.5), p95_ms=rounded(0.95), p99_ms=rounded(0.99),
                  errors=delays.missing + failed + sum(closes.values()) + writer["failed"],
                  peak_rss_mib=max((r for r in rss if r is not None), default=None),
                  kind="live")
        report.runs.append(run)
        report.live["latency"] = {
            "field": cfg.field, "processes": 2, "subscriptions": subscribed,
            "subscribe_failures": failed,
            "failures": ready_failures(clients),
            "seconds": cfg.seconds,
            "changes": "SQL insert of a task (its trigger raises data_version) and a read of the "
                       f"version in its transaction, then a publish on {CHANNEL}"
                       + (" describing the change" if cfg.described else " (not described)")
                       + "; delay from the commit's return to the push's arrival",
            "described": cfg.described,
            "writer": writer, "delays": len(ms), "missing": delays.missing,
            "early": delays.early, "max_ms": rounded(1.0), "warmup_s": cfg.warmup,
            "with_warmup": {"delays": len(everything), "p50_ms": rounded(0.5, everything),
                            "p99_ms": rounded(0.99, everything),
                            "max_ms": rounded(1.0, everything)},
            "pushes": pushed, "server_closes": closes,
            "api_cpu_seconds": round(api_cpu, 2),
            "api_cpu_ms_per_push": round(api_cpu * 1000 / pushed, 2) if pushed else None,
            "peak_rss_mib": rss, "loadavg_1m": [load_before, load], "server_metrics": metrics,
            "deflate_offer": cfg.deflate}
        log(f"{scenario}: {len(ms)} delays after {cfg.warmup:g} s, p50 {run.p50_ms} ms, p99 "
            f"{run.p99_ms} ms, max {rounded(1.0)} ms (with the warm-up: p99 "
            f"{rounded(0.99, everything)} ms); {delays.missing} writes never pushed; writer "
            f"{writer['rate_per_s']}/s (lag p99 {writer['lag_p99_ms']} ms); {pushed} pushes, "
            f"API CPU {api_cpu:.1f} s; load {load:.2f}")
    except (RuntimeError, TimeoutError, OSError) as exc:
        report_failure(report, scenario, users_in_dataset, len(users), exc)
    finally:
        stop_all(clients, servers)
        with contextlib.suppress(asyncpg.PostgresError, OSError):
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute("delete from tasks where title = $1", TASK_TITLE)
            finally:
                await conn.close()


def server_closes(results: Sequence[dict[str, Any]]) -> dict[str, int]:
    """The server's closes seen by all client processes, summed by reason."""
    closes: dict[str, int] = {}
    for result in results:
        for reason, count in result["closes"].items():
            closes[reason] = closes.get(reason, 0) + count
    return closes


def report_failure(report: Report, scenario: str, users_in_dataset: int, asked: int,
                   exc: BaseException) -> None:
    """A live scenario that could not run to its end: recorded as skipped, with why."""
    reason = f"failed: {str(exc)[:300] or type(exc).__name__}"
    report.runs.append(Run(scenario, users_in_dataset, asked, skipped=reason, kind="live"))
    log(f"{scenario}: {reason}")


def stop_all(clients: Sequence[Client], servers: Sequence[Server]) -> None:
    """Stop a scenario's client processes, then its servers (last started first)."""
    for client in clients:
        kill_client(client)
    for server in reversed(servers):
        stop_process(server.process)


async def bench_idle(users_in_dataset: int, env: dict[str, str], tokens: list[tuple[str, str]],
                     cfg: LiveConfig, workdir: Path, report: Report) -> None:
    """The idle subscriptions scenario (module docstring). `tokens`: (user, token) per socket."""
    servers: list[Server] = []
    clients: list[Client] = []
    scenario = LIVE_IDLE
    try:
        api = start_api(f"api-live-idle-{users_in_dataset}", env, servers)
        before = rss_mib(api.process.pid)
        subs = [[ws_url(api), token, user] for user, token in tokens]
        specs = [{"subs": part, "field": cfg.field, "deflate": cfg.deflate,
                  "open_concurrency": 16} for part in split(subs, cfg.clients)]
        started = time.monotonic()
        clients = await start_clients(specs, workdir, "live-idle")
        await wait_ready(clients, limit_s=1200)
        opening = time.monotonic() - started
        subscribed = sum(c.ready.get("subscribed", 0) for c in clients)
        failed = sum(c.ready.get("failed", 0) for c in clients)
        await asyncio.sleep(5.0)  # settled: nothing in flight
        held = rss_mib(api.process.pid)
        peak = peak_rss_mib(api.process.pid)
        metrics = live_metrics(api)
        results = await stop_clients(clients)
        closes = server_closes(results)
        per_socket = (round((held - before) * 1024 / subscribed, 1)
                      if held is not None and before is not None and subscribed else None)
        report.runs.append(Run(scenario, users_in_dataset, len(tokens), requests=subscribed,
                               seconds=round(opening, 2),
                               rps=round(subscribed / opening, 1) if opening else 0.0,
                               errors=failed + sum(closes.values()), peak_rss_mib=peak,
                               kind="live"))
        report.live["idle"] = {
            "field": cfg.field, "asked": len(tokens), "subscribed": subscribed,
            "failed": failed, "failures": ready_failures(clients),
            "server_closes": closes, "rss_before_mib": before, "rss_held_mib": held,
            "peak_rss_mib": peak, "kib_per_subscription": per_socket,
            "open_seconds": round(opening, 1), "client_processes": len(specs),
            "server_metrics": metrics, "open_files_limit": raise_open_files_limit(),
            "deflate_offer": cfg.deflate}
        log(f"{scenario}: {subscribed} of {len(tokens)} held ({failed} failed) after "
            f"{opening:.0f} s; RSS {before} -> {held} MiB (peak {peak}), {per_socket} KiB each")
    except (RuntimeError, TimeoutError, OSError) as exc:
        report_failure(report, scenario, users_in_dataset, len(tokens), exc)
    finally:
        stop_all(clients, servers)


async def bench_live(users_in_dataset: int, dsn: str, redis_url: str, env: dict[str, str],
                     cfg: LiveConfig, report: Report,
                     make_token: Callable[[uuid.UUID], str]) -> None:
    """Both live scenarios on one dataset. `make_token(user_id)` makes a user's access token."""
    raise_open_files_limit()  # inherited by the servers started here
    conn = await asyncpg.connect(dsn)
    try:
        latency_users = await live_users(conn, cfg.subscriptions)
        idle_users = await live_users(conn, cfg.idle)
    finally:
        await conn.close()
    report.config["live"] = {"field": cfg.field, "subscriptions": cfg.subscriptions,
                             "seconds": cfg.seconds, "idle": cfg.idle,
                             "deflate_offer": cfg.deflate, "parts": list(cfg.parts)}
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        if "latency" in cfg.parts:
            tokens = {u: make_token(u) for u in dict.fromkeys(latency_users)}
            await bench_latency(users_in_dataset, dsn, redis_url, env, tokens, cfg, Path(tmp),
                                report)
        if "idle" in cfg.parts:
            cache = {u: make_token(u) for u in dict.fromkeys(idle_users)}
            await bench_idle(users_in_dataset, env, [(str(u), cache[u]) for u in idle_users],
                             cfg, Path(tmp), report)


if __name__ == "__main__":
    if sys.argv[1:2] == ["client"] and len(sys.argv) == 3:
        raise SystemExit(client_main(sys.argv[2]))
    raise SystemExit("usage: python -m bench.live client SPEC.json (started by `make bench`)")
