"""`python -m gateway <command>`: the operator's command line.

  dev        everything `make run` does: services, migrations, demo data, API and worker
  serve      the production entry point (uvicorn with WORKERS processes)
  migrate    apply pending migrations
  seed       generate demo data (--users N --days D)
  services   start | stop | status the embedded PostgreSQL and Redis
  settings   list every setting with its default
  secret     print a random JWT_SECRET_KEY
  documents  add | list | show | remove trusted documents (TRUSTED_DOCUMENTS_FILE)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.ops.settings import Settings, SettingsError, documented_settings

DEMO_USERS = 50
DEMO_DAYS = 90


def _load(export: bool = True) -> Settings:
    from gateway.dev.services import resolve_services

    settings, _ = resolve_services(Settings.load(), export=export)
    return settings


def cmd_migrate(args: argparse.Namespace) -> int:
    from gateway.data.db import normalize_dsn
    from gateway.data.migrate import migrate

    settings = _load()
    applied = asyncio.run(migrate(normalize_dsn(settings.database_url or "")))
    print(f"applied {', '.join(applied)}" if applied else "database is up to date")
    return 0


async def _seed(settings: Settings, users: int, days: int, tasks: int, only_if_empty: bool) -> str:
    import asyncpg

    from gateway.data.db import normalize_dsn
    from gateway.dev.seed import seed

    conn = await asyncpg.connect(normalize_dsn(settings.database_url or ""))
    try:
        if only_if_empty and await conn.fetchval("select exists (select 1 from users)"):
            return "database already has users; not seeding"
        result = await seed(conn, users=users, days=days, tasks_per_user=tasks)
    finally:
        await conn.close()
    return (f"seeded {result.users} users, {result.tasks} tasks, {result.events} events "
            f"in {result.seconds:.1f} s")


def cmd_seed(args: argparse.Namespace) -> int:
    settings = _load()
    print(asyncio.run(_seed(settings, args.users, args.days, args.tasks, args.if_empty)))
    return 0


def cmd_services(args: argparse.Namespace) -> int:
    from gateway.dev.embedded import embedded_servers, ensure_services, stop_services

    if args.action == "start":
        services = ensure_services(None, None)
        print(f"DATABASE_URL={services.database_url}\nREDIS_URL={services.redis_url}")
    elif args.action == "stop":
        stopped = stop_services()
        print(f"stopped {', '.join(stopped)}" if stopped else "no embedded server was running")
    else:
        for server in embedded_servers():
            state = "running" if server.is_running() else "stopped"
            print(f"{type(server).__name__.removesuffix('Server')}: {state} "
                  f"(127.0.0.1:{server.port}, data in {server.data_dir})")
    return 0


def _uvicorn_options(settings: Settings) -> dict[str, Any]:
    return {
        "host": settings.host,
        "port": settings.port,
        "timeout_keep_alive": settings.keepalive,
        "timeout_graceful_shutdown": settings.timeout,
        "log_level": settings.log_level.lower(),
        "proxy_headers": True,
        "forwarded_allow_ips": ",".join(settings.trusted_proxies),
        "server_header": False,
        # WebSockets (subscriptions) on the sans-I/O implementation of the `websockets` package,
        # not the legacy one uvicorn picks by default (deprecated, warns at every connection);
        # permessage-deflate without context takeover, so that an idle socket keeps no zlib
        # state (gateway/http/live_socket.py).
        "ws": "gateway.http.live_socket:LiveWebSocketProtocol",
        "ws_per_message_deflate": settings.live_ws_deflate,
    }


def cmd_serve(args: argparse.Namespace) -> int:
    """uvicorn with `WORKERS` processes, `KEEPALIVE` and a graceful shutdown of `TIMEOUT` s (stop
    accepting, finish what is in flight, then the lifespan closes the pools). Logging is left to
    `gateway.ops.logs` (JSON or text, with request ids), whose access line replaces uvicorn's."""
    import uvicorn

    from gateway.http.persisted import trusted_for
    from gateway.ops.metrics import prepare_multiprocess_dir, start_metrics_port

    settings = _load()
    trusted_for(settings)  # a bad allow-list stops here, in one line, not in every worker
    own_directory = None
    if settings.prometheus_enabled:
        # Before any worker imports prometheus_client: with several workers the samples go to
        # files that every worker's /metrics (and PROMETHEUS_PORT, served from here) adds up.
        given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        directory = prepare_multiprocess_dir(settings.workers)
        own_directory = directory if directory and not given else None
        if settings.prometheus_port:
            start_metrics_port(settings.prometheus_port)
    try:
        uvicorn.run("gateway.http.app:serve_app", factory=True, workers=settings.workers,
                    log_config=None, access_log=False, **_uvicorn_options(settings))
    finally:
        if own_directory:
            shutil.rmtree(own_directory, ignore_errors=True)
    return 0


