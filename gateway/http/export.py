"""`GET /export/tasks.csv`: the caller's tasks as CSV, streamed from PostgreSQL's COPY.

The rows never sit in memory whole: a producer task runs `COPY (select …) TO STDOUT` through
asyncpg's `copy_from_query`, batches its output into ~64 KiB chunks and puts them on a small
bounded queue that the response body drains, so a slow client slows the COPY down rather than
filling the server's memory.

Headers go out before the first row, so whether the export was cut at `MAX_EXPORT_ROWS` is known
up front: a count capped at the limit + 1 runs first, in the same REPEATABLE READ snapshot as the
COPY (a task created between the two cannot make the header lie). The response says
`X-Export-Truncated: true` when rows were left out, and `X-Export-Rows` how many it holds.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import asyncpg
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from gateway.data.db import query
from gateway.data.resources import Resources
from gateway.errors import BadUserInput, Unauthenticated
from gateway.http.bodies import error_body
from gateway.http.identity import Account, account_of, identify, verified_caller
from resolvers.tasks import like_pattern
from schema.extensions.errors import replacement_for
from schema.extensions.input_check import unstorable

log = logging.getLogger(__name__)

STATUSES = ("todo", "in_progress", "done")
PRIORITIES = ("low", "medium", "high")
PARAMETERS = ("status", "priority", "due_from", "due_to", "search")
CHUNK_BYTES = 64 * 1024   # batch COPY's per-row messages into chunks of about this size
QUEUE_CHUNKS = 8          # chunks buffered between the COPY and the client
STALL_TIMEOUT = 60.0      # seconds a client may stop reading before the export is abandoned
EXPORT_TIMEOUT = 300      # seconds one export may take at most (statement_timeout of the COPY)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class BadFilter(ValueError):
    """A query parameter the export cannot use; the message is shown to the client, `field`
    names the parameter."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def parse_filters(params: QueryParams) -> tuple[str | None, str | None, date | None,
                                                date | None, str | None]:
    """The SQL filter parameters ($2..$6 of export_tasks) from the query string."""
    unknown = sorted(set(params.keys()) - set(PARAMETERS))
    if unknown:
        raise BadFilter(f"unknown parameter {unknown[0]!r}; use {', '.join(PARAMETERS)}",
                        unknown[0])
    values: dict[str, str] = {}
    for name in PARAMETERS:
        given = params.getlist(name)
        if len(given) > 1:
            raise BadFilter(f"{name} given more than once", name)
        if given and given[0].strip():
            values[name] = given[0].strip()

    def choice(name: str, allowed: tuple[str, ...]) -> str | None:
        if name not in values:
            return None
        value = values[name].lower()
        if value not in allowed:
            raise BadFilter(f"{name} must be one of {', '.join(allowed)}, "
                            f"got {values[name]!r}", name)
        return value

    def day(name: str) -> date | None:
        if name not in values:
            return None
        try:
            if not _DATE.match(values[name]):
                raise ValueError(values[name])
            return date.fromisoformat(values[name])
        except ValueError:
            raise BadFilter(f"{name} must be a date YYYY-MM-DD, "
                            f"got {values[name]!r}", name) from None

    due_from, due_to = day("due_from"), day("due_to")
    if due_from and due_to and due_from > due_to:
        raise BadFilter("due_from must not be after due_to", "due_from")
    search = values.get("search")
    if search and unstorable(search):  # PostgreSQL's text cannot hold a NUL
        raise BadFilter("search must not contain a NUL character or an unpaired surrogate",
                        "search")
    return (choice("status", STATUSES), choice("priority", PRIORITIES), due_from, due_to,
            like_pattern(search) if search else None)


