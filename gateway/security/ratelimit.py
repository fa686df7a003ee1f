"""Rate limits in Redis: a sliding window per caller, and a stricter one for login attempts.

The window is the two-counter approximation of a sliding minute (as Cloudflare and nginx use):
the current fixed minute's count plus the previous minute's, weighted by how much of it still
lies inside the last 60 seconds. One Lua call reads both counters and counts the request only
when it is allowed, so a client that keeps retrying while limited does not push its own
`Retry-After` further out. Two integers per client and minute, whatever the request rate.

Who is a client: the user of a valid access token, else the client IP, where `X-Forwarded-For`
is believed only from a peer listed in `TRUSTED_PROXIES` (else anyone could pick their own IP).

When Redis does not answer, reads fail open and login fails closed: an attacker must not get
unlimited password guesses by knocking Redis over. Both go through the circuit breaker of the
cache-path client (`gateway.cache.clients.breaker_for`, shared with the caches): a call gets
`REDIS_CACHE_TIMEOUT` in all, and after one failure Redis is skipped for `CACHE_CIRCUIT_SECONDS`
(requests let through, logins refused at once) until one probe finds it back. So an outage, or a
hung Redis, costs the requests in flight one timeout, not every request one timeout each.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.cache.clients import breaker_for
from gateway.errors import RateLimited, ServiceUnavailable
from gateway.ops.circuit import CircuitOpen
from gateway.ops.settings import Settings

log = logging.getLogger(__name__)

WINDOW_MS = 60_000
REDIS_FAILURES = (RedisError, OSError, TimeoutError)
_WARN_EVERY = 10.0  # seconds between two "Redis down" warnings, not one per request

# KEYS: current window's counter, previous window's; ARGV: limit, window ms, ms into the window.
# Returns {1, 0} when allowed (and counted), {0, ms until a request would be allowed} otherwise.
SLIDING_WINDOW = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local elapsed = tonumber(ARGV[3])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
local estimate = previous * (window - elapsed) / window + current
if estimate + 1 > limit then
  local wait = window - elapsed
  if current + 1 <= limit and previous > 0 then
    wait = (window - elapsed) - (limit - 1 - current) * window / previous
  end
  return {0, math.ceil(wait)}
end
current = redis.call('INCR', KEYS[1])
if current == 1 then redis.call('PEXPIRE', KEYS[1], window * 2) end
return {1, 0}
"""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after: int = 0  # whole seconds, at least 1 when refused


class SlidingWindow:
    """One limiter over one Redis client; `hit(key, limit)` counts and decides."""

    def __init__(self, redis: Redis, prefix: str = "rl") -> None:
        self.redis = redis
        self.prefix = prefix
        self.script = redis.register_script(SLIDING_WINDOW)

    async def hit(self, key: str, limit: int, *, now: float | None = None) -> Decision:
        """Count one request of `key` against `limit` per minute. Raises RedisError when Redis
        does not answer; the caller decides whether that opens or closes the gate."""
        now_ms = int((time.time() if now is None else now) * 1000)
        window, elapsed = divmod(now_ms, WINDOW_MS)
        # The hash tag keeps both counters of a client in one Redis Cluster slot.
        keys = [f"{self.prefix}:{{{key}}}:{window}", f"{self.prefix}:{{{key}}}:{window - 1}"]
        allowed, wait_ms = await self.script(keys=keys, args=[limit, WINDOW_MS, elapsed])
        if allowed:
            return Decision(True)
        return Decision(False, max(1, math.ceil(int(wait_ms) / 1000)))


