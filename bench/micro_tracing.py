"""What tracing costs the HTTP edge, in one process: `python -m bench.micro_tracing`.

The middleware stack of the API (gateway/http/app.py `middleware_stack`) around an endpoint that
answers at once, built twice in one process: without tracing and with it (the server span,
`EdgeMiddleware`), and driven alternately, 5,000 requests a round, 11 rounds; the figure is the
least CPU per request of each (the machine's other load only ever adds). The steadier figure
behind `make bench`'s tracing scenarios, whose req/s moves by several points from run to run on
a shared machine (docs/operations.md, "Tracing").

Two sampling levels, each in a process of its own (the tracer provider is process-wide):

- `0`: every request starts a new trace that is not sampled (`OTEL_TRACES_SAMPLER_ARG=0`);
- `1`: every request's span is recorded, encoded and sent by `LoopExport` to a stand-in
  collector (`bench.otlp_sink`, started here like the bench's servers, `bench.processes`) over
  OTLP/HTTP.

Prints one line per level: µs per request untraced, traced, and the difference.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import replace
from typing import Any

from bench.processes import traced_children

ROUNDS = 11
REQUESTS = 5000


async def _answer(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", b"300")]})
    await send({"type": "http.response.body", "body": b"x" * 300})


async def _measure() -> tuple[float, float]:
    """(untraced, traced) least CPU µs per request, in this process's tracing set-up."""
    from gateway.http.app import middleware_stack, wrapped
    from gateway.ops import tracing
    from gateway.ops.metrics import RequestMetrics
    from gateway.ops.runtime import tune_gc
    from gateway.ops.settings import Settings

    settings = replace(Settings.load(), rate_limit_enabled=False)
    tracing.configure(replace(settings, otel_traces_exporter="otlp"))
    apps = {traced: wrapped(_answer, middleware_stack(
        replace(settings, otel_traces_exporter="otlp" if traced else "none"),
        RequestMetrics(["/graphql"]))) for traced in (False, True)}
    tune_gc()
    scope = {"type": "http", "method": "POST", "path": "/graphql", "query_string": b"",
             "headers": [(b"host", b"localhost"), (b"content-type", b"application/json"),
                         (b"authorization", b"Bearer x")],
             "scheme": "http", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000)}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Any) -> None:
        return None

    best = {False: float("inf"), True: float("inf")}
    for _ in range(ROUNDS):
        for traced, app in apps.items():
            started = time.process_time()
            for _ in range(REQUESTS):
                await app(dict(scope, state={}), receive, send)
                await asyncio.sleep(0)  # a turn of the loop, as a server's socket reads give
            best[traced] = min(best[traced],
                               (time.process_time() - started) / REQUESTS * 1e6)
    tracing.flush()
    return best[False], best[True]


def _child(level: str) -> None:
    import uvloop

    off, on = uvloop.run(_measure())
    print(f"sampling {level:>3}: untraced {off:6.2f} µs, traced {on:6.2f} µs, "
          f"+{on - off:5.2f} µs a request")


def main() -> None:
    if len(sys.argv) > 1:  # one sampling level, in this process
        _child(sys.argv[1])
        return
    traced_children("bench.micro_tracing", [([level], level) for level in ("0", "1")], "micro")


if __name__ == "__main__":
    main()
