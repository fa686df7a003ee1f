"""Logs: JSON lines with request id, user, operation and duration; rotation; text for people;
no password or token ever written."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gateway.ops.logs import JsonFormatter, Redactor, configure_logging
from gateway.ops.settings import Settings
from tests.conftest import running_app

PASSWORD = "Correct-Horse-Battery-9"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging changes the root logger; put it back as pytest had it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    disabled = logging.getLogger("uvicorn.access").disabled
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
        logging.getLogger("uvicorn.access").disabled = disabled


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_json_lines_are_parseable_and_carry_the_request(
        settings: Settings, tmp_path: Path, users: Any, token_for: Callable[..., str],
        restore_logging: None) -> None:
    log_file = tmp_path / "app.log"
    local = replace(settings, log_format="json", log_file=str(log_file), log_level="INFO")
    configure_logging(local)
    user = await users.create()
    token = token_for(user.id)
    async with running_app(local) as client:
        response = await client.post("/graphql", json={"query": "query Mine { me { id } }"},
                                     headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
    entries = lines(log_file)
    assert entries, "nothing was logged"
    for entry in entries:
        assert {"time", "level", "service", "logger", "message"} <= entry.keys()
        assert entry["service"] == local.app_name  # APP_NAME
    access = [e for e in entries if e["logger"] == "gateway.access"
              and e.get("request_id") == request_id]
    assert len(access) == 1
    assert access[0]["user_id"] == str(user.id)
    assert access[0]["operation"] == "Mine"
    assert access[0]["status"] == 200 and access[0]["duration_ms"] >= 0
    assert access[0]["message"] == "POST /graphql 200"
    assert token not in log_file.read_text()


async def test_passwords_and_tokens_never_reach_the_log(
        settings: Settings, tmp_path: Path, users: Any, restore_logging: None,
        token_for: Callable[..., str]) -> None:
    log_file = tmp_path / "app.log"
    local = replace(settings, log_format="json", log_file=str(log_file), log_level="DEBUG")
    configure_logging(local)
    user = await users.create()
    token = token_for(user.id)
    async with running_app(local) as client:
        for password in (PASSWORD, "wrong-" + PASSWORD):
            await client.post("/graphql", json={
                "query": "mutation($e: String!, $p: String!) { login(email: $e, password: $p) "
                         "{ accessToken refreshToken } }",
                "variables": {"e": user.email, "p": password}},
                headers={"Authorization": f"Bearer {token}"})
    # Even what a careless log call would write is redacted.
    log = logging.getLogger("tests.careless")
    log.warning("login body %s", json.dumps({"email": user.email, "password": PASSWORD}))
    log.warning("connecting to postgresql://analytics:%s@db/analytics", PASSWORD)
    log.warning("header Authorization: Bearer %s", token)
    log.warning("secret key is %s", settings.jwt_secret_key)
    text = log_file.read_text()
    lines(log_file)  # still JSON after redaction
    assert "login body" in text and "[redacted]" in text
    for secret in (PASSWORD, token, token.split(".")[1], settings.jwt_secret_key):
        assert secret not in text


def test_the_redactor() -> None:
    redact = Redactor(["my-jwt-signing-secret"])
    assert redact('{"password": "p4ss word"}') == '{"password": "[redacted]"}'
    assert redact("refresh_token=abc.def&x=1") == "refresh_token=[redacted]&x=1"
    assert redact("redis://:pw123@cache:6379/0") == "redis://:[redacted]@cache:6379/0"
    assert "my-jwt-signing-secret" not in redact("key my-jwt-signing-secret used")
    assert redact("nothing secret here") == "nothing secret here"


def test_rotation(settings: Settings, tmp_path: Path, restore_logging: None) -> None:
    log_file = tmp_path / "app.log"
    configure_logging(replace(settings, log_format="json", log_file=str(log_file),
                              log_max_size=2000, log_backup_count=2, log_level="INFO"))
    log = logging.getLogger("tests.rotation")
    for i in range(200):
        log.info("line %d %s", i, "x" * 50)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["app.log", "app.log.1", "app.log.2"]
    assert all(p.stat().st_size <= 2000 for p in tmp_path.iterdir())
    assert lines(log_file)[-1]["message"].startswith("line 199 ")


def test_text_format_is_for_people(settings: Settings, tmp_path: Path,
                                   restore_logging: None) -> None:
    from gateway.ops.logs import RequestInfo, current_request

    log_file = tmp_path / "app.log"
    configure_logging(replace(settings, log_format="text", log_file=str(log_file),
                              log_level="INFO"))
    token = current_request.set(RequestInfo("req-42"))
    try:
        logging.getLogger("tests.text").info("hello %s", "there")
    finally:
        current_request.reset(token)
    line = log_file.read_text().strip()
    assert line.endswith("INFO tests.text [req-42]: hello there")


def test_json_formatter_includes_exceptions() -> None:
    formatter = JsonFormatter()
    try:
        raise ValueError("bad thing with password=hunter2")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None,
                                   exc_info=__import__("sys").exc_info())
    entry = json.loads(formatter.format(record))
    assert "ValueError" in entry["exception"] and "hunter2" not in entry["exception"]


async def test_app_debug_logs_each_statement_by_name_without_its_arguments(
        settings: Settings, restore_logging: None, caplog: pytest.LogCaptureFixture) -> None:
    import asyncio
    import uuid

    from gateway.data.db import create_pool, query

    debug = replace(settings, app_debug=True, log_level="WARNING")
    configure_logging(debug)
    try:
        assert logging.getLogger("gateway.sql").isEnabledFor(logging.DEBUG)  # despite LOG_LEVEL
        secret_id = uuid.uuid4()
        pool = await create_pool(debug)
        try:
            await pool.fetchval(query("user_has_stale_days"), secret_id)
            for _ in range(50):  # asyncpg calls query loggers soon after the statement
                lines_ = [r.getMessage() for r in caplog.records if r.name == "gateway.sql"]
                if any("user_has_stale_days" in line for line in lines_):
                    break
                await asyncio.sleep(0.01)
        finally:
            await pool.close()
        assert any(line.startswith("user_has_stale_days ") and line.endswith(" ms")
                   for line in lines_), lines_
        assert not any(str(secret_id) in line for line in lines_)
        configure_logging(settings)  # APP_DEBUG=false: the statement log is off again
        assert not logging.getLogger("gateway.sql").isEnabledFor(logging.DEBUG)
    finally:
        logging.getLogger("gateway.sql").setLevel(logging.NOTSET)
