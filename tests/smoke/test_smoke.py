"""The post-deployment check of the deployment guide: is the deployed gateway alive, ready, able
to sign someone in, to answer a dashboard query and to store, change and delete a task?

Each test is independent of the data already there. See conftest.py for the environment."""

from __future__ import annotations

import datetime as dt
import uuid

import httpx
import pytest

from .conftest import SMOKE_URL, Session, data_of, post

pytestmark = pytest.mark.skipif(not SMOKE_URL, reason="SMOKE_URL is not set: the smoke suite "
                                "checks a deployed gateway (make test-infra starts one)")


def test_health_answers(http: httpx.Client) -> None:
    response = http.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["version"]


def test_ready_reports_postgres_and_redis(http: httpx.Client) -> None:
    response = http.get("/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    # Redis down is "degraded" with 200 (the cache fails open): the smoke check wants it up.
    assert body.get("checks", {}).get("redis", "ok") == "ok", body


def test_register_or_log_in_and_read_me(http: httpx.Client, session: Session) -> None:
    me = data_of(post(http, "{ me { id email } }", token=session.token))["me"]
    assert me["email"].lower() == session.email.lower()
    assert me["id"]


def test_unauthenticated_dashboard_query_is_refused(http: httpx.Client) -> None:
    body = post(http, "{ overview { totalTasks } }")
    codes = {e.get("extensions", {}).get("code") for e in body.get("errors") or []}
    assert codes == {"UNAUTHENTICATED"}, body


def test_dashboard_query(http: httpx.Client, session: Session) -> None:
    data = data_of(post(http, """{
        overview { totalTasks completedTasks pendingTasks overdueTasks completionRate
                   priorityDistribution { high medium low } }
        trends(period: DAY) { period points { date tasksCreated tasksCompleted } }
        productivity { score currentStreak longestStreak }
    }""", token=session.token))
    overview = data["overview"]
    assert overview["totalTasks"] >= overview["completedTasks"] >= 0
    assert 0 <= overview["completionRate"] <= 100
    assert data["trends"]["period"] == "DAY"
    assert len(data["trends"]["points"]) == 30  # the default range: the last 30 days
    assert data["productivity"]["longestStreak"] >= data["productivity"]["currentStreak"] >= 0


def test_task_round_trip(http: httpx.Client, session: Session) -> None:
    title = f"smoke {uuid.uuid4().hex[:8]}"
    due = (dt.date.today() + dt.timedelta(days=3)).isoformat()
    created = data_of(post(http, """
        mutation ($input: CreateTaskInput!) {
          createTask(input: $input) { id title status priority dueDate completedAt }
        }""", {"input": {"title": title, "priority": "HIGH", "dueDate": due}},
        token=session.token))["createTask"]
    assert (created["title"], created["status"], created["priority"], created["dueDate"]) == \
        (title, "TODO", "HIGH", due)
    assert created["completedAt"] is None
    task_id = created["id"]
    try:
        read = data_of(post(http, "query ($id: ID!) { task(id: $id) { id title } }",
                            {"id": task_id}, token=session.token))["task"]
        assert read == {"id": task_id, "title": title}

        done = data_of(post(http, """
            mutation ($id: ID!) {
              updateTask(id: $id, input: {status: DONE}) { status completedAt }
            }""", {"id": task_id}, token=session.token))["updateTask"]
        assert done["status"] == "DONE" and done["completedAt"]
    finally:
        deleted = data_of(post(http, "mutation ($id: ID!) { deleteTask(id: $id) }",
                               {"id": task_id}, token=session.token))["deleteTask"]
    assert deleted is True
    # A deleted task is gone: null, or null with a NOT_FOUND error.
    gone = post(http, "query ($id: ID!) { task(id: $id) { id } }", {"id": task_id},
                token=session.token)
    assert gone["data"]["task"] is None
    codes = {e.get("extensions", {}).get("code") for e in gone.get("errors") or []}
    assert codes <= {"NOT_FOUND"}, gone["errors"]
