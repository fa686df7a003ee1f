"""`python -m gateway jobs ...`: enqueue, inspect and abort the worker's jobs.

  jobs enqueue aggregate --from D --to D [--user ID ...]   backfill local days D..D
  jobs enqueue warm-cache                                  warm the active users' dashboards
  jobs status JOB_ID                                       where a job is, and its result
  jobs list                                                queued jobs and recent results
  jobs abort JOB_ID                                        drop a queued job or cancel a running one

Each prints one readable line per job and exits 0 on success, 1 when the job is unknown, failed or
could not be aborted, 2 on bad arguments or settings. Only Redis is needed (the worker does the
work), so the CLI never opens the database.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Any

from arq.connections import ArqRedis, create_pool
from arq.constants import default_queue_name, job_key_prefix
from arq.jobs import Job, JobDef, JobResult, JobStatus
from redis.exceptions import RedisError

from domain.changes import AGGREGATE_JOB, WARM_CACHE_JOB
from gateway.data.resources import arq_redis_settings
from gateway.ops import tracing
from gateway.ops.settings import Settings

ABORT_WAIT_S = 10.0
MAX_BACKFILL_DAYS = 3660  # ten years: anything longer is a typo


def _settings() -> Settings:
    settings = Settings.load()
    if not settings.redis_url:
        from gateway.dev.services import resolve_services

        settings, _ = resolve_services(settings, export=False)
    return settings


async def _with_arq(action: Callable[[ArqRedis], Awaitable[int]],
                    command: str | None = None) -> int:
    """Run `action` with an arq pool; a `command` that enqueues is traced when
    `OTEL_TRACES_EXPORTER` says so, and its job continues that trace (workers/metrics.py)."""
    settings = _settings()
    if command is None or not tracing.configure(settings):
        return await _run_with_arq(action, settings)
    try:
        with tracing.command_span(command):
            return await _run_with_arq(action, settings)
    finally:
        tracing.flush()


async def _run_with_arq(action: Callable[[ArqRedis], Awaitable[int]],
                        settings: Settings) -> int:
    redis_settings = arq_redis_settings(settings)
    redis_settings.conn_retries = 0
    try:
        arq = await create_pool(redis_settings)
    except (OSError, RedisError) as exc:
        print(f"cannot reach Redis at {redis_settings.host}:{redis_settings.port}: {exc}")
        return 1
    try:
        return await action(arq)
    finally:
        await arq.aclose()


def _iso(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"


def _arg(value: Any) -> str:
    """A job argument as an operator would write it: dates and ids bare, lists bracketed."""
    if isinstance(value, date | uuid.UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return f"[{', '.join(_arg(v) for v in value)}]"
    return repr(value)


def _call(job: JobDef) -> str:
    parts = [_arg(a) for a in job.args] + [f"{k}={_arg(v)}" for k, v in job.kwargs.items()
                                           if k != tracing.JOB_TRACE_KWARG]
    return f"{job.function}({', '.join(parts)})"


def _describe_result(result: JobResult) -> str:
    outcome = "succeeded" if result.success else "failed"
    if isinstance(result.result, BaseException):
        detail = f"{type(result.result).__name__}: {result.result}".rstrip(": ")
    else:
        detail = repr(result.result)
    return (f"{result.job_id}: {outcome} {_call(result)} try {result.job_try}, "
            f"finished {_iso(result.finish_time)} -> {detail}")


# --- commands ------------------------------------------------------------------------------------


async def _enqueue(arq: ArqRedis, function: str, *args: Any, what: str) -> int:
    with tracing.enqueueing(function) as trace_kwargs:
        job = await arq.enqueue_job(function, *args, **trace_kwargs)
    if job is None:  # only possible with a fixed id; kept for safety
        print(f"not enqueued: {what} is already queued")
        return 1
    print(f"enqueued {what}: job {job.job_id}")
    return 0


def cmd_enqueue(args: argparse.Namespace) -> int:
    if args.job == "aggregate":
        if args.d_from > args.d_to:
            args.parser.error(f"--from {args.d_from} is after --to {args.d_to}")
        if (args.d_to - args.d_from).days >= MAX_BACKFILL_DAYS:
            args.parser.error(f"at most {MAX_BACKFILL_DAYS} days at a time")
        users = list(dict.fromkeys(args.user)) if args.user else None
        who = f"{len(users)} user(s)" if users else "all users"
        return asyncio.run(_with_arq(lambda arq: _enqueue(
            arq, AGGREGATE_JOB, args.d_from, args.d_to, users,
            what=f"aggregate {args.d_from}..{args.d_to} for {who}"),
            command="jobs enqueue aggregate"))
    return asyncio.run(_with_arq(lambda arq: _enqueue(arq, WARM_CACHE_JOB,
                                                      what="warm-cache"),
                                 command="jobs enqueue warm-cache"))


async def _status(arq: ArqRedis, job_id: str) -> int:
    job = Job(job_id, arq)
    status = await job.status()
    if status == JobStatus.complete:
        result = await job.result_info()
        if result is not None:
            result.job_id = job_id
            print(_describe_result(result))
            return 0 if result.success else 1
    info = await job.info()
    if status == JobStatus.not_found or info is None:
        print(f"{job_id}: not found (never queued, or its result has expired)")
        return 1
    when = ""
    if status == JobStatus.deferred and info.score:
        when = f", runs at {_iso(datetime.fromtimestamp(info.score / 1000, UTC))}"
    print(f"{job_id}: {status.value} {_call(info)} try {info.job_try or 1}, "
          f"enqueued {_iso(info.enqueue_time)}{when}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    return asyncio.run(_with_arq(lambda arq: _status(arq, args.job_id)))


async def _list(arq: ArqRedis) -> int:
    queued = []
    for job_id, score in await arq.zrange(default_queue_name, 0, -1, withscores=True):
        job = Job(job_id.decode(), arq)
        info = await job.info()
        if info is None:  # finished between the two reads
            continue
        status = await job.status()
        queued.append((score, job_id.decode(), status, info))
    results = await arq.all_job_results()
    if not queued and not results:
        print("no queued jobs and no recent results")
        return 0
    for _, job_id, status, info in sorted(queued, key=lambda item: item[0]):
        print(f"{job_id}: {status.value} {_call(info)} enqueued {_iso(info.enqueue_time)}")
    for result in sorted(results, key=lambda r: r.finish_time, reverse=True):
        print(_describe_result(result))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    return asyncio.run(_with_arq(_list))


async def _abort(arq: ArqRedis, job_id: str, wait: float) -> int:
    job = Job(job_id, arq)
    status = await job.status()
    if status in (JobStatus.queued, JobStatus.deferred):
        # Not started: take it off the queue ourselves, so that no worker needs to be running.
        async with arq.pipeline(transaction=True) as pipe:
            pipe.zrem(default_queue_name, job_id)
            pipe.delete(job_key_prefix + job_id)
            removed, _ = await pipe.execute()
        if removed:
            print(f"{job_id}: removed from the queue before it started")
            return 0
        status = await job.status()  # a worker took it meanwhile
    if status != JobStatus.in_progress:
        print(f"{job_id}: cannot abort, job is {status.value.replace('_', ' ')}")
        return 1
    try:
        aborted = await job.abort(timeout=wait, poll_delay=0.2)
    except TimeoutError:
        print(f"{job_id}: abort requested, but the job was still running after {wait:g} s")
        return 1
    if aborted:
        print(f"{job_id}: aborted while running")
        return 0
    print(f"{job_id}: not aborted (it finished first)")
    return 1


def cmd_abort(args: argparse.Namespace) -> int:
    return asyncio.run(_with_arq(lambda arq: _abort(arq, args.job_id, args.wait)))


# --- argument parsing ----------------------------------------------------------------------------


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


def _user_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a user id (UUID), got {text!r}") from None


def add_parser(sub: Any) -> None:
    """Register `jobs` on the `python -m gateway` sub-parsers (called by gateway/cli.py)."""
    jobs = sub.add_parser("jobs", help="enqueue, inspect and abort background jobs",
                          description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = jobs.add_subparsers(dest="jobs_command", required=True)

    enqueue = actions.add_parser("enqueue", help="queue a job for the worker")
    kinds = enqueue.add_subparsers(dest="job", required=True)
    aggregate = kinds.add_parser("aggregate", help="backfill daily_analytics over local days")
    aggregate.add_argument("--from", dest="d_from", type=_day, required=True, metavar="D",
                           help="first local day, YYYY-MM-DD")
    aggregate.add_argument("--to", dest="d_to", type=_day, required=True, metavar="D",
                           help="last local day, inclusive")
    aggregate.add_argument("--user", type=_user_id, action="extend", nargs="+", metavar="ID",
                           help="only these users (`--user A B` or `--user A --user B`); "
                                "default every user")
    aggregate.set_defaults(func=cmd_enqueue, parser=aggregate)
    warm = kinds.add_parser("warm-cache", help="warm the dashboards of recently active users")
    warm.set_defaults(func=cmd_enqueue, parser=warm)

    status = actions.add_parser("status", help="state and result of one job")
    status.add_argument("job_id", metavar="JOB_ID")
    status.set_defaults(func=cmd_status)

    listing = actions.add_parser("list", help="queued jobs and recent results")
    listing.set_defaults(func=cmd_list)

    abort = actions.add_parser("abort", help="drop a queued job or cancel a running one")
    abort.add_argument("job_id", metavar="JOB_ID")
    abort.add_argument("--wait", type=float, default=ABORT_WAIT_S, metavar="SECONDS",
                       help="how long to wait for a running job to stop")
    abort.set_defaults(func=cmd_abort)
