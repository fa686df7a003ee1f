"""Cron strings of the settings → arq `cron()` arguments, checked against arq's own scheduler."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from arq.cron import next_cron

from gateway.ops.settings import Settings, SettingsError
from workers.cron import CronError, cron_arguments, parse_cron
from workers.settings import build_worker_settings

ROOT = Path(__file__).resolve().parent.parent


def upcoming(expression: str, start: datetime, count: int = 4) -> list[datetime]:
    """The next `count` times arq would run a job with these arguments, after `start`."""
    kwargs = parse_cron(expression)
    times, moment = [], start
    for _ in range(count):
        moment = next_cron(moment, **kwargs, microsecond=0)
        times.append(moment)
    return times


def test_default_schedules_become_the_times_they_say() -> None:
    start = datetime(2026, 3, 1, 0, 30, tzinfo=UTC)  # a Sunday
    assert parse_cron("0 1 * * *") == {"minute": {0}, "hour": {1}, "second": 0}
    assert upcoming("0 1 * * *", start, 2) == [datetime(2026, 3, 1, 1, 0, tzinfo=UTC),
                                               datetime(2026, 3, 2, 1, 0, tzinfo=UTC)]
    assert upcoming("0 */6 * * *", start) == [datetime(2026, 3, 1, h, 0, tzinfo=UTC)
                                              for h in (6, 12, 18)] + [
        datetime(2026, 3, 2, 0, 0, tzinfo=UTC)]


@pytest.mark.parametrize(("expression", "expected"), [
    ("*/15 * * * *", {"minute": {0, 15, 30, 45}}),
    ("5,35 8-10 * * *", {"minute": {5, 35}, "hour": {8, 9, 10}}),
    ("0 9-17/4 * * *", {"minute": {0}, "hour": {9, 13, 17}}),
    ("30 2 1 jan,jul *", {"minute": {30}, "hour": {2}, "day": {1}, "month": {1, 7}}),
    ("0 0 * * mon-fri", {"minute": {0}, "hour": {0}, "weekday": {0, 1, 2, 3, 4}}),
    ("0 0 * * 0", {"minute": {0}, "hour": {0}, "weekday": {6}}),   # cron Sunday → arq 6
    ("0 0 * * 7", {"minute": {0}, "hour": {0}, "weekday": {6}}),   # 7 is Sunday too
    ("0 0 * * 0-7", {"minute": {0}, "hour": {0}}),                 # every day: no restriction
    ("10/20 * * * *", {"minute": {10, 30, 50}}),
    ("@daily", {"minute": {0}, "hour": {0}}),
    ("@hourly", {"minute": {0}}),
    ("@weekly", {"minute": {0}, "hour": {0}, "weekday": {6}}),
])
def test_supported_expressions(expression: str, expected: dict[str, set[int]]) -> None:
    assert parse_cron(expression) == {**expected, "second": 0}


def test_weekday_schedule_runs_on_the_right_days() -> None:
    start = datetime(2026, 3, 6, 12, 0, tzinfo=UTC)  # a Friday, after 09:00
    runs = upcoming("0 9 * * 1-5", start, 3)
    assert [r.strftime("%a %H:%M") for r in runs] == ["Mon 09:00", "Tue 09:00", "Wed 09:00"]


@pytest.mark.parametrize("expression", [
    "", "* * * *", "* * * * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *",
    "* * * * 8", "0 1 1 * 1", "0 1 L * *", "0 1 * * 1#2", "0 1 ? * *", "@reboot",
    "*/0 * * * *", "5-1 * * * *", "a * * * *", "1,,2 * * * *",
])
def test_unsupported_expressions_are_refused(expression: str) -> None:
    with pytest.raises(CronError):
        parse_cron(expression)


def test_error_names_the_setting() -> None:
    with pytest.raises(SettingsError, match=r"^CACHE_WARMING_SCHEDULE: .*'0 \*/6 L \* \*'"):
        cron_arguments("CACHE_WARMING_SCHEDULE", "0 */6 L * *")


def test_bad_schedule_refused_even_when_its_job_is_off() -> None:
    settings = replace(Settings.load(environ={}, env_file=None),
                       enable_daily_aggregation=False, aggregation_schedule="0 25 * * *")
    with pytest.raises(SettingsError, match="^AGGREGATION_SCHEDULE: hour: 25"):
        build_worker_settings(settings)


def test_schedules_and_switches_reach_the_worker() -> None:
    base = Settings.load(environ={}, env_file=None)
    both = build_worker_settings(replace(base, aggregation_schedule="15 3 * * *"))
    [nightly, warming] = both.cron_jobs
    assert (nightly.name, nightly.hour, nightly.minute) == ("cron:aggregate_nightly", {3}, {15})
    assert (warming.name, warming.hour) == ("cron:warm_cache", {0, 6, 12, 18})
    assert nightly.timeout_s == base.job_timeout and both.job_timeout == base.job_timeout
    none = build_worker_settings(replace(base, enable_daily_aggregation=False,
                                         enable_cache_warming=False))
    assert none.cron_jobs == []


def test_arq_refuses_to_start_with_one_line_naming_the_setting() -> None:
    env = {**os.environ, "AGGREGATION_SCHEDULE": "0 1 * * * *",
           "DATABASE_URL": "postgresql://unused@127.0.0.1:1/x", "REDIS_URL": "redis://127.0.0.1:1"}
    done = subprocess.run([sys.executable, "-m", "arq", "workers.WorkerSettings"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == ("configuration error: AGGREGATION_SCHEDULE: expected 5 fields "
                                   "(minute hour day month weekday), got 6 in '0 1 * * * *'")
