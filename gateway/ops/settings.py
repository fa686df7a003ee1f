"""Every setting of the service, read once from the environment and an optional `.env` file.

The names follow the `.env.production` layout of the deployment guide. Defaults are those of a
development machine; production overrides them through the environment (or `NAME_FILE` for
secrets, the Docker/Kubernetes convention). A bad value raises `SettingsError` with one line that
names the setting, and the entry points print that line and exit.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

APP_ENVS = ("development", "test", "staging", "production")
JWT_PLACEHOLDER = "your_super_secret_jwt_key_change_this_in_production"
DEV_JWT_SECRET = "dev-only-secret-change-me-in-production-0123456789"
SECRET_SETTINGS = ("JWT_SECRET_KEY", "DATABASE_URL", "DATABASE_READ_URL", "REDIS_URL",
                   "REDIS_PASSWORD", "SENTRY_DSN")


class SettingsError(ValueError):
    """A setting has a value the service cannot run with; the message names the setting."""


# --- parsers: each takes the raw string and returns the typed value or raises ValueError ----------


def _str(raw: str) -> str:
    return raw


def _opt_str(raw: str) -> str | None:
    return raw or None


def _int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"expected a whole number, got {raw!r}") from None


def _float(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"expected a number, got {raw!r}") from None


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _host_ports(raw: str) -> tuple[str, ...]:
    """`host:port,host:port` (Redis Cluster seeds, Sentinels); each port must be a number."""
    nodes = _csv(raw)
    for node in nodes:
        host, _, port = node.rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"expected host:port[,host:port...], got {node!r}")
    return nodes


_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|k|mb|m|gb|g)?\s*$", re.IGNORECASE)
_SIZE_FACTORS = {None: 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2,
                 "g": 1024**3, "gb": 1024**3}


def _size(raw: str) -> int:
    match = _SIZE.match(raw)
    if not match:
        raise ValueError(f"expected a size such as 100MB, got {raw!r}")
    unit = match.group(2).lower() if match.group(2) else None
    return int(match.group(1)) * _SIZE_FACTORS[unit]


def _app_env(raw: str) -> str:
    if raw not in APP_ENVS:
        raise ValueError(f"expected one of {', '.join(APP_ENVS)}, got {raw!r}")
    return raw


def _port(raw: str) -> int:
    port = _int(raw)
    if not 1 <= port <= 65535:
        raise ValueError(f"expected a port number 1..65535, got {raw!r}")
    return port


def _opt_port(raw: str) -> int | None:
    return _port(raw) if raw else None


def _positive(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def check(raw: str) -> Any:
        value = parse(raw)
        if value <= 0:
            raise ValueError(f"expected a positive number, got {raw!r}")
        return value

    return check


def _non_negative(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def check(raw: str) -> Any:
        value = parse(raw)
        if value < 0:
            raise ValueError(f"expected zero or more, got {raw!r}")
        return value

    return check


def _log_level(raw: str) -> str:
    level = raw.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError(f"expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got {raw!r}")
    return level


def _log_format(raw: str) -> str:
    if raw not in ("json", "text"):
        raise ValueError(f"expected json or text, got {raw!r}")
    return raw


def _jwt_algorithm(raw: str) -> str:
    if raw not in ("HS256", "HS384", "HS512"):
        raise ValueError(f"expected HS256, HS384 or HS512, got {raw!r}")
    return raw


def _otel_exporter(raw: str) -> str:
    value = raw.lower() or "none"
    if value not in ("otlp", "console", "none"):
        raise ValueError(f"expected otlp, console or none, got {raw!r}")
    return value


def setting(default: str, parse: Callable[[str], Any] = _str, doc: str = "") -> Any:
    """Declare a setting: its raw default (as it would be written in `.env`) and its parser."""
    return field(metadata={"default": default, "parse": parse, "doc": doc})


@dataclass(frozen=True)
class Settings:
    """The typed settings. Attribute names are the lower-case environment variable names."""

    # Application
    app_env: str = setting("development", _app_env, "development, test, staging or production")
    app_name: str = setting("Analytics API", doc="`service` in /health, JSON logs and "
                            "analytics_build_info")
    app_version: str = setting("1.0.0")
    app_debug: bool = setting("false", _bool, "log every SQL statement (gateway.sql, DEBUG); "
                              "refused in production")

    # Server
    host: str = setting("127.0.0.1", doc="bind address of `python -m gateway serve`")
    port: int = setting("8000", _port)
    workers: int = setting("1", _positive(_int), doc="uvicorn processes")
    timeout: int = setting("30", _positive(_int), doc="per-request deadline, seconds")
    keepalive: int = setting("5", _positive(_int), doc="HTTP keep-alive, seconds")

    # Database
    database_url: str | None = setting("", _opt_str, "unset: an embedded PostgreSQL under .data/")
    database_read_url: str | None = setting("", _opt_str, "optional read replica for analytics")
    database_pool_size: int = setting("5", _positive(_int), "connections kept open per process")
    database_max_overflow: int = setting("10", _non_negative(_int), "extra connections under load")
    database_pool_timeout: float = setting("30", _positive(_float),
                                           "seconds to wait for a connection")
    database_pool_recycle: float = setting("3600", _positive(_float), "idle connection lifetime, s")
    database_statement_cache_size: int = setting(
        "100", _non_negative(_int), "0 behind a transaction pooler (PgBouncer, Neon pooler)")
    database_read_ryw_seconds: int = setting(
        "30", _positive(_int), "after a user's write, their reads wait for the replica this long")
    database_read_circuit_seconds: float = setting(
        "5", _positive(_float), "seconds reads skip a replica that failed")
    account_cache_seconds: float = setting(
        "60", _non_negative(_float), "each API process keeps callers' account rows at most this "
        "long, dropped when the account changes (gateway/data/accounts.py); 0: off")

    # Redis
    redis_url: str | None = setting("", _opt_str, "unset: an embedded Redis under .data/")
    redis_password: str | None = setting("", _opt_str)
    redis_max_connections: int = setting("50", _positive(_int))
    redis_socket_timeout: float = setting("5", _positive(_float))
    redis_socket_connect_timeout: float = setting("5", _positive(_float))
    redis_cache_timeout: float = setting(
        "0.2", _positive(_float), "whole-call timeout of Redis on the request path, seconds")
    cache_circuit_seconds: float = setting(
        "5", _positive(_float), "seconds the cache and rate limits skip Redis after it failed")
    redis_cluster_nodes: tuple[str, ...] = setting(
        "", _host_ports, "host:port,... of a Redis Cluster for the cache and rate limits")
    redis_sentinels: tuple[str, ...] = setting("", _host_ports,
                                               "host:port,... of Redis Sentinels")
    redis_sentinel_master: str = setting("mymaster", doc="the master name Sentinel watches")

    # Authentication
    jwt_secret_key: str = setting(DEV_JWT_SECRET)
    jwt_algorithm: str = setting("HS256", _jwt_algorithm)
    jwt_access_token_expire_minutes: int = setting("30", _positive(_int))
    jwt_refresh_token_expire_days: int = setting("7", _positive(_int))
    jwt_issuer: str = setting("analytics-gateway")
    jwt_audience: str = setting("analytics-api")

    # Security
    allowed_hosts: tuple[str, ...] = setting("*", _csv)
    cors_origins: tuple[str, ...] = setting("http://localhost:3000,http://127.0.0.1:3000", _csv)
    cors_credentials: bool = setting("true", _bool)
    rate_limit_enabled: bool = setting("true", _bool)
    rate_limit_per_minute: int = setting("600", _positive(_int))
    trusted_proxies: tuple[str, ...] = setting("127.0.0.1,::1", _csv,
                                               "peers whose X-Forwarded-For is believed")
    login_rate_limit_per_minute: int = setting("5", _positive(_int),
                                               "login attempts per account and minute")
    login_ip_rate_limit_per_minute: int = setting("20", _positive(_int),
                                                  "login attempts per client IP and minute")
    max_body_bytes: int = setting("1MB", _size, "larger request bodies get HTTP 413")

    # GraphQL query limits (each refused before any resolver or SQL runs)
    max_query_depth: int = setting("10", _positive(_int), "nesting of selections")
    max_query_aliases: int = setting("15", _positive(_int), "aliases in one document")
    max_query_tokens: int = setting("1000", _positive(_int), "lexical tokens in one document")
    max_field_repeats: int = setting("50", _positive(_int),
                                     "times one field may appear in one selection set")
    max_page_size: int = setting("100", _positive(_int), "largest `first`")
    max_query_cost: int = setting("50000", _positive(_int),
                                  "estimated objects: fields times page sizes and days")

    # Logging
    log_level: str = setting("INFO", _log_level)
    log_format: str = setting("text", _log_format)
    log_file: str | None = setting("", _opt_str)
    log_max_size: int = setting("100MB", _size)
    log_backup_count: int = setting("10", _non_negative(_int))

    # Monitoring
    sentry_dsn: str | None = setting("", _opt_str)
    prometheus_enabled: bool = setting("true", _bool)
    prometheus_port: int | None = setting("", _opt_port)
    otel_traces_exporter: str = setting(
        "none", _otel_exporter, "OpenTelemetry traces: otlp (OTLP/HTTP to "
        "OTEL_EXPORTER_OTLP_ENDPOINT), console or none (off); see docs/operations.md, Tracing")

    # Background jobs
    enable_daily_aggregation: bool = setting("true", _bool)
    enable_cache_warming: bool = setting("true", _bool)
    aggregation_schedule: str = setting("0 1 * * *")
    cache_warming_schedule: str = setting("0 */6 * * *")
    job_timeout: int = setting("600", _positive(_int), "seconds before a job is cancelled")

    # Performance
    cache_ttl_overview: int = setting("300", _positive(_int))
    cache_ttl_trends: int = setting("900", _positive(_int))
    cache_ttl_productivity: int = setting("600", _positive(_int))
    cache_local_entries: int = setting(
        "4096", _non_negative(_int),
        "field results and whole responses kept in each process (each); 0: none")
    query_timeout: float = setting("30", _positive(_float), "SQL statement timeout, seconds")
    max_export_rows: int = setting("100000", _positive(_int))

    # Live dashboards: GraphQL subscriptions over WebSocket (docs/api.md, "Subscriptions")
    live_enabled: bool = setting("true", _bool, "accept subscriptions on ws(s)://HOST/graphql")
    live_max_connections: int = setting("20000", _positive(_int),
                                        "subscription WebSockets per process; more: close 1013")
    live_max_subscriptions_per_connection: int = setting("10", _positive(_int))
    live_max_subscriptions_per_user: int = setting("50", _positive(_int),
                                                   "a caller's subscriptions per process")
    live_coalesce_ms: int = setting("250", _non_negative(_int),
                                    "at most one push per subscription per this many ms")
    live_send_timeout_s: float = setting("5", _positive(_float),
                                         "a push not sent within this closes the socket (4008)")
    live_ws_deflate: bool = setting(
        "true", _bool, "permessage-deflate on subscription sockets, each message compressed on "
        "its own (no zlib state kept by an idle socket); false: no compression")

    # Feature flags
    enable_materialized_views: bool = setting("true", _bool)
    enable_query_cache: bool = setting("true", _bool)
    enable_response_cache: bool = setting(
        "true", _bool, "also cache whole own-dashboard responses (with ENABLE_QUERY_CACHE)")
    enable_response_compression: bool = setting("true", _bool)
    compiled_execution: bool = setting(
        "true", _bool, "answer queries from plans compiled once per document "
        "(schema/compiled.py); false: graphql-core executes everything")

    # Persisted queries (gateway/http/persisted.py; docs/api.md, "Persisted queries")
    enable_persisted_queries: bool = setting(
        "true", _bool, "Apollo's automatic persisted queries (a query sent by its SHA-256)")
    trusted_documents_file: str = setting(
        "trusted-documents.json", doc="the allow-list `python -m gateway documents add` writes")
    trusted_documents_only: bool = setting(
        "false", _bool, "run only the documents of TRUSTED_DOCUMENTS_FILE (needs the file)")

    @property
    def is_production(self) -> bool:
        return self.app_env == "production"

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None,
             env_file: str | Path | None = ".env") -> Settings:
        """Read the settings: environment over the `.env` file over the defaults."""
        env = dict(os.environ if environ is None else environ)
        file_values = read_env_file(Path(env_file)) if env_file else {}
        values: dict[str, Any] = {}
        for f in fields(cls):
            if "parse" not in f.metadata:
                continue
            name = f.name.upper()
            raw = _raw_value(name, env, file_values)
            if raw is None:
                raw = f.metadata["default"]
            try:
                values[f.name] = f.metadata["parse"](raw.strip())
            except ValueError as exc:
                raise SettingsError(f"{name}: {exc}") from None
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """Cross-setting rules that no single parser can see."""
        if self.is_production and self.app_debug:
            raise SettingsError("APP_DEBUG: must be false in production (it logs every SQL "
                                "statement); use it in development, test or staging")
        if self.is_production:
            secret = self.jwt_secret_key
            if secret in (JWT_PLACEHOLDER, DEV_JWT_SECRET) or len(secret.encode()) < 32:
                raise SettingsError(
                    "JWT_SECRET_KEY: production needs a random secret of at least 32 bytes "
                    "(not the placeholder); generate one with `python -m gateway secret`")
        if self.trusted_documents_only and not Path(self.trusted_documents_file).is_file():
            raise SettingsError(
                f"TRUSTED_DOCUMENTS_ONLY: needs TRUSTED_DOCUMENTS_FILE "
                f"({self.trusted_documents_file!r}) to exist; write it with "
                "`python -m gateway documents add FILE.graphql`")


def _raw_value(name: str, env: Mapping[str, str], file_values: Mapping[str, str]) -> str | None:
    """The raw string of a setting; secrets may also come from `NAME_FILE` (a mounted secret)."""
    for source in (env, file_values):
        if name in source:
            return source[name]
        path = source.get(f"{name}_FILE")
        if path and name in SECRET_SETTINGS:
            try:
                return Path(path).read_text().strip()
            except OSError as exc:
                raise SettingsError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None
    return None


_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a `.env` file: `NAME=value`, optional quotes, `#` comments (also after a value)."""
    if not path.is_file():
        return {}
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            continue
        name, raw = match.groups()
        if raw[:1] in ("'", '"'):
            quote = raw[0]
            end = raw.find(quote, 1)
            raw = raw[1:end] if end > 0 else raw[1:]
        else:
            raw = re.split(r"(?:^|\s+)#", raw, maxsplit=1)[0].strip()
        values[name] = raw
    return values


def documented_settings() -> list[tuple[str, str, str]]:
    """(NAME, default, description) for every setting, for docs and `python -m gateway settings`."""
    return [(f.name.upper(), f.metadata["default"], f.metadata["doc"])
            for f in fields(Settings) if "parse" in f.metadata]
