"""Live subscriptions: who may follow whose figures, and the loop that pushes them.

A subscription (schema/live.py) is authorized exactly like the matching query
(`resolvers.analytics.subject`: a user follows only themselves, an admin anyone), is filed in
the process's hub (gateway/live/hub.py, which applies the caps), and then yields one *frame* per
push: the followed user's row as of that push and the hub's `Batch`, from which the figures are
computed with the very functions of the queries (`resolvers.analytics.overview`, `trends`,
`productivity`) and the loaders. Every subscription of this process that follows the same user
gets the same batch for a change, so each figure (per set of arguments) is computed once.

A push comes:

- at once, on subscribe;
- after a change to the user's figures (the hub's flush, coalesced to one per `LIVE_COALESCE_MS`;
  a subscription also never gets two pushes closer than that);
- at the user's local midnight (the default ranges end "today");
- after a failure to compute it (the database down, say), retried with backoff: the subscription
  stays open.

Before each push the caller's account is read again: a deleted account closes the connection
(4403), a demoted admin's subscription to someone else ends with FORBIDDEN.

**Pushes from the change, not from the database.** A write of the API describes its change in
its message (the task's facts before and after, and the data version it raised the user to:
domain/deltas.py, gateway/live/fanout.py). Once a push's figures are known to be exactly those
of one data version (`Known`, kept in the hub per followed user), the next push applies the
changes heard since to them, with no statement but the user's row (which also authorizes the
push), when those changes lead exactly to the version that row has: every version in between
described, the same local day and timezone, no change the productivity extras cannot follow.
Otherwise (a change from a worker or psql, a message lost or not yet arrived, a task completed
or reopened, a new day) the push's figures are recomputed by the loaders and kept as the new
`Known` at the data version their statement read beside them (`_learn`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Generic, TypeVar, cast

import asyncpg

from domain.deltas import TaskChange, Values, advance
from domain.figures import Overview, Productivity, Trend, UserRow
from domain.ranges import seconds_to_midnight
from gateway.data.db import is_database_outage
from gateway.data.resources import Resources
from gateway.errors import BadUserInput, Forbidden, NotFound, ServiceUnavailable
from gateway.live.hub import CLOSE_FORBIDDEN, Batch, Connection, Follower, Hub, Subject
from gateway.ops.metrics import LIVE_FIGURES, LIVE_PUSH_DELAY, LIVE_PUSHES
from gateway.security.access import Caller
from loaders.analytics import Snapshots, UserLoader
from resolvers import analytics as resolve
from resolvers.context import Context, Info

log = logging.getLogger(__name__)

E = TypeVar("E")
MIDNIGHT_MARGIN_S = 1.0  # push this long after the local midnight, so that "today" has moved
RETRY_FIRST_S = 1.0      # a push that failed is retried after this, doubling...
RETRY_MAX_S = 30.0       # ...up to this
GAP_WAIT_S = 1.0         # kept figures wait this long for an announced change to be heard
KEEP_KNOWN_S = 600.0     # kept figures of a user without any change for this long are let go


@dataclass
class LiveContext(Context):
    """The context of a subscription WebSocket (one for all of its subscriptions), built by the
    edge (gateway/http/graphql_view.py). Strawberry puts the `connection_init` payload in
    `connection_params`; the edge sets `caller` once the token in it is verified."""

    connection_params: dict[str, Any] = field(default_factory=dict)
    connection: Connection | None = None
    hub: Hub | None = None


@dataclass(frozen=True)
class _FigureInfo:
    """What the analytics resolvers read of `info`: `info.context` (its loaders, its caller)."""

    context: Context


class Frame:
    """One push of one subscription: the followed user as of this push, and the batch its
    figures are computed from (shared with the other followers of the user).

    Once the push is sent the frame is `spent`: it lets its batch go (the loaders, their caches,
    the figures), which an idle subscription would otherwise keep until its next push, since the
    last event (a `Dashboard` holds its frame) stays referenced by graphql-core's stream."""

    __slots__ = ("_batch", "user")

    def __init__(self, user: UserRow, batch: Batch) -> None:
        self.user = user
        self._batch: Batch | None = batch

    @property
    def batch(self) -> Batch:
        if self._batch is None:
            raise RuntimeError("the figures of a frame are read before its push is sent")
        return self._batch

    def spent(self) -> None:
        self._batch = None

    @property
    def info(self) -> Info:
        return cast(Info, _FigureInfo(cast(Context, self.batch.values["context"])))


