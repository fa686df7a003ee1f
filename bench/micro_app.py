"""What tracing costs the whole application, in one process: `python -m bench.micro_app`.

The application as `create_app` builds it, twice in one process: with tracing
(`OTEL_TRACES_EXPORTER=otlp`, to a stand-in collector, `bench.otlp_sink`, started here as the
bench starts its servers) and without. Each runs its lifespan (pools, Redis, the account cache)
on the development services (`DATABASE_URL` / `REDIS_URL`, else the embedded ones, as `make run`
uses them, with their demo data), and both are driven over ASGI by 16 concurrent clients asking the
dashboard of random users, in alternating rounds; the figure is the least CPU per request of
each, and their difference.

`make bench`'s tracing scenarios measure the cost on the real server, and their req/s moves by
several points from one run to the next on a shared machine; this is the steady figure. It
differs from `bench.micro_tracing` (the HTTP edge alone) in what is around the span: each part of
a span costs here three to five times what a loop over the edge alone measures.

    python -m bench.micro_app                          # every request sampled, cached answers
    BENCH_APP_SAMPLING=0.1 python -m bench.micro_app   # 10 % (0: none sampled)
    BENCH_APP_CACHE=false python -m bench.micro_app    # the uncached dashboard
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from dataclasses import replace
from typing import Any

import orjson

from bench.processes import traced_children

CLIENTS = 16
REQUESTS = 10_000  # a round, for each application
ROUNDS = 9


async def _measure() -> None:
    import asyncpg

    from bench.run import DASHBOARD_QUERY
    from gateway.dev.asgi import post_graphql
    from gateway.http.app import create_app
    from gateway.ops import tracing
    from gateway.ops.runtime import tune_gc
    from gateway.ops.settings import Settings
    from gateway.security.access import create_access_token

    base = replace(Settings.load(), rate_limit_enabled=False,
                   enable_query_cache=os.environ.get("BENCH_APP_CACHE", "true") != "false")
    traced = replace(base, otel_traces_exporter="otlp")
    tracing.configure(traced)
    apps = {"untraced": create_app(replace(base, otel_traces_exporter="none")),
            "traced": create_app(traced)}
    connection = await asyncpg.connect(base.database_url)
    try:
        rows = await connection.fetch("select id, role from users where role = 'user'")
    finally:
        await connection.close()
    if not rows:
        raise SystemExit("no users: seed the development database first (make run does)")
    tokens = [create_access_token(base, row["id"], row["role"]) for row in rows]
    body = orjson.dumps({"query": DASHBOARD_QUERY})

    async def ask(app: Any, token: str) -> None:
        status, answer = await post_graphql(app, body, token)
        if status != 200:
            raise SystemExit(f"the dashboard answered {status}: {answer[:200]!r}")

    async def client(app: Any, count: int) -> None:
        for _ in range(count):
            await ask(app, random.choice(tokens))
            await asyncio.sleep(0)  # a turn of the loop, as a server's socket reads give

    best = dict.fromkeys(apps, float("inf"))
    async with apps["untraced"].router.lifespan_context(apps["untraced"]), \
            apps["traced"].router.lifespan_context(apps["traced"]):
        tune_gc()
        for round_ in range(ROUNDS):
            for name in (list(apps) if round_ % 2 == 0 else list(reversed(apps))):
                started = time.process_time()
                await asyncio.gather(*(client(apps[name], REQUESTS // CLIENTS)
                                       for _ in range(CLIENTS)))
                best[name] = min(best[name],
                                 (time.process_time() - started) / REQUESTS * 1e6)
    tracing.flush()
    off, on = best["untraced"], best["traced"]
    print(f"dashboard ({'cached' if base.enable_query_cache else 'uncached'}), sampling "
          f"{os.environ.get('OTEL_TRACES_SAMPLER_ARG')}: untraced {off:.1f} µs, traced {on:.1f} "
          f"µs, +{on - off:.1f} µs a request ({(on / off - 1) * 100:.1f} %)")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "measure":  # in the child, with the sink's address
        import uvloop

        uvloop.run(_measure())
        return
    from gateway.dev.services import resolve_services
    from gateway.ops.settings import Settings

    # The development services (DATABASE_URL / REDIS_URL, else the embedded ones, started here
    # if they are not running and stopped again at the end); their URLs go to the child.
    _, services = resolve_services(Settings.load())
    try:
        traced_children("bench.micro_app", [(["measure"],
                                             os.environ.get("BENCH_APP_SAMPLING", "1"))], "app")
    finally:
        services.stop_started()


if __name__ == "__main__":
    main()
