"""The arq worker's configuration, built from the same settings module as the API.

arq reads a worker's options from the attributes of a plain class. `build_worker_settings` makes
that class from a `Settings`: the Redis connection of `REDIS_URL`, the cron schedules of
`AGGREGATION_SCHEDULE` / `CACHE_WARMING_SCHEDULE` (when their jobs are enabled), `JOB_TIMEOUT`,
and start-up/shut-down hooks that own the PostgreSQL pool and Redis clients of the jobs.
`workers.WorkerSettings` is that class for the process's environment, built on first use.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from datetime import UTC
from typing import Any

from arq import cron, func

import workers.jobs as jobs
from domain.changes import (
    AGGREGATE_JOB,
    NIGHTLY_CRON,
    REFRESH_VIEWS_JOB,
    REPAIR_JOB,
    WARM_CACHE_CRON,
    WARM_CACHE_JOB,
)
from gateway.cache.clients import create_redis
from gateway.data.db import create_pool
from gateway.data.resources import Resources, arq_redis_settings
from gateway.ops import tracing
from gateway.ops.logs import Redactor, configure_logging, settings_secrets
from gateway.ops.metrics import BUILD_INFO
from gateway.ops.runtime import tune_gc
from gateway.ops.settings import Settings
from workers.cron import cron_arguments
from workers.metrics import MAX_TRIES, RETRY_BASE_S, RUN_LOGGER, start_metrics_server

log = logging.getLogger(__name__)

KEEP_RESULT_S = 86_400        # results of CLI-enqueued and cron runs, for `jobs status`/`jobs list`
HEALTH_CHECK_INTERVAL_S = 60  # how fresh `arq --check` wants the worker's heartbeat


def load_settings() -> Settings:
    """The environment's settings; in development an unset `DATABASE_URL`/`REDIS_URL` is filled
    in with the embedded servers (started if need be), as `python -m gateway dev` does."""
    settings = Settings.load()
    if not settings.database_url or not settings.redis_url:
        from gateway.dev.services import resolve_services

        settings, _ = resolve_services(settings)
    return settings


def worker_pool_options(settings: Settings) -> dict[str, Any]:
    """The jobs' pool differs from the API's in one way: statements may run for `JOB_TIMEOUT`
    (a backfill or a view refresh is not a request), not `QUERY_TIMEOUT`."""
    return {
        "command_timeout": settings.job_timeout + 5,
        "server_settings": {
            "application_name": "analytics_worker",
            "jit": "off",
            # A backstop only: arq cancels the job (and asyncpg the query) at JOB_TIMEOUT.
            "statement_timeout": str((settings.job_timeout + 5) * 1000),
        },
    }


class _Redacted(logging.Formatter):
    """The record's message as it is (the job-run lines are JSON already), secrets removed."""

    def __init__(self, redact: Callable[[str], str]) -> None:
        super().__init__("%(message)s")
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


def configure_worker_logging(settings: Settings) -> None:
    """Logging of a worker process: the API's handlers (LOG_LEVEL, LOG_FORMAT, LOG_FILE) for
    everything, except that each job-run line goes to stdout as the bare JSON object it is,
    whatever LOG_FORMAT says, so that log pipelines can parse it. arq's own lines keep the
    handler the `arq` command gave them (propagating too would print them twice)."""
    configure_logging(settings)
    redact = Redactor(settings_secrets(settings))
    logging.getLogger("arq").propagate = False
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_Redacted(redact))
    runs = logging.getLogger(RUN_LOGGER)
    runs.handlers = [handler]
    runs.propagate = False
    runs.setLevel(logging.INFO)


async def startup(ctx: dict[str, Any]) -> None:
    """Open what the jobs share; arq has already put its own Redis pool in `ctx["redis"]`."""
    settings: Settings = ctx["settings"]
    if ctx.get("configure_logging"):  # a worker process of its own (not a test's worker)
        configure_worker_logging(settings)
        tune_gc()  # gateway/ops/runtime.py
    # OTEL_TRACES_EXPORTER, once per process; each job run is then a span (workers/metrics.py)
    ctx["traced"] = tracing.configure(settings)
    pool = await create_pool(settings, **worker_pool_options(settings))
    ctx["pool"] = pool
    ctx["resources"] = Resources(settings=settings, pool=pool, redis=create_redis(settings),
                                 cache_redis=create_redis(settings, cache_path=True),
                                 arq=ctx["redis"])
    if settings.prometheus_enabled:
        BUILD_INFO.labels(settings.app_name, settings.app_version, settings.app_env).set(1)
        start_metrics_server(settings.prometheus_port)
    log.info("worker started (env=%s)", settings.app_env)


async def shutdown(ctx: dict[str, Any]) -> None:
    """Close what `startup` opened (arq closes its own pool)."""
    resources: Resources | None = ctx.get("resources")
    if resources is not None:
        await resources.cache_redis.aclose()
        await resources.redis.aclose()
    pool = ctx.get("pool")
    if pool is not None:
        await pool.close()


def build_worker_settings(settings: Settings, *, configure_logging: bool = False,
                          **ctx_overrides: Any) -> Any:
    """The `WorkerSettings` class for `settings`.

    An unsupported cron string raises `SettingsError` naming its setting, even when its job is
    disabled, so that a typo is found when it is made and not when someone turns the job on.
    `configure_logging` is for the worker process (`workers.WorkerSettings`), not for a worker
    run inside tests; `ctx_overrides` go into the jobs' ctx (tests shorten `retry_base_s` and
    `refresh_delay_s`, or set the aggregation's `batch_size`).
    """
    aggregation_at = cron_arguments("AGGREGATION_SCHEDULE", settings.aggregation_schedule)
    warming_at = cron_arguments("CACHE_WARMING_SCHEDULE", settings.cache_warming_schedule)
    cron_options: dict[str, Any] = {"timeout": settings.job_timeout, "max_tries": MAX_TRIES,
                                    "keep_result": KEEP_RESULT_S, "unique": True}
    cron_jobs = []
    if settings.enable_daily_aggregation:
        cron_jobs.append(cron(jobs.aggregate_nightly, name=NIGHTLY_CRON,
                              **aggregation_at, **cron_options))
    if settings.enable_cache_warming:
        cron_jobs.append(cron(jobs.warm_cache, name=WARM_CACHE_CRON,
                              **warming_at, **cron_options))
    functions = [
        func(jobs.aggregate, name=AGGREGATE_JOB),
        func(jobs.warm_cache, name=WARM_CACHE_JOB),
        # Unique ids: no stored result, or the next enqueue under the same id would be refused.
        func(jobs.repair_stale, name=REPAIR_JOB, keep_result=0),
        func(jobs.refresh_views, name=REFRESH_VIEWS_JOB, keep_result=0),
    ]
    ctx = {"settings": settings, "configure_logging": configure_logging,
           "retry_base_s": RETRY_BASE_S,
           "refresh_delay_s": jobs.REFRESH_DELAY_S, **ctx_overrides}
    attributes: dict[str, Any] = {
        "__doc__": "arq worker options (see workers/settings.py).",
        "functions": functions,
        "cron_jobs": cron_jobs,
        "redis_settings": arq_redis_settings(settings),
        "on_startup": startup,
        "on_shutdown": shutdown,
        "job_timeout": settings.job_timeout,
        "keep_result": KEEP_RESULT_S,
        "max_tries": MAX_TRIES,
        "allow_abort_jobs": True,
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
        "timezone": UTC,  # cron schedules are read in UTC, whatever the host's zone
        "ctx": ctx,
    }
    return type("WorkerSettings", (), attributes)