# --- the figures of a frame, each computed once per batch ---------------------------------------

async def overview(frame: Frame) -> Overview:
    user = frame.user
    return await frame.batch.once(("overview", user.id, user.today),
                                  lambda: resolve.overview(frame.info, user))


async def trends(frame: Frame, period: str, d_from: date | None, d_to: date | None) -> Trend:
    user = frame.user
    return await frame.batch.once(("trends", user.id, user.today, period, d_from, d_to),
                                  lambda: resolve.trends(frame.info, user, period, d_from, d_to))


async def productivity(frame: Frame, d_from: date | None, d_to: date | None) -> Productivity:
    user = frame.user
    return await frame.batch.once(
        ("productivity", user.id, user.today, d_from, d_to),
        lambda: resolve.productivity(frame.info, user, d_from, d_to))


# --- figures updated from the changes (see the module docstring) -------------------------------

@dataclass(frozen=True, slots=True)
class Known:
    """The figures of a user's last push, exactly as of `version` (by loader field and key),
    and the local day and timezone they were computed for."""

    version: int
    today: date
    timezone: str
    values: Values


def _advance(hub: Hub, batch: Batch, user: UserRow) -> None:
    """Before a batch computes `user`'s figures: when the kept figures can follow the changes
    heard since, give the batch's loaders the updated figures; else forget them, so that the
    loaders recompute (and `_learn` keeps the result). Once per batch and user; synchronous, so
    no other push of the user interleaves.

    The kept figures follow the described changes from their version on, in order, as far as
    they are heard. The user's row (read for this push) may be ahead: a change committed whose
    message has not arrived yet (a busy process reads its messages late). The push then carries
    the figures of the last version heard (a state that was committed), and the message, once
    it arrives, brings the next push; if the figures are still behind the row `GAP_WAIT_S`
    later (a lost message, a change nobody described), they are recomputed. With no change to
    follow at all (the next one not heard), they are recomputed now."""
    advanced: dict[uuid.UUID, int | None] = batch.values.setdefault("advanced", {})
    subject = hub.subject(user.id)
    if user.id in advanced or subject is None:
        return
    version = user.data_version
    known = subject.known
    values = None
    if isinstance(known, Known) and known.today == user.today \
            and known.timezone == user.timezone and known.version <= version:
        for old in [v for v in subject.changes if v <= known.version]:
            del subject.changes[old]
        chain: list[TaskChange] = []
        while (reached := known.version + len(chain)) < version:
            change = TaskChange.decode(reached + 1, subject.changes.get(reached + 1))
            if change is None:
                break
            chain.append(change)
        if reached == version or chain:
            values = advance(known.values, user.timezone, chain)
    if values is None:
        for old in [v for v in subject.changes if v <= version]:
            del subject.changes[old]
        subject.forget()
        advanced[user.id] = subject.epoch  # `_learn` keeps what the loaders compute
        LIVE_FIGURES.labels("database").inc()
        return
    for change in chain:
        del subject.changes[change.version]
    LIVE_FIGURES.labels("changes").inc()
    subject.keep(Known(reached, user.today, user.timezone, values))
    advanced[user.id] = None
    cast(Context, batch.values["context"]).loaders.prime_figures(values)
    if reached < version:
        asyncio.get_running_loop().call_later(GAP_WAIT_S, _catch_up, hub, subject, user.id,
                                              version)


def _catch_up(hub: Hub, subject: Subject, user_id: uuid.UUID, version: int) -> None:
    """`GAP_WAIT_S` after a push fell behind the user's row at `version`: if the kept figures
    are still behind it, recompute them (a flush without a described change)."""
    known = subject.known
    if hub.subject(user_id) is subject and isinstance(known, Known) and known.version < version:
        hub.changed([user_id])


