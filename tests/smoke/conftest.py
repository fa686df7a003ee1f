"""Fixtures of the smoke suite: an HTTP client for `SMOKE_URL` and a signed-in session.

    SMOKE_URL=https://api.example.com pytest tests/smoke
    SMOKE_URL=... SMOKE_EMAIL=smoke@example.com SMOKE_PASSWORD=... pytest tests/smoke

Without `SMOKE_EMAIL`/`SMOKE_PASSWORD` a fresh account is registered (fine on staging; in
production give a dedicated smoke account instead). `SMOKE_INSECURE=1` accepts a self-signed
certificate. Without `SMOKE_URL` every test is skipped (as inside `make test`); `make test-infra`
runs the suite against a gateway it starts (infra/scripts/smoke_local.py).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

SMOKE_URL = os.environ.get("SMOKE_URL", "").rstrip("/")
# Validation messages that mean "this deployment's schema has no such field": skip, don't fail.
MISSING_IN_SCHEMA = ("Cannot query field", "Unknown argument", "Unknown type")


@dataclass
class Session:
    token: str
    email: str
    registered: bool


def post(http: httpx.Client, query: str, variables: dict[str, Any] | None = None,
         token: str | None = None) -> dict[str, Any]:
    """POST a GraphQL operation; skip the test when the deployed schema lacks a field it uses."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = http.post("/graphql", json={"query": query, "variables": variables or {}},
                         headers=headers)
    assert response.status_code in (200, 400), f"/graphql answered {response.status_code}"
    body: dict[str, Any] = response.json()
    for error in body.get("errors") or []:
        message = str(error.get("message", ""))
        if message.startswith(MISSING_IN_SCHEMA):
            pytest.skip(f"the deployed schema lacks what this test uses: {message}")
    return body


def data_of(body: dict[str, Any]) -> dict[str, Any]:
    """The `data` of a response that must have no errors (shown in full when it has)."""
    assert not body.get("errors"), body.get("errors")
    data: dict[str, Any] = body["data"]
    return data


@pytest.fixture(scope="session")
def http() -> Iterator[httpx.Client]:
    if not SMOKE_URL:
        pytest.skip("SMOKE_URL is not set: the smoke suite checks a deployed gateway")
    verify = os.environ.get("SMOKE_INSECURE") != "1"
    with httpx.Client(base_url=SMOKE_URL, verify=verify, timeout=15.0,
                      follow_redirects=False) as client:
        yield client


@pytest.fixture(scope="session")
def session(http: httpx.Client) -> Session:
    """Log in with SMOKE_EMAIL/SMOKE_PASSWORD, or register a throwaway account."""
    email = os.environ.get("SMOKE_EMAIL")
    password = os.environ.get("SMOKE_PASSWORD")
    if email and password:
        body = post(http, "mutation ($e: String!, $p: String!) { login(email: $e, password: $p)"
                    " { accessToken } }", {"e": email, "p": password})
        return Session(data_of(body)["login"]["accessToken"], email, registered=False)
    email = f"smoke-{uuid.uuid4().hex[:12]}@example.com"
    body = post(http, """
        mutation ($input: RegisterInput!) { register(input: $input) { accessToken } }""",
                {"input": {"email": email, "password": f"Smoke-{uuid.uuid4().hex}",
                           "displayName": "Smoke test", "timezone": "UTC"}})
    return Session(data_of(body)["register"]["accessToken"], email, registered=True)
