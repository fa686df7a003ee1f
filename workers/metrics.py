"""Prometheus metrics and the JSON log line of every job run.

Each job coroutine is wrapped by `instrumented`, which keeps the job's claim alive while it runs
(`workers.heartbeat`: a job whose worker died runs again within seconds), times it, counts it by
outcome, writes one JSON line to the `workers.jobs` logger and turns a transient database or
network failure into an `arq.Retry` with exponential back-off. The counters live in
prometheus-client's default registry; the worker process serves it on `PROMETHEUS_PORT`
(`start_metrics_server`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
from arq import Retry
from prometheus_client import Counter, Histogram, start_http_server
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.ops import tracing
from workers.heartbeat import job_heartbeat

RUN_LOGGER = "workers.jobs"  # the job-run lines (configured apart in the worker process)
log = logging.getLogger(RUN_LOGGER)

JOB_RUNS = Counter("analytics_job_runs_total", "arq job runs by job name and outcome "
                   "(success, retry, failure, cancelled)", ["job", "status"])
JOB_DURATION = Histogram("analytics_job_duration_seconds", "wall time of one arq job run",
                         ["job"], buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800))

# Failures worth another try: the database restarting or refusing connections for a moment, a
# dropped connection, or Redis going away. Anything else (a bug, bad data) fails at once.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,       # incl. ConnectionDoesNotExistError (dropped mid-query)
    asyncpg.exceptions.AdminShutdownError,  # the server shut down, or the backend was terminated
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,  # the server is starting up or shutting down
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    ConnectionError,                       # refused or reset sockets (OSError subclasses)
    RedisConnectionError,
    RedisTimeoutError,
)
RETRY_BASE_S = 2.0    # first back-off; doubles on every try
RETRY_MAX_S = 300.0   # the longest wait between two tries
MAX_TRIES = 8         # 2 + 4 + ... + 128 s: rides out a database restart or fail-over of ~4 min

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def backoff_seconds(job_try: int, base: float = RETRY_BASE_S) -> float:
    """The wait before try `job_try + 1`: base, 2×base, 4×base, ... capped at `RETRY_MAX_S`."""
    return float(min(RETRY_MAX_S, base * 2 ** max(0, job_try - 1)))


def log_run(job: str, status: str, duration: float, ctx: dict[str, Any],
            counts: dict[str, Any] | None = None, error: str | None = None) -> None:
    """Count one run and write its JSON line."""
    JOB_RUNS.labels(job=job, status=status).inc()
    JOB_DURATION.labels(job=job).observe(duration)
    record: dict[str, Any] = {
        "event": "job_run", "job": job, "status": status, "duration_s": round(duration, 3),
        "job_id": ctx.get("job_id"), "try": ctx.get("job_try"), "counts": counts or {},
    }
    if error:
        record["error"] = error
    level = logging.WARNING if status in ("failure", "retry") else logging.INFO
    log.log(level, json.dumps(record, default=str))


def instrumented(job: str) -> Callable[[F], F]:
    """Keep the job's claim alive, time, count and log it; retry transient failures with
    exponential back-off.

    The job returns a dict of counts (rows written, users warmed, ...), which goes both into the
    log line and into arq's stored result (what `jobs status` prints).

    The enqueuer's trace context arrives as the keyword argument `_trace` (gateway/ops/tracing.py,
    `enqueueing`); it is taken off before the job function runs, and in a worker with tracing on
    (`ctx["traced"]`, set at start-up) the run is a CONSUMER span named after the job that
    continues that trace, or starts one when the job has none (cron, an older release's job).
    """
    def decorate(func: F) -> F:
        async def attempt(ctx: dict[str, Any], args: tuple[Any, ...],
                          kwargs: dict[str, Any]) -> Any:
            started = time.perf_counter()
            try:
                async with job_heartbeat(ctx):
                    result = await func(ctx, *args, **kwargs)
            except Retry:
                log_run(job, "retry", time.perf_counter() - started, ctx)
                raise
            except TRANSIENT_ERRORS as exc:
                job_try = int(ctx.get("job_try") or 1)
                delay = backoff_seconds(job_try, float(ctx.get("retry_base_s", RETRY_BASE_S)))
                log_run(job, "retry", time.perf_counter() - started, ctx,
                        error=f"{type(exc).__name__}: {exc}; retrying in {delay:g} s")
                raise Retry(defer=delay) from exc
            except asyncio.CancelledError:
                # A timeout (JOB_TIMEOUT), an abort, or the worker shutting down.
                log_run(job, "cancelled", time.perf_counter() - started, ctx)
                raise
            except Exception as exc:
                log_run(job, "failure", time.perf_counter() - started, ctx,
                        error=f"{type(exc).__name__}: {exc}")
                raise
            log_run(job, "success", time.perf_counter() - started, ctx,
                    counts=result if isinstance(result, dict) else None)
            return result

        @functools.wraps(func)
        async def run(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            carrier = kwargs.pop(tracing.JOB_TRACE_KWARG, None)
            if not ctx.get("traced"):
                return await attempt(ctx, args, kwargs)
            attributes = {"messaging.message.id": str(ctx.get("job_id")),
                          "arq.job.try": int(ctx.get("job_try") or 1)}
            with tracing.job_span(job, carrier, attributes, expected=(Retry,)) as span:
                outcome = "failure"
                try:
                    result = await attempt(ctx, args, kwargs)
                    outcome = "success"
                    return result
                except Retry:  # runs again later: not a failure of this run
                    outcome = "retry"
                    raise
                except asyncio.CancelledError:
                    outcome = "cancelled"
                    raise
                finally:
                    span.set_attribute("arq.job.outcome", outcome)

        return run  # type: ignore[return-value]

    return decorate


def start_metrics_server(port: int | None) -> bool:
    """Serve the worker's metrics on `port` (PROMETHEUS_PORT) when one is set.

    The worker is its own process, so the API's `/metrics` cannot show its counters. A port in use
    (another worker on the same machine) is logged and skipped rather than stopping the worker.
    """
    if not port:
        return False
    try:
        start_http_server(port)
    except OSError as exc:
        log.warning("worker metrics not served on port %s: %s", port, exc)
        return False
    return True