async def _learn(hub: Hub, batch: Batch, user: UserRow) -> None:
    """After a push whose figures the loaders recomputed: keep them as `Known` when they are
    known to be exactly those of one data version. The statement that computed them read the
    version it saw (`Snapshots`); figures that came from the field cache instead are exact when
    a second read of the user's row finds the version of the first (no change committed between
    that read, made before the figures were, and this one)."""
    epoch = batch.values.get("advanced", {}).get(user.id)
    subject = hub.subject(user.id)
    if epoch is None or subject is None or subject.epoch != epoch:
        return
    context = cast(Context, batch.values["context"])
    values = context.loaders.figures_of(user.id)
    if not values:
        return
    version = context.snapshots.version_of(user.id, values) if context.snapshots else None
    if version is None:
        async def version_now() -> int | None:
            recheck = batch.values.get("recheck")
            if recheck is None:  # one loader for the batch: its users' rows in one statement
                recheck = batch.values["recheck"] = UserLoader(context.resources.pool)
            row = await recheck.load(user.id)
            return row.data_version if row is not None else None

        if await batch.once(("recheck", user.id), version_now) != user.data_version:
            return
        version = user.data_version
    if hub.subject(user.id) is subject and subject.epoch == epoch:
        subject.keep(Known(version, user.today, user.timezone, values))


# --- subscribing ---------------------------------------------------------------------------------

def _batch(resources: Resources, caller: Caller | None = None) -> Batch:
    """A batch of one subscription's own, with fresh loaders (a frame's figures are never older
    than its batch)."""
    batch = Batch()
    batch.values["context"] = Context(request=None, resources=resources, caller=caller,
                                      keep_figures=False)
    return batch


def _live_context(info: Info) -> LiveContext:
    context = info.context
    if not isinstance(context, LiveContext) or context.connection is None \
            or context.hub is None:
        raise BadUserInput("Subscriptions are served over WebSocket (the graphql-transport-ws "
                           "protocol) on /graphql; see docs/api.md, Subscriptions")
    return context


async def follow(info: Info, field_name: str, user_id: Any | None,
                 event: Callable[[Frame], Awaitable[E]]) -> AsyncIterator[E]:
    """Authorize and file a subscription to `user_id`'s figures (default the caller's); its
    events are `event(frame)` for each push. Refusals (UNAUTHENTICATED, FORBIDDEN, NOT_FOUND,
    TOO_MANY_SUBSCRIPTIONS) are raised here, before any event, so the client gets them as the
    subscription's `error` message."""
    context = _live_context(info)
    assert context.connection is not None and context.hub is not None
    caller = context.require_caller()
    first = _batch(context.resources, caller)
    user = await resolve.subject(cast(Info, _FigureInfo(first.values["context"])), user_id)
    # Filed before the first figures are read, so that a change committed meanwhile is pushed.
    follower = context.hub.follow(context.connection, caller.id, user.id, field_name)
    frame = Frame(user, first)
    try:
        value = await event(frame)  # a bad range, say, is refused here, as the query would be
    except BaseException:
        follower.close()
        raise
    return Pushes(follower, frame, value, event, context.resources, context.hub.coalesce)


