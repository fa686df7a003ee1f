"""Each API process's hub of live subscriptions: who follows whom, when to push, and the one Redis
pub/sub listener that hears of changes made anywhere.

- **Registry.** A `Connection` per subscription WebSocket (at most `LIVE_MAX_CONNECTIONS`), a
  `Follower` per subscription, filed under the user whose figures it follows. The caps
  `LIVE_MAX_SUBSCRIPTIONS_PER_CONNECTION` and `LIVE_MAX_SUBSCRIPTIONS_PER_USER` (per caller, in
  this process) refuse a subscription with TOO_MANY_SUBSCRIPTIONS.
- **Coalescing, per followed user.** A change (a message of gateway/live/fanout.py, or the local
  midnight of the user) schedules one *flush* of that user, at most one per `LIVE_COALESCE_MS`:
  a burst of changes is one flush. Flushes run on ticks of `TICK_S` (20 ms), all users due in a
  tick together: their followers share one `Batch`, so the loaders fetch the figures of all of
  them with one statement for all their figures (with many users changing, the SQL per push falls
  from five statements to a fraction of one). A follower only keeps the latest batch, so nothing
  queues up behind a slow subscriber.
- **Single flight.** A `Batch` memoizes what is computed from it (`Batch.once`): the figures of
  one user for one set of arguments are computed once per flush, however many connections of
  this process follow that user (resolvers/live.py computes them; this module knows no figure).
- **The listener.** One task, on a connection of its own (a subscribed connection waits for
  messages indefinitely, so it cannot share the cache path's 200 ms socket timeouts), pinging
  Redis every `PING_EVERY_S` and reconnecting with backoff when Redis is gone or stops
  answering. Subscriptions stay open meanwhile; once the listener is back every followed user is
  flushed, so each subscription gets one push with the current figures (changes made while no
  message could arrive are in them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

from gateway.cache.clients import parse_nodes
from gateway.errors import GatewayError
from gateway.live.fanout import CHANNEL, TaskEntry, decode_change
from gateway.ops.metrics import LIVE_CLOSED, LIVE_CONNECTIONS, LIVE_SUBSCRIPTIONS
from gateway.ops.settings import Settings
from gateway.security.access import Caller

log = logging.getLogger(__name__)

T = TypeVar("T")
CloseSocket = Callable[[int, str], Awaitable[None]]

PING_EVERY_S = 5.0       # the listener pings Redis this often...
SILENT_PINGS = 3         # ...and reconnects after this many pings without any answer
BACKOFF_FIRST_S = 0.1    # reconnection delays double from this...
BACKOFF_MAX_S = 5.0      # ...up to this
CLOSE_TIMEOUT_S = 1.0    # a close that cannot be sent in this time (a stalled client) is given up
TICK_S = 0.02            # flushes falling due within this window run together (one Batch)
MAX_CHANGES = 64         # described changes kept per followed user until its next push

# Close codes (docs/api.md, "Subscriptions").
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_SLOW = 4008
CLOSE_TRY_LATER = 1013


class TooManySubscriptions(GatewayError):
    code = "TOO_MANY_SUBSCRIPTIONS"
    default_message = "Too many subscriptions"


class Batch:
    """One flush: what the followers of the users flushed together compute for this push, each
    value once (the first follower to ask computes it, the others wait for the same result).
    The users whose flushes fall due in the same tick share one batch, so their followers' loads
    go out together and the loaders answer them with one statement for all their figures."""

    def __init__(self, published: dict[uuid.UUID, float] | None = None) -> None:
        # The earliest change of each user this flush includes (no entry: not from a message).
        self.published = published or {}
        self.values: dict[str, Any] = {}  # plain values shared by the followers (the loaders)
        self._memo: dict[Hashable, asyncio.Future[Any]] = {}

    def published_at(self, user_id: uuid.UUID) -> float | None:
        return self.published.get(user_id)

    async def once(self, key: Hashable, compute: Callable[[], Awaitable[T]]) -> T:
        """`compute()`'s result, computed once for this batch. A follower that goes away does not
        cancel it for the others; a failure is not kept (the next push tries again)."""
        future = self._memo.get(key)
        if future is None:
            future = asyncio.ensure_future(compute())
            self._memo[key] = future
            future.add_done_callback(lambda done: self._settled(key, done))
        return cast(T, await asyncio.shield(future))

    def _settled(self, key: Hashable, future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            if self._memo.get(key) is future:
                del self._memo[key]


class Connection:
    """One subscription WebSocket: its caller (set once `connection_init` is verified), its
    subscriptions, and how to close it. (Slots, and a callback rather than an event and a task
    waiting on it: thousands of idle sockets each hold one.)"""

    __slots__ = ("_close_socket", "caller", "closed", "followers", "hub", "on_abandoned")

    def __init__(self, hub: Hub, close_socket: CloseSocket) -> None:
        self.hub = hub
        self.caller: Caller | None = None
        self.followers: set[Follower] = set()
        self.closed = False
        # Called when the close frame could not even be handed over (a client that stopped
        # reading): the edge then ends the socket without waiting for the client's answer.
        self.on_abandoned: Callable[[], object] | None = None
        self._close_socket = close_socket

    async def close(self, code: int, reason: str, cause: str | None = None) -> None:
        """Close the socket once; `cause` counts it in `analytics_live_closed_total`. A client
        that has stopped reading may never take the close frame: given up after a second."""
        if self.closed:
            return
        self.closed = True
        if cause is not None:
            LIVE_CLOSED.labels(cause).inc()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self._close_socket(code, reason)
        except Exception as exc:  # the socket is gone or stalled: nothing more to tell it
            log.debug("live: close %d not sent: %s", code, type(exc).__name__)
            if self.on_abandoned is not None:
                self.on_abandoned()

    def release(self) -> None:
        """The socket has ended: forget it and its subscriptions."""
        self.closed = True
        for follower in list(self.followers):
            follower.close()
        self.hub._release(self)


class Follower:
    """One subscription's place in the hub: the latest `Batch` for it, if any. (Slots, and a
    future made only while the subscription waits rather than an `asyncio.Event`, whose
    deque alone is 0.7 KiB: thousands of idle subscriptions each hold one.)"""

    __slots__ = ("_batch", "_waiter", "caller_id", "closed", "connection", "field", "hub",
                 "user_id")

    def __init__(self, hub: Hub, connection: Connection, caller_id: uuid.UUID,
                 user_id: uuid.UUID, field: str) -> None:
        self.hub = hub
        self.connection = connection
        self.caller_id = caller_id
        self.user_id = user_id
        self.field = field
        self.closed = False
        self._batch: Batch | None = None
        # While `next_batch` waits: True once a batch is delivered, False when the wait is over.
        self._waiter: asyncio.Future[bool] | None = None

    def deliver(self, batch: Batch) -> None:
        self._batch = batch  # only the latest: a slow subscriber never piles batches up
        _settle(self._waiter, True)

    async def next_batch(self, wait: float | None) -> Batch | None:
        """The next batch for this subscription, or None when `wait` seconds pass first."""
        if self._batch is None:
            loop = asyncio.get_running_loop()
            self._waiter = waiter = loop.create_future()
            # A timer handle rather than `asyncio.timeout` (its state besides the handle).
            timer = None if wait is None else loop.call_later(wait, _settle, waiter, False)
            try:
                if not await waiter:
                    return None
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
        return self.take()

    def take(self) -> Batch | None:
        """The batch delivered since the last take, if any (the newest one)."""
        batch, self._batch = self._batch, None
        return batch

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.hub._unfollow(self)


def _settle(waiter: asyncio.Future[bool] | None, delivered: bool) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(delivered)


@dataclass(slots=True)
class Subject:
    """A followed user: their followers in this process, the state of their next flush, and what
    resolvers/live.py keeps to update their figures from the changes rather than recompute them:
    `known`, the figures last pushed at an exact data version (opaque here; None: recompute),
    and `changes`, the changes heard since, by the data version each raised the user to (opaque
    payloads of the change messages, at most `MAX_CHANGES`)."""

    followers: set[Follower] = field(default_factory=set)
    last_flush: float = -math.inf
    published_at: float | None = None  # the earliest change waiting for the next flush
    known: Any = None
    changes: dict[int, Any] = field(default_factory=dict)
    epoch: int = 0  # raised whenever `known` is replaced or forgotten

    def keep(self, known: Any) -> None:
        self.known = known
        self.epoch += 1

    def forget(self) -> None:
        """A change without a description (or too many at once): the next push recomputes."""
        if self.known is not None:
            self.keep(None)


class Hub:
    """The live subscriptions of this process (see the module docstring). Made and started by the
    application's lifespan (`start`, `stop`); `changed` is also how tests and local timers ask
    for a push."""

    def __init__(self, settings: Settings, *, client_factory: Callable[[int], Redis] | None = None,
                 ping_every: float = PING_EVERY_S) -> None:
        self.settings = settings
        self.coalesce = settings.live_coalesce_ms / 1000
        self.send_timeout = settings.live_send_timeout_s
        self.ping_every = ping_every
        self._client_factory = client_factory or (lambda attempt: pubsub_client(settings,
                                                                                attempt))
        self.connections: set[Connection] = set()
        self._subjects: dict[uuid.UUID, Subject] = {}
        self._due: dict[uuid.UUID, float] = {}  # users with a flush asked for, and when due
        # The scheduled flush and when it runs. (The time kept here: uvloop gives a plain Handle,
        # without `when()`, for a time already past.)
        self._tick: asyncio.Handle | None = None
        self._tick_at = math.inf
        self._per_caller: Counter[uuid.UUID] = Counter()
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()  # set while the listener is subscribed
        self._missed = False  # the listener lost Redis: catch up when it is back
        self._observers: list[tuple[Callable[[list[uuid.UUID]], None], Callable[[], None]]] = []

    # --- the registry ---------------------------------------------------------------------

    def open(self, close_socket: CloseSocket) -> Connection | None:
        """A new subscription WebSocket, or None when this process holds `LIVE_MAX_CONNECTIONS`
        already (the edge then closes it with 1013)."""
        if len(self.connections) >= self.settings.live_max_connections:
            LIVE_CLOSED.labels("capacity").inc()
            return None
        connection = Connection(self, close_socket)
        self.connections.add(connection)
        LIVE_CONNECTIONS.inc()
        return connection

    def _release(self, connection: Connection) -> None:
        if connection in self.connections:
            self.connections.remove(connection)
            LIVE_CONNECTIONS.dec()

    def follow(self, connection: Connection, caller_id: uuid.UUID, user_id: uuid.UUID,
               field: str) -> Follower:
        """File a new subscription of `caller_id` to `user_id`'s figures; TOO_MANY_SUBSCRIPTIONS
        past a cap."""
        per_connection = self.settings.live_max_subscriptions_per_connection
        per_user = self.settings.live_max_subscriptions_per_user
        if len(connection.followers) >= per_connection:
            raise TooManySubscriptions(
                f"At most {per_connection} subscriptions per connection; complete one first",
                limit=per_connection)
        if self._per_caller[caller_id] >= per_user:
            raise TooManySubscriptions(
                f"At most {per_user} subscriptions per user on one server; complete one first",
                limit=per_user)
        follower = Follower(self, connection, caller_id, user_id, field)
        connection.followers.add(follower)
        self._per_caller[caller_id] += 1
        subject = self._subjects.get(user_id)
        if subject is None:  # its first push is being computed now: the next one in a while
            subject = self._subjects[user_id] = Subject(
                last_flush=asyncio.get_running_loop().time())
        subject.followers.add(follower)
        LIVE_SUBSCRIPTIONS.labels(field).inc()
        return follower

    def _unfollow(self, follower: Follower) -> None:
        follower.connection.followers.discard(follower)
        self._per_caller[follower.caller_id] -= 1
        if self._per_caller[follower.caller_id] <= 0:
            del self._per_caller[follower.caller_id]
        subject = self._subjects.get(follower.user_id)
        if subject is not None:
            subject.followers.discard(follower)
            if not subject.followers:
                del self._subjects[follower.user_id]
                self._due.pop(follower.user_id, None)
        LIVE_SUBSCRIPTIONS.labels(follower.field).dec()

    def followed(self) -> list[uuid.UUID]:
        """The users someone in this process follows."""
        return list(self._subjects)

    # --- coalescing -----------------------------------------------------------------------

    def subject(self, user_id: uuid.UUID) -> Subject | None:
        """The followed user's state in this process (None: nobody here follows them)."""
        return self._subjects.get(user_id)

    def changed(self, user_ids: Iterable[uuid.UUID], published_at: float | None = None,
                tasks: Iterable[TaskEntry] = ()) -> None:
        """These users' figures changed (published at `published_at`): flush each followed one
        at the next tick, or once its last flush is `LIVE_COALESCE_MS` old. `tasks` describes
        the changes of some of them (gateway/live/fanout.py); a user changed without one has
        their kept figures forgotten."""
        now = asyncio.get_running_loop().time()
        described: dict[uuid.UUID, list[tuple[int, Any]]] = {}
        for user_id, version, change in tasks:
            described.setdefault(user_id, []).append((version, change))
        for user_id in user_ids:
            subject = self._subjects.get(user_id)
            if subject is None:
                continue
            entries = described.get(user_id)
            if entries is None:
                subject.forget()
            else:
                subject.changes.update(entries)
                if len(subject.changes) > MAX_CHANGES:
                    subject.changes.clear()
                    subject.forget()
            if published_at is not None:
                subject.published_at = published_at if subject.published_at is None \
                    else min(subject.published_at, published_at)
            if user_id not in self._due:
                self._due[user_id] = max(now, subject.last_flush + self.coalesce)
        self._arm()

    def _arm(self) -> None:
        """Schedule the tick that runs the earliest flush due, on a `TICK_S` boundary of the
        loop's clock (flushes falling due within one tick run together)."""
        if not self._due:
            return
        earliest = min(self._due.values())
        at = math.ceil(earliest / TICK_S) * TICK_S
        if self._tick is not None:
            if self._tick_at <= at:
                return
            self._tick.cancel()
        self._tick = asyncio.get_running_loop().call_at(at, self._flush_due)
        self._tick_at = at

    def _flush_due(self) -> None:
        """Flush every user due by now, all in one `Batch`."""
        self._tick = None
        now = asyncio.get_running_loop().time()
        ready = [user_id for user_id, due in self._due.items() if due <= now]
        published = {}
        for user_id in ready:
            del self._due[user_id]
            subject = self._subjects.get(user_id)
            if subject is None:
                continue
            subject.last_flush = now
            if subject.published_at is not None:
                published[user_id] = subject.published_at
                subject.published_at = None
        batch = Batch(published)
        for user_id in ready:
            subject = self._subjects.get(user_id)
            for follower in subject.followers if subject is not None else ():
                follower.deliver(batch)
        self._arm()

    # --- the listener ---------------------------------------------------------------------

    def observe(self, on_change: Callable[[list[uuid.UUID]], None],
                on_lost: Callable[[], None]) -> Callable[[], bool]:
        """Hear the change messages too (the account cache, gateway/data/accounts.py):
        `on_change` gets the users of every message, `on_lost` is called whenever the listener
        loses Redis (messages may have been missed). Returns whether the listener is subscribed
        now."""
        self._observers.append((on_change, on_lost))
        return self.listening.is_set

    async def start(self) -> None:
        """Start listening (in the background: a Redis that is down delays nothing)."""
        if self._task is None:
            self._task = asyncio.create_task(self._listen_forever(), name="live-listener")

    async def stop(self) -> None:
        """Stop listening and close every subscription socket (the server is shutting down)."""
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            self._lost()
        for connection in list(self.connections):
            await connection.close(1001, "Server shutting down")

    async def _listen_forever(self) -> None:
        delay = BACKOFF_FIRST_S
        attempt = 0
        while True:
            try:
                await self._listen_once(attempt)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis gone, refusing or silent: try again, soon
                if self.listening.is_set():
                    log.warning("live: Redis pub/sub lost (%s); subscriptions stay open and get "
                                "the current figures once it is back", type(exc).__name__)
                    delay = BACKOFF_FIRST_S
                self._lost()
            attempt += 1
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, BACKOFF_MAX_S)

    async def _listen_once(self, attempt: int) -> None:
        """Subscribe and dispatch messages until Redis fails or stops answering (raises)."""
        client = self._client_factory(attempt)
        pubsub = client.pubsub()
        try:
            async with asyncio.timeout(self.settings.redis_socket_connect_timeout
                                       + self.ping_every):
                await pubsub.subscribe(CHANNEL)
                while (await pubsub.get_message(timeout=self.ping_every) or {}).get(
                        "type") != "subscribe":
                    pass
            self._connected()
            loop = asyncio.get_running_loop()
            heard = pinged = loop.time()
            while True:
                message = await pubsub.get_message(timeout=min(1.0, self.ping_every))
                now = loop.time()
                if message is not None:
                    heard = now
                    if message.get("type") == "message":
                        try:
                            self._receive(message["data"])
                        except Exception:  # a bug acting on one message: not a lost Redis
                            log.exception("live: a change message could not be acted on")
                if now - heard > self.ping_every * SILENT_PINGS:
                    raise TimeoutError("Redis stopped answering the listener's pings")
                if now - pinged >= self.ping_every:
                    pinged = now
                    async with asyncio.timeout(self.ping_every):
                        await pubsub.ping()
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await pubsub.aclose()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await client.aclose()

    def _lost(self) -> None:
        self.listening.clear()
        self._missed = True
        for _, on_lost in self._observers:
            on_lost()

    def _connected(self) -> None:
        self.listening.set()
        if self._missed:
            self._missed = False
            followed = self.followed()
            log.info("live: Redis pub/sub is back; catching up %d followed user(s)",
                     len(followed))
            self.changed(followed)

    def _receive(self, data: bytes) -> None:
        change = decode_change(data)
        if change is None:
            log.warning("live: a change message this version cannot read was ignored")
            return
        for on_change, _ in self._observers:
            on_change(change.users)
        self.changed(change.users, change.at, change.tasks)