def _start_worker() -> subprocess.Popen[bytes] | None:
    try:
        import workers

        if not hasattr(workers, "WorkerSettings"):
            return None
    except ImportError:
        return None
    return subprocess.Popen([sys.executable, "-m", "arq", "workers.WorkerSettings"],
                            stdin=subprocess.DEVNULL)


def cmd_dev(args: argparse.Namespace) -> int:
    """Bring the whole thing up on this machine, in the foreground; Ctrl-C stops API and worker
    (the embedded databases keep running for the next time; `make stop` stops them)."""
    import uvicorn

    from gateway.data.db import normalize_dsn
    from gateway.data.migrate import migrate
    from gateway.dev.seed import DEMO_EMAIL, DEMO_PASSWORD

    settings = _load()
    applied = asyncio.run(migrate(normalize_dsn(settings.database_url or "")))
    print(f"migrations: {', '.join(applied) if applied else 'up to date'}")
    print(asyncio.run(_seed(settings, DEMO_USERS, DEMO_DAYS, 200, only_if_empty=True)))
    worker = _start_worker()
    url = f"http://{settings.host}:{settings.port}"
    print(f"\n  GraphiQL:  {url}/graphql\n  dashboard: {url}/dashboard\n  ready:     {url}/ready\n"
          f"  demo login: {DEMO_EMAIL} / {DEMO_PASSWORD}\n", flush=True)
    try:
        # As `serve` runs it: the gateway's logging (one access line per request, with its
        # request id, in LOG_FORMAT) instead of uvicorn's own access log beside it.
        uvicorn.run("gateway.http.app:serve_app", factory=True, log_config=None,
                    access_log=False, **_uvicorn_options(settings))
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGINT)
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.kill()
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    for name, default, doc in documented_settings():
        print(f"{name}={default}" + (f"    # {doc}" if doc else ""))
    return 0


def cmd_secret(args: argparse.Namespace) -> int:
    print(secrets.token_urlsafe(48))
    return 0


# --- documents: the trusted documents allow-list (gateway/http/persisted.py) -------------------


def _documents_path(args: argparse.Namespace) -> Path:
    """`--file`, else `TRUSTED_DOCUMENTS_FILE`. Read with `TRUSTED_DOCUMENTS_ONLY` off: these
    commands are how the file comes to exist, so its absence must not stop them."""
    if args.file:
        return Path(args.file)
    settings = Settings.load(environ={**os.environ, "TRUSTED_DOCUMENTS_ONLY": "false"})
    return Path(settings.trusted_documents_file)


def _read_documents(path: Path) -> dict[str, Any]:
    from gateway.http.persisted import load_trusted

    return load_trusted(path) if path.exists() else {}


def _fragments_used(node: Any, fragments: dict[str, Any], seen: list[str]) -> None:
    """The names of the fragments `node` spreads, directly or through other fragments."""
    from graphql import FragmentSpreadNode, Visitor, visit

    class Spreads(Visitor):
        def enter_fragment_spread(self, spread: FragmentSpreadNode, *_: Any) -> None:
            name = spread.name.value
            if name not in seen:
                seen.append(name)
                if name in fragments:
                    _fragments_used(fragments[name], fragments, seen)

    visit(node, Spreads())


def operation_documents(files: list[Path]) -> tuple[list[tuple[str, str | None, str]],
                                                     list[str]]:
    """Each operation of `files` as `(body, name, file)`, and the problems found (syntax, schema
    validation, no operation). A body is the operation and the fragments it uses (from any of
    the files), printed by graphql-core: the text a client sends (graphql-js `print` gives the
    same), whatever the files' layout and comments."""
    from graphql import (
        DocumentNode,
        FragmentDefinitionNode,
        GraphQLError,
        OperationDefinitionNode,
        Source,
        parse,
        print_ast,
        validate,
    )

    from schema.schema import schema

    problems: list[str] = []
    operations: list[tuple[OperationDefinitionNode, str]] = []
    fragments: dict[str, FragmentDefinitionNode] = {}
    for path in files:
        try:
            document = parse(Source(path.read_text(encoding="utf-8"), str(path)))
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}")
            continue
        except GraphQLError as exc:
            problems.append(_located(exc, str(path)))
            continue
        found = [node for node in document.definitions if isinstance(node, OperationDefinitionNode)]
        if not found and not any(isinstance(node, FragmentDefinitionNode)
                                 for node in document.definitions):
            problems.append(f"{path}: no operation in the file")
        operations.extend((node, str(path)) for node in found)
        for node in document.definitions:
            if isinstance(node, FragmentDefinitionNode):
                if node.name.value in fragments:
                    problems.append(_located(GraphQLError(
                        f"fragment {node.name.value} is defined twice", node), str(path)))
                fragments[node.name.value] = node
    if not operations and not problems:
        problems.append("no operation in the files")
    documents = []
    for operation, source in operations:
        used: list[str] = []
        _fragments_used(operation, fragments, used)
        own = DocumentNode(definitions=(operation, *(fragments[name] for name in fragments
                                                       if name in used)))
        name = operation.name.value if operation.name else None
        errors = validate(schema._schema, own)
        problems.extend(_located(error, source) for error in errors)
        if not errors:
            documents.append((print_ast(own), name, source))
    return documents, problems


