"""Prometheus metrics under the deployment guide's names, and the `/metrics` exposition.

The metrics live in prometheus-client's default registry, beside those other modules define
(`analytics_cache_hits_total` in gateway/cache/fields.py, the job metrics of workers/metrics.py), so
one exposition shows them all. With several uvicorn workers, `python -m gateway serve` sets
`PROMETHEUS_MULTIPROC_DIR` before any worker starts: every process then writes its samples to files
there and `/metrics` (in whichever worker answers) adds them up.

Label values are bounded: endpoints are the application's own paths (anything else is
`unmatched`), methods the usual HTTP ones, and GraphQL operation names the first
`MAX_OPERATION_NAMES` a process sees (later ones count as `other`), because each label value is a
time series that lives as long as the process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                   30.0)

REQUESTS = Counter("analytics_requests_total", "HTTP requests by method, endpoint and status",
                   ["method", "endpoint", "status"])
REQUEST_DURATION = Histogram("analytics_request_duration_seconds",
                             "HTTP request duration in seconds", ["method", "endpoint"],
                             buckets=LATENCY_BUCKETS)
DB_QUERY_DURATION = Histogram("analytics_db_query_duration_seconds",
                              "SQL statement duration in seconds, by named query",
                              ["query_type"], buckets=LATENCY_BUCKETS)
GRAPHQL_OPERATIONS = Counter("analytics_graphql_operations_total",
                             "GraphQL operations by name, type and outcome (ok, error)",
                             ["operation", "type", "status"])
GRAPHQL_DURATION = Histogram("analytics_graphql_operation_duration_seconds",
                             "GraphQL operation duration in seconds", ["operation", "type"],
                             buckets=LATENCY_BUCKETS)
COMPILED_OPERATIONS = Counter("analytics_compiled_operations_total",
                              "GraphQL queries answered by a compiled plan (schema/compiled.py)")
COMPILED_EVENTS = Counter("analytics_compiled_events_total",
                          "Subscription events completed by a compiled plan (schema/compiled.py)")
COMPILED_FALLBACKS = Counter("analytics_compiled_fallbacks_total",
                             "Queries with a compiled plan answered by graphql-core instead, by "
                             "reason (an error to report, variables the plan cannot take)",
                             ["reason"])
DB_UNAVAILABLE = Counter("analytics_db_unavailable_total",
                         "Requests answered 503 because PostgreSQL could not be reached")
REJECTED = Counter("analytics_requests_rejected_total",
                   "Requests refused before execution, by reason (rate_limited, too_large, "
                   "query_too_complex, ...)", ["reason"])
ACTIVE_USERS = Gauge("analytics_active_users",
                     "Users with activity in the last 30 days (from daily_analytics)",
                     multiprocess_mode="mostrecent")
TASKS_TOTAL = Gauge("analytics_tasks_total", "Tasks in the database (planner estimate once the "
                    "table has been analysed)", multiprocess_mode="mostrecent")
# From the materialized views (ENABLE_MATERIALIZED_VIEWS), so as of their last refresh, never live:
# labelled, so that with the views off the families have no sample at all rather than a false 0.
TASKS_BY_STATUS = Gauge("analytics_tasks_by_status", "Tasks not deleted, by status, as of the "
                        "last refresh of user_status_distribution", ["status"],
                        multiprocess_mode="mostrecent")
TASKS_BY_PRIORITY = Gauge("analytics_tasks_by_priority", "Tasks not deleted, by priority, as of "
                          "the last refresh of user_priority_distribution", ["priority"],
                          multiprocess_mode="mostrecent")
OPEN_TASKS = Gauge("analytics_open_tasks", "Tasks not done, overdue (due before the user's local "
                   "day) or not, as of the last refresh of user_task_stats", ["overdue"],
                   multiprocess_mode="mostrecent")
TASKS_THIS_MONTH = Gauge("analytics_tasks_this_month", "Tasks created or completed in the current "
                         "month (UTC) on the users' aggregated local days, from "
                         "user_monthly_trends",
                         ["event"], multiprocess_mode="mostrecent")
BUILD_INFO = Gauge("analytics_build_info", "Always 1; the labels say which service (APP_NAME), "
                   "version (APP_VERSION) and environment (APP_ENV) is running",
                   ["service", "version", "env"], multiprocess_mode="max")
# Summed over a replica's worker processes (each writes its own sample; dead ones drop out).
POOL_SIZE = Gauge("analytics_db_pool_size", "Connections the database pool may open "
                  "(DATABASE_POOL_SIZE + DATABASE_MAX_OVERFLOW)", multiprocess_mode="livesum")
POOL_IN_USE = Gauge("analytics_db_pool_in_use", "Database connections checked out right now",
                    multiprocess_mode="livesum")
# Callers' account rows (gateway/http/identity.py, gateway/data/accounts.py).
ACCOUNT_ROWS = Counter("analytics_account_rows_total",
                       "Callers' account rows, by where they came from: the process's account "
                       "cache (memory) or PostgreSQL (database)", ["source"])
ACCOUNT_ROWS_KEPT = ACCOUNT_ROWS.labels("memory")
ACCOUNT_ROWS_READ = ACCOUNT_ROWS.labels("database")
# Live dashboards (gateway/live/, resolvers/live.py): per process, summed over a replica's workers.
LIVE_CONNECTIONS = Gauge("analytics_live_connections", "Open subscription WebSockets",
                         multiprocess_mode="livesum")
LIVE_SUBSCRIPTIONS = Gauge("analytics_live_subscriptions", "Active subscriptions by root field",
                           ["field"], multiprocess_mode="livesum")
LIVE_PUSHES = Counter("analytics_live_pushes_total", "Subscription events sent, by root field",
                      ["field"])
LIVE_FIGURES = Counter("analytics_live_figures_total", "Followed users' figures for a push, by "
                       "source: updated from the described changes, or recomputed from the "
                       "database", ["source"])
LIVE_CLOSED = Counter("analytics_live_closed_total", "Subscription WebSockets closed by the "
                      "server, by reason (expired, deleted, slow, capacity, unauthorized)",
                      ["reason"])
LIVE_PUSH_DELAY = Histogram("analytics_live_push_delay_seconds", "From a change's publication "
                            "on Redis to the push of the figures that include it",
                            buckets=LATENCY_BUCKETS)

METHODS = frozenset({"GET", "POST", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"})
MAX_OPERATION_NAMES = 200
BUSINESS_REFRESH_SECONDS = 30.0
BUSINESS_QUERY_TIMEOUT = 2.0


class RequestMetrics:
    """Records one HTTP request; label children are cached, since `labels()` costs a lock and a
    validation on every call and the label sets are few."""

    def __init__(self, endpoints: Iterable[str]) -> None:
        self.endpoints = frozenset(endpoints)
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._histograms: dict[tuple[str, str], Any] = {}

    def endpoint(self, path: str) -> str:
        return path if path in self.endpoints else "unmatched"

    def observe(self, method: str, path: str, status: int, seconds: float) -> None:
        method = method if method in METHODS else "OTHER"
        endpoint = path if path in self.endpoints else "unmatched"
        key = (method, endpoint, status)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = REQUESTS.labels(method, endpoint, str(status))
        counter.inc()
        hkey = (method, endpoint)
        histogram = self._histograms.get(hkey)
        if histogram is None:
            histogram = self._histograms[hkey] = REQUEST_DURATION.labels(method, endpoint)
        histogram.observe(seconds)


_operation_names: set[str] = set()
# The label children of each (name, kind, ok) seen: `labels()` costs a lock and a validation
# per call; the names are bounded by MAX_OPERATION_NAMES, so these are too.
_operation_children: dict[tuple[str | None, str, bool], tuple[Any, Any]] = {}


def observe_operation(name: str | None, kind: str, ok: bool, seconds: float) -> None:
    """Count and time one GraphQL operation."""
    children = _operation_children.get((name, kind, ok))
    if children is None:
        label = name or "anonymous"
        if label not in _operation_names:
            if len(_operation_names) >= MAX_OPERATION_NAMES:
                label = "other"
            else:
                _operation_names.add(label)
        children = (GRAPHQL_OPERATIONS.labels(label, kind, "ok" if ok else "error"),
                    GRAPHQL_DURATION.labels(label, kind))
        if label != "other":  # an overflowing name is not kept: it would grow this without end
            _operation_children[(name, kind, ok)] = children
    children[0].inc()
    children[1].observe(seconds)


POOL_SAMPLE_SECONDS = 5.0


def sample_pool(pool: Any) -> None:
    """Set the pool gauges from asyncpg's own counters (no I/O)."""
    POOL_SIZE.set(pool.get_max_size())
    POOL_IN_USE.set(pool.get_size() - pool.get_idle_size())