class TrustedProxies:
    """`TRUSTED_PROXIES`: addresses and networks (`10.0.0.0/8`) whose X-Forwarded-For counts."""

    def __init__(self, entries: tuple[str, ...]) -> None:
        self.addresses: set[str] = set()
        self.networks: list[Any] = []
        for entry in entries:
            if "/" in entry:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            else:
                self.addresses.add(entry)

    @staticmethod
    @functools.lru_cache(maxsize=8)
    def of(entries: tuple[str, ...]) -> TrustedProxies:
        """The one instance for these entries (a setting: parsed once, not per request)."""
        return TrustedProxies(entries)

    def __contains__(self, host: str) -> bool:
        if host in self.addresses:
            return True
        if not self.networks:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)


def client_ip(scope: Mapping[str, Any], trusted: TrustedProxies) -> str:
    """The client's address: the peer, or, when the peer is a trusted proxy, the right-most
    address of `X-Forwarded-For` that is not itself a trusted proxy."""
    client = scope.get("client")
    peer = str(client[0]) if client else "unknown"
    if peer not in trusted:
        return peer
    forwarded: str | None = None
    for name, value in scope.get("headers", ()):
        if name == b"x-forwarded-for":
            text = bytes(value).decode("latin-1")
            forwarded = text if forwarded is None else f"{forwarded},{text}"
    if not forwarded:
        return peer
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        if hop not in trusted:
            return hop
    return hops[0] if hops else peer


class RateLimiter:
    """The service's limits, built by the lifespan from the settings and the Redis clients.

    Every call goes through `breaker`, the circuit breaker of `fail_open_redis` (the cache-path
    client): the same Redis server behind both clients, so one failure spares every later call of
    the request path, whichever client it would use."""

    def __init__(self, settings: Settings, redis: Redis, fail_open_redis: Redis) -> None:
        self.settings = settings
        self.enabled = settings.rate_limit_enabled
        self.trusted = TrustedProxies(settings.trusted_proxies)
        self.requests = SlidingWindow(fail_open_redis, "rl")
        self.logins = SlidingWindow(redis, "rl:login")
        self.breaker = breaker_for(fail_open_redis, settings)
        self._warned_at = float("-inf")

    async def check_request(self, identity: str) -> Decision:
        """The general limit (`RATE_LIMIT_PER_MINUTE`) for `user:<id>` or `ip:<address>`;
        allowed when Redis does not answer (or is being skipped by the breaker)."""
        limit = self.settings.rate_limit_per_minute
        try:
            return await self.breaker.call(partial(self.requests.hit, identity, limit),
                                           REDIS_FAILURES, span="EVALSHA")
        except (CircuitOpen, *REDIS_FAILURES) as exc:
            self._warn(exc)
            return Decision(True)

    async def check_login(self, email: str, ip: str | None) -> None:
        """Raise RateLimited when this account or this IP tried to log in too often in the last
        minute, ServiceUnavailable when Redis cannot tell (login fails closed)."""
        if not self.enabled:
            return
        account = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
        checks = [(f"acct:{account}", self.settings.login_rate_limit_per_minute)]
        if ip:
            checks.append((f"ip:{ip}", self.settings.login_ip_rate_limit_per_minute))
        try:
            for key, limit in checks:
                decision = await self.breaker.call(partial(self.logins.hit, key, limit),
                                                   REDIS_FAILURES, span="EVALSHA")
                if not decision.allowed:
                    raise RateLimited("Too many login attempts; try again later",
                                      retryAfter=decision.retry_after)
        except (CircuitOpen, *REDIS_FAILURES) as exc:
            self._warn(exc)
            raise ServiceUnavailable("Login is unavailable for a moment; try again shortly",
                                     retryAfter=5) from None

    def _warn(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            log.warning("rate limiter: Redis unavailable (%s)", type(exc).__name__)


async def check_login_rate(resources: Any, email: str, ip: str | None) -> None:
    """For the `login` resolver: raises RateLimited (or ServiceUnavailable, Redis down) before
    the password is checked. `ip` is the client IP the edge worked out (the GraphQL context's
    `client_ip`)."""
    limiter = RateLimiter(resources.settings, resources.redis, resources.cache_redis)
    await limiter.check_login(email, ip)
