"""Logging: one JSON object per line (`LOG_FORMAT=json`) or plain text, with the request's id.

Every record carries the id of the request it was written under (and the caller and GraphQL
operation once they are known), taken from a context variable that the request middleware sets,
so a stack trace in the log can be found from the `requestId` a client reports. Whatever the
format, the formatter redacts what must never be written down: bearer tokens and JWTs, passwords
in JSON or DSNs, and the configured secrets themselves.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import sys
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.ops.settings import Settings


@dataclass(slots=True)
class RequestInfo:
    """What the log (and the error masking) knows about the request being served."""

    request_id: str
    user_id: str | None = None
    operation: str | None = None
    # With tracing on, the `traceparent` of a request that began a new trace which is not
    # sampled (it has no span to carry it): `tracing.enqueueing` passes it to the jobs the
    # request queues, so that they are not sampled either.
    traceparent: str | None = None


SQL_LOGGER = "gateway.sql"  # APP_DEBUG's statement log (gateway/data/db.py)

current_request: ContextVar[RequestInfo | None] = ContextVar("current_request", default=None)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def new_request_id(offered: str | None = None) -> str:
    """The id of a request: the caller's `X-Request-ID` when it is sane, else a fresh one."""
    if offered and _REQUEST_ID.match(offered):
        return offered
    return os.urandom(16).hex()  # as random as uuid4().hex, at a third of the cost


def request_id() -> str | None:
    info = current_request.get()
    return info.request_id if info else None


# --- redaction ------------------------------------------------------------------------------------

def _keep_quotes(match: re.Match[str]) -> str:
    value = match.group(2)
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match.group(1)}{quote}[redacted]{quote}"


_REDACTIONS: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    # JWTs anywhere (access tokens, in headers, in exception text)
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), "[redacted-jwt]"),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+"), r"\1 [redacted]"),
    # "password": "...", password=..., refreshToken: "..." (JSON, GraphQL literals, query strings)
    (re.compile(r"(?i)(\"?\b(?:password|passwd|secret|token|refresh_?token|access_?token"
                r"|api_?key)\"?\s*[:=]\s*)(\"(?:[^\"\\]|\\.)*\"|'[^']*'|[^\s,&}]+)"),
     _keep_quotes),
    # credentials in URLs: scheme://user:password@host
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/\s@]*:)[^@\s/]+@", re.IGNORECASE), r"\1[redacted]@"),
]


class Redactor:
    """Removes secrets from a formatted log line: patterns, plus the literal configured secrets."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        self.secrets = sorted({s for s in (secrets or []) if s and len(s) >= 6}, key=len,
                              reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "[redacted]")
        for pattern, replacement in _REDACTIONS:
            text = pattern.sub(replacement, text)
        return text


def settings_secrets(settings: Settings) -> list[str]:
    """The configured secret values that must never appear in a log line."""
    values = [settings.jwt_secret_key, settings.redis_password or "", settings.sentry_dsn or ""]
    for url in (settings.database_url, settings.database_read_url, settings.redis_url):
        match = re.search(r"://[^:/@]*:([^@/]+)@", url or "")
        if match:
            values.append(match.group(1))
    return values


# --- formatters and filter ------------------------------------------------------------------------


class RequestContextFilter(logging.Filter):
    """Copies the current request's id, user and operation onto each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        info = current_request.get()
        if info is not None:
            record.request_id = info.request_id
            record.user_id = info.user_id
            record.operation = info.operation
        return True


_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message", "asctime", "request_id", "user_id", "operation", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, service (`APP_NAME`), logger, message, request id,
    user id, operation, duration (when the record has one), exception text, and any other
    `extra=` fields. The service name tells apart services that share a log pipeline."""

    def __init__(self, redact: Redactor | None = None, service: str | None = None) -> None:
        super().__init__()
        self.redact = redact or Redactor()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
        }
        if self.service:
            entry["service"] = self.service
        entry["logger"] = record.name
        entry["message"] = self.redact(record.getMessage())
        for key in ("request_id", "user_id", "operation"):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.redact(self.formatException(record.exc_info))
        line = orjson.dumps(entry, default=str).decode()
        return line


class TextFormatter(logging.Formatter):
    """For people: `time level logger [request] message`, secrets redacted."""

    def __init__(self, redact: Redactor | None = None) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(rid)s: %(message)s")
        self.redact = redact or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None)
        record.rid = f" [{rid}]" if rid else ""
        return self.redact(super().format(record))


def build_handlers(settings: Settings) -> list[logging.Handler]:
    """stdout, plus `LOG_FILE` rotated at `LOG_MAX_SIZE` keeping `LOG_BACKUP_COUNT` old files."""
    redact = Redactor(settings_secrets(settings))
    formatter: logging.Formatter = (JsonFormatter(redact, settings.app_name)
                                    if settings.log_format == "json" else TextFormatter(redact))
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if settings.log_file:
        handlers.append(logging.handlers.RotatingFileHandler(
            settings.log_file, maxBytes=settings.log_max_size,
            backupCount=settings.log_backup_count, encoding="utf-8"))
    context_filter = RequestContextFilter()
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(context_filter)
    return handlers


_OURS = "_gateway_handler"


def configure_logging(settings: Settings) -> None:
    """Install our handlers on the root logger (replacing any installed before, so calling this
    twice, e.g. once per uvicorn worker, leaves one set) and route uvicorn's loggers through it."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        # ours from an earlier call, or the bare stderr handler of `logging.basicConfig`
        if getattr(handler, _OURS, False) or type(handler) is logging.StreamHandler:
            root.removeHandler(handler)
            if getattr(handler, _OURS, False):
                handler.close()
    for handler in build_handlers(settings):
        setattr(handler, _OURS, True)
        root.addHandler(handler)
    root.setLevel(settings.log_level)
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # Our access line (gateway.access) replaces uvicorn's, which lacks the request id.
    logging.getLogger("uvicorn.access").disabled = True
    # APP_DEBUG (never in production): the statement log of gateway/data/db.py, whatever
    # LOG_LEVEL says; NOTSET again otherwise, so that a second call can turn it off.
    logging.getLogger(SQL_LOGGER).setLevel(logging.DEBUG if settings.app_debug else logging.NOTSET)
    quiet_library_loggers()


def quiet_library_loggers() -> None:
    """Strawberry logs every GraphQL error, expected ones included, with the traceback of the
    unexpected ones but without our request id; `schema.extensions.errors` logs those instead."""
    logging.getLogger("strawberry.execution").disabled = True
