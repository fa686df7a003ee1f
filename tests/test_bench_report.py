"""The pure parts of `make bench` (bench/): wrk figures, ratios to baselines, targets, the
table and the JSON file, the profile summary, and the baseline's id substitution. The benchmark
itself is not run here."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from bench.baseline import substitute
from bench.report import (
    Job,
    Report,
    Run,
    apply_baselines,
    evaluate_targets,
    parse_wrk,
    render,
)
from bench.run import BASELINES, Config, hot_spots

WRK_SUMMARY = {"requests": 2000, "duration_us": 8_000_000, "connect": 0, "read": 1, "write": 0,
               "status": 2, "timeout": 0, "graphql_errors": 3, "p50": 4_200, "p95": 9_870,
               "p99": 15_050, "max": 40_000}


def _run(scenario: str, users: int = 10_000, c: int = 1, rps: float = 100, p50: float = 10,
         **kw: object) -> Run:
    return Run(scenario, users, c, requests=int(rps * 8), seconds=8, rps=rps, p50_ms=p50,
               p95_ms=p50 * 2, p99_ms=p50 * 3, **kw)  # type: ignore[arg-type]


def test_wrk_figures_are_converted_to_milliseconds_and_every_error_kind_is_counted() -> None:
    figures = parse_wrk(WRK_SUMMARY)
    assert figures == {"requests": 2000, "seconds": 8.0, "rps": 250.0, "p50_ms": 4.2,
                       "p95_ms": 9.87, "p99_ms": 15.05, "errors": 6}


def test_a_run_without_requests_has_no_latency_rather_than_zero() -> None:
    figures = parse_wrk({**WRK_SUMMARY, "requests": 0, "p50": 0, "p95": 0, "p99": 0})
    assert figures["rps"] == 0.0
    assert figures["p50_ms"] is None


def test_ratios_compare_with_the_baseline_of_the_same_dataset_and_concurrency() -> None:
    runs = [
        _run("baseline redis dashboard", c=1, rps=1000, p50=1.0, kind="baseline"),
        _run("baseline redis dashboard", c=16, rps=4000, p50=4.0, kind="baseline"),
        _run("dashboard warm", c=1, rps=500, p50=2.0),
        _run("dashboard warm", c=16, rps=3000, p50=5.0),
        _run("dashboard warm", users=1000, c=16, rps=10, p50=5.0),  # no baseline at 1000 users
    ]
    apply_baselines(runs, BASELINES)
    assert (runs[2].rps_ratio, runs[2].p50_ratio) == (0.5, 2.0)
    assert (runs[3].rps_ratio, runs[3].p50_ratio) == (0.75, 1.25)
    assert runs[4].baseline == "baseline redis dashboard"
    assert runs[4].rps_ratio is None and runs[4].p50_ratio is None
    assert runs[0].baseline is None  # a baseline has no baseline


def test_targets_are_met_missed_or_not_measured() -> None:
    runs = [
        _run("baseline redis dashboard", c=16, rps=4000, p50=3, kind="baseline"),
        _run("dashboard warm", c=1, rps=800, p50=1.5, peak_rss_mib=120),
        _run("dashboard warm", c=16, rps=2400, p50=6, peak_rss_mib=150),
        _run("dashboard cold", c=1, rps=90, p50=12, queries_per_request=4,
             peak_rss_mib=150),
        _run("dashboard cold", users=1000, c=1, rps=95, p50=11),
        _run("admin cold", c=1, rps=15, p50=70, queries_per_request=3, errors=1),
    ]
    apply_baselines(runs, BASELINES)
    jobs = [Job("aggregate one day", 10_000, 2.5, 9_000), Job("backfill 365 days", 10_000, 0, 0,
                                                              skipped="not built yet")]
    verdicts = {t.name: t.met for t in evaluate_targets(runs, jobs, main_users=10_000)}
    assert verdicts["uncached dashboard p50"] is True
    assert verdicts["cached dashboard throughput vs bare Redis endpoint"] is True  # 60%
    assert verdicts["cached dashboard p50 vs uncached"] is True  # 12 / 1.5 = 8x
    assert verdicts["admin query (100 users) uncached p50"] is False
    assert verdicts["SQL statements per request independent of users asked for"] is True
    assert verdicts["no errors under load"] is False
    assert verdicts["API RSS"] is True
    assert verdicts["aggregate one day (10000 users)"] is True
    assert verdicts["backfill 365 days (10000 users)"] is None
    assert verdicts["uncached dashboard p50 flat from 1000 to 10000 users"] is True


def test_missing_scenarios_are_never_reported_as_met() -> None:
    runs = [Run("dashboard cold", 10_000, 1, skipped="schema has no Query.overview")]
    targets = evaluate_targets(runs, [], main_users=10_000)
    assert all(t.met is None for t in targets)


def test_the_table_shows_figures_ratios_and_skip_reasons(tmp_path: Path) -> None:
    runs = [
        _run("baseline sql dashboard", c=1, rps=200, p50=5, kind="baseline",
             statements_per_request=4, queries_per_request=4),
        _run("dashboard cold", c=1, rps=100, p50=10, statements_per_request=20,
             queries_per_request=4),
        Run("admin cold", 10_000, 1, skipped="schema has no User.overview"),
    ]
    apply_baselines(runs, BASELINES)
    report = Report(machine={"cores": 2}, config={"users": 10_000}, runs=runs,
                    jobs=[Job("seed", 10_000, 60.0, 7_000_000)])
    text = render(report)
    assert "50%, 2.00x of baseline sql dashboard" in text
    assert "4.0 (20.0)" in text
    assert "skipped: schema has no User.overview" in text
    assert "7,000,000" in text and "116667" in text
    assert render(report, markdown=True).splitlines()[1].startswith("| --- |")
    path = tmp_path / "out" / "2026-01-01.json"
    report.write(path)
    written = json.loads(path.read_text())
    assert written["runs"][1]["rps_ratio"] == 0.5
    assert written["jobs"][0]["rows_per_second"] == 7_000_000 / 60


def test_quick_mode_and_size_flags_choose_the_datasets() -> None:
    quick = Config.from_env({"BENCH_QUICK": "1"})
    assert (quick.users, quick.sizes, quick.duration) == (1000, [1000], 3)
    assert quick.out.name.endswith("-quick.json")
    full = Config.from_env({"BENCH_LARGE": "1"})
    assert (full.users, full.sizes) == (10_000, [1000, 10_000, 100_000])
    small = Config.from_env({"BENCH_USERS": "2000", "BENCH_CONCURRENCY": "1,4,32"})
    assert (small.sizes, small.concurrency) == ([1000, 2000], [1, 4, 32])


def test_profile_summary_ranks_lines_by_self_time(tmp_path: Path) -> None:
    raw = tmp_path / "profile.raw"
    raw.write_text("main (gateway/http/app.py:10);fetch (loaders/analytics.py:102) 30\n"
                   "main (gateway/http/app.py:10);dumps (orjson) 10\n")
    summary = hot_spots(raw)
    lines = summary.splitlines()
    assert lines[0] == "40 samples; top self time:"
    assert lines[1].strip() == "75.0%  fetch (loaders/analytics.py:102)"
    assert "100.0%  main (gateway/http/app.py:10)" in summary


def test_the_sql_baseline_replays_a_request_as_another_user() -> None:
    recorded, caller, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    args = ([recorded, other], str(recorded), 101, None)
    assert substitute(args, recorded, caller) == ([caller, other], str(caller), 101, None)


def test_a_written_report_reads_back_the_same(tmp_path: Path) -> None:
    runs = [_run("dashboard cold", statements_per_request=20, queries_per_request=4),
            Run("admin cold", 10_000, 1, skipped="schema has no User.overview")]
    report = Report(machine={"cores": 2}, config={}, runs=runs,
                    jobs=[Job("seed", 10_000, 60.0, 7_000_000)])
    report.targets = evaluate_targets(runs, report.jobs, 10_000)
    report.write(tmp_path / "r.json")
    again = Report.from_json(json.loads((tmp_path / "r.json").read_text()))
    assert render(again, markdown=True) == render(report, markdown=True)


def test_scaling_is_judged_relative_to_the_bare_endpoint_measured_at_the_same_time() -> None:
    runs = [
        _run("baseline redis dashboard", users=1000, p50=4.0, kind="baseline"),
        _run("dashboard cold", users=1000, p50=40.0),  # a busy machine at that moment
        _run("baseline redis dashboard", users=10_000, p50=1.0, kind="baseline"),
        _run("dashboard cold", users=10_000, p50=15.0),
    ]
    targets = evaluate_targets(runs, [], 10_000)
    target = next(t for t in targets if t.name.startswith("uncached dashboard p50 flat"))
    assert target.measured == "0.38x raw, 1.50x relative to the bare Redis endpoint"
    assert target.met is True