class _CopyStream:
    """One export: a producer task running count + COPY, and the queue the response reads."""

    def __init__(self, pool: asyncpg.Pool, args: tuple[Any, ...], limit: int) -> None:
        self.pool = pool
        self.args = args
        self.limit = limit
        self.queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(QUEUE_CHUNKS)
        self.buffer = bytearray()
        self.counted: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[None] | None = None
        self.abandoned = False  # the reader is gone: the COPY runs out, discarding
        self.copying = False

    async def start(self) -> int:
        """Start the producer; the number of matching rows, counted no further than limit + 1."""
        self.task = asyncio.create_task(self._produce())
        return await self.counted

    async def _put(self, item: bytes | BaseException | None) -> None:
        if self.abandoned:
            return
        # The timeout frees the connection when nobody reads any more (a client that went away
        # before the body was ever iterated leaves no one to cancel this task).
        await asyncio.wait_for(self.queue.put(item), STALL_TIMEOUT)

    async def _collect(self, data: bytes) -> None:
        if self.abandoned:
            return
        self.buffer += data
        if len(self.buffer) >= CHUNK_BYTES:
            chunk, self.buffer = bytes(self.buffer), bytearray()
            await self._put(chunk)

    async def _produce(self) -> None:
        try:
            async with self.pool.acquire() as conn, conn.transaction(
                    isolation="repeatable_read", readonly=True):
                await conn.execute(f"set local statement_timeout = '{EXPORT_TIMEOUT}s'")
                total = await conn.fetchval(query("export_tasks_count"), *self.args,
                                            self.limit + 1)
                self.counted.set_result(total)
                self.copying = True
                await conn.copy_from_query(query("export_tasks"), *self.args, self.limit,
                                           output=self._collect, format="csv", header=True,
                                           timeout=EXPORT_TIMEOUT)
            if self.buffer:
                await self._put(bytes(self.buffer))
            await self._put(None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not self.counted.done():
                self.counted.set_exception(exc)
                return
            log.warning("export stopped: %s", type(exc).__name__)
            try:
                await self._put(exc)
            except TimeoutError:
                pass  # nobody is reading: nothing to tell

    def cancel(self) -> None:
        """The reader is gone. Before the COPY the producer is cancelled; during it, the COPY runs
        out with its rows discarded (at most `MAX_EXPORT_ROWS`, a moment's work): cancelling
        asyncpg mid-COPY could hold the connection for a long time. Either way the connection
        goes back to the pool."""
        self.abandoned = True
        while not self.queue.empty():  # unblock a producer waiting for room
            self.queue.get_nowait()
        if self.task is not None and not self.task.done() and not self.copying:
            self.task.cancel()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The response body: the queued chunks until the end mark."""
        try:
            while True:
                item = await self.queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item  # the client sees a cut connection, never a complete-looking file
                yield item
        finally:
            self.cancel()


def _unauthorized(message: str) -> Response:
    return JSONResponse(error_body(message, Unauthenticated.code), status_code=401,
                        headers={"WWW-Authenticate": 'Bearer realm="analytics-gateway"'})


async def _account(request: Request, resources: Resources, user_id: uuid.UUID) -> Account | None:
    """The caller's account row; a database that cannot be reached is a 503 (see
    gateway/http/app.py's handler of `GatewayError`), never a 500."""
    try:
        return await account_of(request.scope, resources, user_id)
    except Exception as exc:
        unavailable = replacement_for(exc)
        if unavailable is None:
            raise
        raise unavailable from None


async def export_tasks(request: Request) -> Response:
    """The caller's non-deleted tasks as CSV, oldest first, at most `MAX_EXPORT_ROWS` rows."""
    resources: Resources = request.app.state.resources
    settings = resources.settings
    state = identify(request.scope, settings)  # decoded once per request, see identity.py
    try:
        caller = state["caller"]
        if caller is None:
            raise state["auth_error"] or Unauthenticated(
                "Authorization: Bearer <access token> required")
        # The account must still exist now, not only when the token was issued.
        caller = verified_caller(caller, await _account(request, resources, caller.id))
    except Unauthenticated as exc:
        return _unauthorized(exc.message)
    try:
        filters = parse_filters(request.query_params)
    except BadFilter as exc:
        return JSONResponse(error_body(str(exc), BadUserInput.code, field=exc.field),
                            status_code=400)
    limit = settings.max_export_rows
    stream = _CopyStream(resources.pool, (uuid.UUID(str(caller.id)), *filters), limit)
    try:
        total = await stream.start()
    except BaseException:
        stream.cancel()  # the client left while we counted, or the count failed
        raise
    return StreamingResponse(stream.chunks(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": 'attachment; filename="tasks.csv"',
        "Cache-Control": "no-store",
        "X-Export-Truncated": "true" if total > limit else "false",
        "X-Export-Rows": str(min(total, limit)),
    })
