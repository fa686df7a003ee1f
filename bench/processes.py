"""The processes a benchmark run starts: servers on free ports in process groups of their own,
waited for until they answer, stopped with everything they started; their memory; the log line.

Shared by `bench.run` (the HTTP scenarios), `bench.live` (the subscription scenarios) and the
micro-benchmarks (`traced_children`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx

from gateway.dev.embedded import free_port

ROOT = Path(__file__).resolve().parents[1]
# The benchmark's own PostgreSQL cluster and the servers' logs (kept between runs).
BENCH_DATA_DIR = ROOT / ".data" / "bench"


def log(message: str) -> None:
    print(f"[bench {datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def stop_process(process: subprocess.Popen[bytes], grace: float = 10) -> None:
    """SIGTERM the process group (uvicorn and anything it started), then SIGKILL if needed."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=grace)


def start_server(name: str, argv: list[str], env: dict[str, str]) -> Server:
    """`python argv...` on a free port (`PORT` in its environment, `{port}` in `argv`), in a
    process group of its own so that it can be stopped with everything it started."""
    port = free_port()
    log_dir = BENCH_DATA_DIR / "logs"  # kept after the run, for a server that failed
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    process = subprocess.Popen(
        [sys.executable, *(a.replace("{port}", str(port)) for a in argv)],
        env={**env, "PORT": str(port)}, cwd=ROOT,
        stdin=subprocess.DEVNULL, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True)
    return Server(name, port, process, log_path)


def wait_healthy(server: Server, path: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited; see {server.log_path}:\n"
                               + server.log_path.read_text()[-3000:])
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.url + path, timeout=2).status_code < 500:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{server.name} did not answer {path} within {timeout:.0f} s")


def peak_rss_mib(pid: int) -> float | None:
    """The process's peak resident set (VmHWM) so far."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def rss_mib(pid: int) -> float | None:
    """The process's resident set (VmRSS) now."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def traced_children(module: str, children: list[tuple[list[str], str]], prefix: str) -> None:
    """Run `python -m module ARGS` for each (ARGS, sampling ratio) of `children`, one after the
    other, as production runs the API (`APP_ENV=production`) with tracing sampled at that ratio
    (`parentbased_traceidratio`) and exporting to a `bench.otlp_sink` started here under
    `prefix`, stopped at the end, errors included: the micro-benchmarks' way
    (bench/micro_tracing.py, bench/micro_app.py)."""
    sink = start_server(f"otlp-sink-{prefix}", ["-m", "bench.otlp_sink"],
                        dict(os.environ))
    try:
        wait_healthy(sink, "/stats")
        for args, sampling in children:
            subprocess.run([sys.executable, "-m", module, *args], check=True, env={
                **os.environ, "APP_ENV": "production",
                "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
                "JWT_SECRET_KEY": os.environ.get("JWT_SECRET_KEY", "k" * 64),
                "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": sampling,
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{sink.url}/{prefix}/v1/traces",
            })
    finally:
        stop_process(sink.process)