def _located(error: Any, fallback: str) -> str:
    """`file:line:column: message` for a graphql-core error."""
    source = getattr(error, "source", None)
    where = getattr(source, "name", None) or fallback
    if error.locations:
        line, column = error.locations[0].line, error.locations[0].column
        return f"{where}:{line}:{column}: {error.message}"
    return f"{where}: {error.message}"


def cmd_documents(args: argparse.Namespace) -> int:
    from gateway.http.persisted import TrustedDocument, document_hash, save_trusted

    if args.action != "list" and not args.items:
        what = "FILE.graphql" if args.action == "add" else "HASH"
        print(f"error: documents {args.action} needs at least one {what}", file=sys.stderr)
        return 2
    path = _documents_path(args)
    try:
        listed = _read_documents(path)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.action == "list":
        for query_hash, doc in sorted(listed.items(), key=lambda item: item[1].name or ""):
            print(f"{query_hash}  {doc.name or '(anonymous)'}  {doc.source or ''}".rstrip())
        return 0
    if args.action == "show":
        for query_hash in args.items:
            if query_hash not in listed:
                print(f"error: {query_hash} is not in {path}", file=sys.stderr)
                return 1
            print(listed[query_hash].body)
        return 0
    if args.action == "remove":
        unknown = [query_hash for query_hash in args.items if query_hash not in listed]
        if unknown:
            print(f"error: not in {path}: {', '.join(unknown)}; nothing removed", file=sys.stderr)
            return 1
        save_trusted(path, {h: doc for h, doc in listed.items() if h not in args.items})
        print(f"removed {len(args.items)} document(s) from {path}")
        return 0
    documents, problems = operation_documents([Path(name) for name in args.items])
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        print(f"nothing written to {path}", file=sys.stderr)
        return 1
    added = dict(listed)
    for body, name, source in documents:
        query_hash = document_hash(body)
        state = "unchanged" if query_hash in listed else "added"
        added[query_hash] = TrustedDocument(body, name, source)
        print(f"{state} {query_hash}  {name or '(anonymous)'}  {source}")
    save_trusted(path, added)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    commands: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
        "dev": (cmd_dev, "services, migrations, demo data, API and worker (make run)"),
        "serve": (cmd_serve, "run the API with uvicorn (production entry point)"),
        "migrate": (cmd_migrate, "apply pending migrations"),
        "seed": (cmd_seed, "generate demo data"),
        "services": (cmd_services, "embedded PostgreSQL and Redis"),
        "settings": (cmd_settings, "list every setting and its default"),
        "secret": (cmd_secret, "print a random secret for JWT_SECRET_KEY"),
        "documents": (cmd_documents, "the trusted documents allow-list (TRUSTED_DOCUMENTS_FILE)"),
    }
    parsers = {}
    for name, (func, help_text) in commands.items():
        parsers[name] = sub.add_parser(name, help=help_text)
        parsers[name].set_defaults(func=func)
    parsers["seed"].add_argument("--users", type=int, default=DEMO_USERS)
    parsers["seed"].add_argument("--days", type=int, default=DEMO_DAYS)
    parsers["seed"].add_argument("--tasks", type=int, default=200, help="tasks per user")
    parsers["seed"].add_argument("--if-empty", action="store_true",
                                 help="do nothing when the database already has users")
    parsers["services"].add_argument("action", choices=("start", "stop", "status"))
    parsers["documents"].add_argument(
        "action", choices=("add", "list", "show", "remove"),
        help="add FILE.graphql...: each operation, validated against the schema; list; "
             "show HASH...: the text to send; remove HASH...")
    parsers["documents"].add_argument("items", nargs="*", metavar="FILE|HASH")
    parsers["documents"].add_argument("--file", help="the allow-list (default "
                                      "TRUSTED_DOCUMENTS_FILE)")
    for extend in _extensions():
        extend(sub)
    return parser


def _extensions() -> list[Callable[[Any], None]]:
    """Sub-commands that live with their domain (e.g. `jobs` in workers/cli.py)."""
    found: list[Callable[[Any], None]] = []
    try:
        from workers.cli import add_parser as add_jobs_parser

        found.append(add_jobs_parser)
    except ImportError:
        pass
    return found


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader left early (`python -m gateway jobs list | head`): not an error. Point
        # stdout at /dev/null so that the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