def pubsub_client(settings: Settings, attempt: int = 0) -> Redis:
    """A client for the listener alone: no socket timeout (a subscribed connection is quiet
    until something changes; the hub's pings tell a dead Redis), no retries (the hub reconnects
    and catches up itself). With Redis Cluster, one node after the other (a `PUBLISH` reaches
    every node of a cluster); with Sentinel, the current master."""
    options: dict[str, Any] = {
        "password": settings.redis_password, "socket_timeout": None,
        "socket_connect_timeout": settings.redis_socket_connect_timeout,
        "socket_keepalive": True, "retry": Retry(NoBackoff(), 0), "health_check_interval": 0,
        "decode_responses": False,
    }
    if settings.redis_cluster_nodes:
        nodes = parse_nodes(settings.redis_cluster_nodes)
        host, port = nodes[attempt % len(nodes)]
        return Redis(host=host, port=port, **options)
    if settings.redis_sentinels:
        sentinel = Sentinel(parse_nodes(settings.redis_sentinels), sentinel_kwargs={
            "socket_timeout": settings.redis_socket_timeout,
            "socket_connect_timeout": settings.redis_socket_connect_timeout})
        return cast(Redis, sentinel.master_for(settings.redis_sentinel_master, **options))
    return cast(Redis, Redis.from_url(settings.redis_url or "redis://127.0.0.1:6379/0",
                                      **options))