class Pushes(Generic[E]):
    """The events of one subscription (an async iterator). Closing it, or the connection ending,
    takes the subscription out of the hub, even if no event was ever asked for."""

    __slots__ = ("_events", "coalesce", "event", "follower", "last_push", "resources")

    def __init__(self, follower: Follower, first: Frame, first_value: E,
                 event: Callable[[Frame], Awaitable[E]], resources: Resources,
                 coalesce: float) -> None:
        self.follower = follower
        self.event = event
        self.resources = resources
        self.coalesce = coalesce
        self.last_push = float("-inf")  # the loop's clock
        self._events = self._run(first, first_value)

    def __aiter__(self) -> Pushes[E]:
        return self

    async def __anext__(self) -> E:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        self.follower.close()
        await self._events.aclose()

    async def _run(self, frame: Frame, first_value: E) -> AsyncGenerator[E, None]:
        retry = RETRY_FIRST_S
        pending: E | None = first_value
        del first_value  # `pending` until it is pushed, and no longer
        try:
            while True:
                try:
                    value = pending if pending is not None else await self.event(frame)
                    pending = None
                except Exception as exc:
                    if not _transient(exc):
                        raise
                    log.warning("live: push to a follower of %s failed (%s); retrying in %.0f s",
                                frame.user.id, type(exc).__name__, retry)
                    frame.spent()
                    frame = await self._next_frame(frame, retry)
                    retry = min(retry * 2, RETRY_MAX_S)
                    continue
                retry = RETRY_FIRST_S
                yield value
                del value  # graphql-core's stream holds the last event meanwhile, spent below
                self._pushed(frame)
                with contextlib.suppress(Exception):  # only a chance to push cheaper next time
                    await _learn(self.follower.hub, frame.batch, frame.user)
                frame.spent()
                frame = await self._next_frame(frame, None)
        finally:
            self.follower.close()

    def _pushed(self, frame: Frame) -> None:
        self.last_push = asyncio.get_running_loop().time()
        LIVE_PUSHES.labels(self.follower.field).inc()
        published_at = frame.batch.published_at(frame.user.id)
        if published_at is not None:
            LIVE_PUSH_DELAY.observe(max(0.0, time.time() - published_at))

    async def _next_frame(self, frame: Frame, retry_in: float | None) -> Frame:
        """Wait for the next push: a batch from the hub, the local midnight, or a retry."""
        follower = self.follower
        hub = follower.hub
        loop = asyncio.get_running_loop()
        while True:
            midnight = seconds_to_midnight(frame.user.timezone) + MIDNIGHT_MARGIN_S
            timeout = midnight if retry_in is None else min(midnight, retry_in)
            # Figures kept for a user who stopped changing are let go after a while (about
            # 5 KiB a followed user); the next change is then computed from the database.
            subject = hub.subject(follower.user_id)
            letting_go = retry_in is None and subject is not None \
                and isinstance(subject.known, Known) and KEEP_KNOWN_S < timeout
            batch = await follower.next_batch(KEEP_KNOWN_S if letting_go else timeout)
            if batch is None:
                if letting_go:
                    assert subject is not None
                    subject.forget()
                    continue
                if retry_in is not None:  # try again on a batch of our own
                    batch = _batch(self.resources)
                else:  # midnight: one flush for every follower of the user
                    hub.changed([follower.user_id])
                    continue
            else:
                wait = self.last_push + self.coalesce - loop.time()
                if wait > 0:  # this subscription's last push was less than LIVE_COALESCE_MS ago
                    await asyncio.sleep(wait)
                    batch = follower.take() or batch
            if "context" not in batch.values:
                batch.values["context"] = Context(request=None, resources=self.resources,
                                                  snapshots=Snapshots(), keep_figures=False)
            try:
                return await self._frame(batch)
            except Exception as exc:
                if not _transient(exc):
                    raise
                log.warning("live: reading %s failed (%s); retrying", follower.user_id,
                            type(exc).__name__)
                retry_in = RETRY_FIRST_S if retry_in is None else min(retry_in * 2, RETRY_MAX_S)

    async def _frame(self, batch: Batch) -> Frame:
        """The frame of a batch, once the caller's account is checked (4403 when deleted)."""
        follower = self.follower
        connection = follower.connection
        loaders = cast(Context, batch.values["context"]).loaders

        async def row(user_id: uuid.UUID) -> UserRow | None:
            return await batch.once(("user", user_id), lambda: loaders.user.load(user_id))

        user = await row(follower.user_id)
        account = user if follower.user_id == follower.caller_id else await row(follower.caller_id)
        if account is None:
            await connection.close(CLOSE_FORBIDDEN, "Account deleted", "deleted")
            await asyncio.Event().wait()  # the edge cancels this subscription as the socket ends
        assert account is not None
        caller = connection.caller
        if caller is not None and caller.role != account.role:
            connection.caller = caller = Caller(caller.id, account.role)
        if follower.user_id != follower.caller_id and not (caller and caller.is_admin):
            raise Forbidden()
        if user is None:
            raise NotFound("User not found")
        _advance(follower.hub, batch, user)
        return Frame(user, batch)


def _transient(exc: BaseException) -> bool:
    """A failure that says "not now" (the database down or busy) rather than "never"."""
    return is_database_outage(exc) or isinstance(
        exc, (TimeoutError, OSError, asyncpg.QueryCanceledError, ServiceUnavailable))