async def sample_pool_forever(pool: Any) -> None:
    """Keep the pool gauges current in every process, whichever process answers a scrape."""
    while True:
        sample_pool(pool)
        await asyncio.sleep(POOL_SAMPLE_SECONDS)


class BusinessGauges:
    """The business gauges, refreshed at most every 30 s from cheap queries, so a scrape never
    costs a scan of `tasks`: `analytics_active_users` and `analytics_tasks_total` (an index range
    count and the planner's row estimate) and, when `views_sql` is given
    (ENABLE_MATERIALIZED_VIEWS), the task gauges read from the materialized views (a row per
    user, or per user and month)."""

    def __init__(self, sql: str, views_sql: str | None = None) -> None:
        self.sql = sql  # `metrics_business_gauges` of sql/queries/metrics.sql
        self.views_sql = views_sql  # `metrics_view_gauges`, or None with the views off
        self.refreshed_at = float("-inf")
        self._lock = asyncio.Lock()

    async def refresh(self, pool: Any, *, force: bool = False) -> None:
        if not force and time.monotonic() - self.refreshed_at < BUSINESS_REFRESH_SECONDS:
            return
        async with self._lock:
            if not force and time.monotonic() - self.refreshed_at < BUSINESS_REFRESH_SECONDS:
                return
            try:
                async with asyncio.timeout(BUSINESS_QUERY_TIMEOUT):
                    row = await pool.fetchrow(self.sql)
                    views = await pool.fetchrow(self.views_sql) if self.views_sql else None
            except Exception as exc:  # a scrape must answer even when PostgreSQL does not
                log.warning("business gauges not refreshed: %s", type(exc).__name__)
                return
            ACTIVE_USERS.set(row["active_users"])
            TASKS_TOTAL.set(row["tasks_total"])
            if views is not None:
                for status in ("todo", "in_progress", "done"):
                    TASKS_BY_STATUS.labels(status).set(views[status])
                for priority in ("high", "medium", "low"):
                    TASKS_BY_PRIORITY.labels(priority).set(views[priority])
                OPEN_TASKS.labels("true").set(views["overdue"])
                OPEN_TASKS.labels("false").set(views["open_tasks"] - views["overdue"])
                TASKS_THIS_MONTH.labels("created").set(views["month_created"])
                TASKS_THIS_MONTH.labels("completed").set(views["month_completed"])
            self.refreshed_at = time.monotonic()

    async def run_forever(self, pool: Any) -> None:
        """Keep the gauges fresh for a scraper of `PROMETHEUS_PORT`, which cannot query."""
        while True:
            await self.refresh(pool, force=True)
            await asyncio.sleep(BUSINESS_REFRESH_SECONDS)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")


def exposition_registry() -> CollectorRegistry:
    """The registry to expose: every process's files in multiprocess mode, else this process's."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def render() -> bytes:
    return generate_latest(exposition_registry())


def prepare_multiprocess_dir(workers: int) -> str | None:
    """Before uvicorn forks workers: choose (or clear) the directory of the sample files, so that
    counters restart with the service instead of adding up the previous run's files."""
    import tempfile
    from pathlib import Path

    directory = multiprocess_dir()
    if directory is None and workers > 1:
        directory = tempfile.mkdtemp(prefix="gateway-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        for stale in Path(directory).glob("*.db"):
            stale.unlink()
    return directory


def start_metrics_port(port: int) -> None:
    """Serve the exposition on `PROMETHEUS_PORT` too (a thread of the process that calls this:
    the uvicorn supervisor, which sees every worker's files in multiprocess mode)."""
    from prometheus_client import start_http_server

    start_http_server(port, registry=exposition_registry())
    log.info("metrics on port %d", port)
