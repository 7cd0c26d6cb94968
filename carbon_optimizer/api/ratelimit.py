"""Per-client rate limiting with slowapi, shared through Redis, degrading to memory when Redis dies.

Why it looks like this:
- The `Limiter` is built by `RateLimiting.from_settings` (called from the app factory), never at import:
  each gunicorn worker builds its own after the fork, and tests build apps with their own limits.
- Counters live in Redis (`storage_uri` = `CARBON_OPTIMIZER_REDIS__URL`) so every worker and every
  replica shares one count per client. Without a Redis URL the count is per process (logged).
- One application-wide limit (`CARBON_OPTIMIZER_RATE_LIMIT`, limits syntax such as `600/minute`)
  per client across all routes, fixed window (one Redis round trip per request). The client is the
  API key's non-secret client id when a *valid* key is presented (an invalid key must not buy a
  fresh bucket), else the client IP. `X-Forwarded-For` is honoured only when the direct peer is in
  `CARBON_OPTIMIZER_TRUSTED_PROXIES` (IPs or CIDRs), walking the chain from the right over at
  most `CARBON_OPTIMIZER_EDGE__TRUSTED_PROXY_HOPS` entries (see `client_ip`).
- A refused request is a 429 problem+json with `Retry-After` (seconds) and `X-RateLimit-*`.
- slowapi's `Limiter` holds the configuration (limit string, strategy, key prefix, enable switch,
  `storage_uri`), but the per-request hit goes through the same `limits` library's asyncio storage
  (`AsyncCounter`): slowapi's own check calls the synchronous storage on the event loop, and that
  blocking Redis round trip cost ~47 % of throughput under gunicorn (bench/bench_deploy.py).
- Redis down: count in per-process memory with the limit divided by workers x replicas (or fail
  closed, `CARBON_OPTIMIZER_EDGE__RATE_LIMIT_REDIS_DOWN`), and re-probe Redis with back-off
  (1 s … 32 s), as slowapi's `in_memory_fallback_enabled` does; each Redis round trip is bounded
  by `CARBON_OPTIMIZER_EDGE__RATE_LIMIT_REDIS_TIMEOUT_S`, so a hung Redis costs at most one short
  deadline and never queues requests. Probes (`/healthz`, `/readyz`, `/metrics`) are never limited.
- No middleware of its own (slowapi's is a `BaseHTTPMiddleware`): the one edge layer
  (api/edge.py) calls `RateGate.refused` between its CORS handling and the API-key check.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any, Final

from fastapi import FastAPI
from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage as AsyncMemoryStorage
from limits.aio.storage import RedisStorage as AsyncRedisStorage
from limits.aio.strategies import FixedWindowRateLimiter as AsyncFixedWindow
from prometheus_client import Counter, Gauge
from redis.backoff import NoBackoff
from redis.retry import Retry
from slowapi import Limiter
from starlette.requests import Request
from starlette.types import Scope, Send

from carbon_optimizer.api.security import (
    PROBE_PATHS,
    ApiKeyStore,
    extend_openapi,
    operations,
    problem_response_doc,
    send_problem,
)
from carbon_optimizer.settings import Settings

logger = logging.getLogger(__name__)

_RATE_KEY: Final = "rate_limit_key"

RATE_LIMITED = Counter("carbon_optimizer_rate_limited_total", "Requests refused with 429 by the rate limiter")
RATE_LIMIT_FALLBACK = Gauge(
    "carbon_optimizer_rate_limit_fallback",
    "1 while this worker counts rate limits in memory because Redis is unreachable",
    multiprocess_mode="livemax",
)
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """The set of proxy addresses/networks whose `X-Forwarded-For` we believe."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks: list[IPNetwork] = []
        for entry in entries:
            try:
                self.networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                logger.warning("Ignoring invalid trusted proxy entry %r", entry)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def contains(self, host: str) -> bool:
        """True if `host` (an IP literal) is a trusted proxy."""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)


def client_ip(scope: Scope, trusted: TrustedProxies, max_hops: int = 1) -> str:
    """The caller's IP: the direct peer, or the address a trusted proxy vouched for in `X-Forwarded-For`.

    Each hop of the header was written by the party to its right (the last one by the direct
    peer). A hop is believed only if a trusted party wrote it, so the walk goes right to left, at
    most `max_hops` entries (the number of proxy layers in front of us), and stops at the first
    untrusted address. Anything it cannot use never becomes a bucket of its own: a value that is
    not an IP ends the walk at the last address a trusted party vouched for, and so does running
    out of hops (a client inside the trusted range cannot pick a fresh bucket by forging entries
    left of the ones our proxies wrote).
    """
    client = scope.get("client")
    peer = client[0] if client else "unknown"
    if not trusted or not trusted.contains(peer):
        return peer
    hops: list[str] = []
    for name, value in scope.get("headers", ()):
        if name == b"x-forwarded-for":
            hops.extend(h.strip() for h in value.decode("latin-1").split(","))
    hops = [h for h in hops if h]
    current = peer
    for hop in reversed(hops[-max_hops:]):
        address = _parse_ip(hop)
        if address is None:
            return current
        current = address
        if not trusted.contains(address):
            return address
    return current


def _parse_ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _rate_key(request: Request) -> str:
    """Key function for slowapi: the key the middleware computed for this request."""
    state = request.scope.get("state")
    if isinstance(state, MutableMapping):
        key = state.get(_RATE_KEY)
        if isinstance(key, str):
            return key
    return "ip:" + (request.client.host if request.client else "unknown")


def build_limiter(settings: Settings) -> Limiter:
    """The slowapi Limiter: the configuration (limit, strategy, key prefix, switch, `storage_uri`).

    Requests are counted by `AsyncCounter`, not by this limiter's synchronous storage; the storage
    keeps short timeouts and no retries so that any synchronous use (e.g. a future `@limiter.limit`
    decorator) could never stall the event loop for long.
    """
    storage_uri = "memory://"
    storage_options: dict[str, Any] = {}
    url = settings.edge.rate_limit_redis_url or settings.redis.url
    if url is not None:
        storage_uri = url.get_secret_value()
        storage_options = {
            "socket_connect_timeout": settings.redis.connect_timeout_s,
            "socket_timeout": settings.redis.socket_timeout_s,
            # No retry/backoff: slowapi's storage calls are synchronous (see the docstring).
            "retry": Retry(NoBackoff(), 0),
        }
    return Limiter(
        key_func=_rate_key,
        application_limits=[settings.rate_limit],
        strategy="fixed-window",
        storage_uri=storage_uri,
        storage_options=storage_options,
        in_memory_fallback_enabled=True,
        headers_enabled=False,  # headers on success would cost a second Redis call per request
        key_prefix=f"{settings.redis.key_prefix}:rl",
        enabled=settings.rate_limit_enabled,
    )


@dataclass(slots=True)
class _Grant:
    """Tokens this worker reserved in Redis for one (limit, client) in one window."""

    window: int
    left: int
    seen: int  # the shared count Redis reported after our last reservation


def reservation_size(limit: int, seen: int) -> int:
    """How many tokens to reserve at once: a small share of what is left, exactly 1 near the limit.

    Each reservation takes at most 1/_RESERVE_SHARE of the remaining budget, so workers and
    replicas together never admit more than the limit, and within _RESERVE_SHARE requests of it
    every request is counted in Redis one by one (an exact N+1-th refusal across workers).
    """
    return max(1, min(_MAX_RESERVATION, (limit - seen) // _RESERVE_SHARE))


_RESERVE_SHARE = 64
_MAX_RESERVATION = 256
_MAX_GRANTS = 10_000


class LimiterUnavailable(Exception):
    """Redis is unreachable and the limiter is configured to fail closed."""


class _UseLocal(Exception):
    """Count this request locally: the shared count could not be reached within the deadline."""


def _scaled(item: RateLimitItem, share: int) -> RateLimitItem:
    """The same limit divided among `share` counters (at least 1 request per window)."""
    if share <= 1:
        return item
    return type(item)(max(1, item.amount // share), item.multiples, item.namespace)


class AsyncCounter:
    """Counts requests per client: shared in Redis (reserving tokens in batches), memory as fallback.

    - slowapi's own check calls the synchronous `limits` storage on the event loop, one blocking
      round trip per request; under gunicorn (2 workers, wrk c=64) that cost ~47 % of throughput.
      Here the same library's asyncio storage is used, and far from the limit a worker reserves
      several tokens with one atomic `INCRBY` (see `reservation_size`), so most requests need no
      Redis round trip at all, while the shared count still never exceeds the limit. The price:
      tokens a worker reserved but did not use are not spent by others in that window (a client
      spread over many workers may be refused slightly before the exact limit, never after it).
    - Windows are fixed and aligned to the epoch (`Retry-After` = seconds to the window's end).
    - Every Redis round trip, and any wait behind another request's reservation, ends after
      `edge.rate_limit_redis_timeout_s`: a stalled Redis costs one request at most that long and
      never queues a client's requests one behind the other (the waiters count locally).
    - Redis unreachable → by default count in this process's memory with the limit divided by
      `server.workers x edge.replicas`, so the fleet as a whole still admits about the limit;
      `edge.rate_limit_redis_down=fail_closed` refuses instead (`LimiterUnavailable`). Redis is
      re-probed with back-off (1 s doubling to 32 s), like slowapi's `in_memory_fallback`.
    """

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.items = parse_many(settings.rate_limit)
        self.prefix = f"{settings.redis.key_prefix}:rl"
        self.memory = AsyncFixedWindow(AsyncMemoryStorage())
        self.timeout_s = settings.edge.rate_limit_redis_timeout_s
        self.fail_closed = settings.edge.rate_limit_redis_down == "fail_closed"
        self._redis_storage: AsyncRedisStorage | None = None
        share = 1
        url = settings.edge.rate_limit_redis_url or settings.redis.url
        if url is not None:
            share = settings.server.workers * settings.edge.replicas
            self._redis_storage = AsyncRedisStorage(
                url.get_secret_value(),
                implementation="redispy",
                key_prefix=self.prefix,
                socket_timeout=settings.redis.socket_timeout_s,
                socket_connect_timeout=settings.redis.connect_timeout_s,
            )
        # Without any Redis URL the count is per process by design (embedded mode, logged).
        self.local_items = [_scaled(item, share) for item in self.items]
        self._grants: OrderedDict[str, _Grant] = OrderedDict()
        self._pending: dict[str, asyncio.Future[None]] = {}
        self._clock = clock
        self.dead = False
        self._retry_at = 0.0
        self._backoff_s = 1.0

    async def aclose(self) -> None:
        """Close the Redis connection pool (at app shutdown; the pool is bound to this event loop)."""
        if self._redis_storage is not None:
            with contextlib.suppress(Exception):
                bridge: Any = self._redis_storage.bridge  # redis-py bridge (implementation="redispy")
                client = bridge.get_connection()
                await client.connection_pool.disconnect()

    def _use_redis(self) -> bool:
        return self._redis_storage is not None and not (self.dead and self._clock() < self._retry_at)

    def _mark_dead(self) -> None:
        if self.dead:
            self._backoff_s = min(self._backoff_s * 2, 32.0)
        self.dead = True
        self._retry_at = self._clock() + self._backoff_s

    async def hit(self, key: str) -> tuple[RateLimitItem, int] | None:
        """Count one request for `key`; None if allowed, else (exceeded limit, Retry-After seconds).

        Raises `LimiterUnavailable` only when configured to fail closed and Redis is unreachable.
        """
        for item, local_item in zip(self.items, self.local_items, strict=True):
            if self._use_redis():
                try:
                    retry_after = await self._hit_redis(item, key)
                except _UseLocal:  # another request's reservation is slow or failed: don't queue
                    retry_after = await self._local(local_item, key)
                except Exception:  # any storage failure (uvloop raises RuntimeError): never a 5xx
                    self._mark_dead()
                    retry_after = await self._local(local_item, key)
                else:
                    if self.dead:
                        self.dead, self._backoff_s = False, 1.0
            elif self._redis_storage is not None:
                retry_after = await self._local(local_item, key)
            else:
                retry_after = await self._hit_memory(item, key)
            if retry_after is not None:
                return item, retry_after
        return None

    async def _local(self, item: RateLimitItem, key: str) -> int | None:
        if self.fail_closed:
            raise LimiterUnavailable
        return await self._hit_memory(item, key)

    async def _hit_redis(self, item: RateLimitItem, key: str) -> int | None:
        assert self._redis_storage is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        period = item.get_expiry()
        grant_key = item.key_for(key)
        while True:
            now = time.time()
            window = int(now // period)
            grant = self._grants.get(grant_key)
            if grant is not None and grant.window == window:
                if grant.left > 0:
                    grant.left -= 1
                    return None
                if grant.seen >= item.amount:
                    # The shared count already reached the limit: refused until this window ends,
                    # whatever the other workers do; no need to ask Redis again.
                    return max(1, math.ceil((window + 1) * period - now))
            pending = self._pending.get(grant_key)
            if pending is None:
                break
            # Another request of this worker is reserving for the same client: share its result
            # rather than sending a burst of INCRBYs (and stranding their tokens), but only until
            # our own deadline; if it fails or is slow, count locally (it marks Redis dead itself).
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise _UseLocal
            done, _ = await asyncio.wait({pending}, timeout=remaining)
            if not done or self.dead:
                raise _UseLocal
        seen = grant.seen if grant is not None and grant.window == window else 0
        batch = reservation_size(item.amount, seen)
        done_future: asyncio.Future[None] = loop.create_future()
        self._pending[grant_key] = done_future
        try:
            async with asyncio.timeout_at(deadline):
                count = await self._redis_storage.incr(f"{grant_key}/{window}", period, amount=batch)
        finally:
            del self._pending[grant_key]
            done_future.set_result(None)
        granted = min(batch, item.amount - (count - batch))
        self._grants[grant_key] = _Grant(window=window, left=max(0, granted - 1), seen=count)
        self._grants.move_to_end(grant_key)
        while len(self._grants) > _MAX_GRANTS:
            self._grants.popitem(last=False)
        if granted > 0:
            return None
        return max(1, math.ceil((window + 1) * period - now))

    async def _hit_memory(self, item: RateLimitItem, key: str) -> int | None:
        if await self.memory.hit(item, key):
            return None
        try:
            reset_at, _remaining = await self.memory.get_window_stats(item, key)
            return max(1, math.ceil(reset_at - time.time()))
        except Exception:
            return int(item.get_expiry())


class RateGate:
    """The per-client check the edge runs: 429 problem+json with `Retry-After` over the limit.

    The edge calls `refused` outside the API-key check (floods of bad keys are throttled too) and
    passes the ASGI lifespan's `send` through `closing_send`, which closes the counter's Redis pool
    at shutdown, so the limiter needs no hook in the app's own lifespan.
    """

    def __init__(
        self,
        *,
        counter: AsyncCounter,
        enabled: bool,
        trusted_proxies: TrustedProxies,
        trusted_hops: int = 1,
        key_store: ApiKeyStore | None = None,
        exempt_paths: Iterable[str] = PROBE_PATHS,
    ) -> None:
        self.counter = counter
        self.enabled = enabled
        self.trusted = trusted_proxies
        self.trusted_hops = trusted_hops
        self.key_store = key_store
        self.exempt_paths = frozenset(exempt_paths)
        self._fallback_reported = False

    def _key(self, scope: Scope) -> str:
        if self.key_store is not None and self.key_store.enabled:
            client_id, _ = self.key_store.resolve(scope)
            if client_id is not None:
                return "key:" + client_id
        return "ip:" + client_ip(scope, self.trusted, self.trusted_hops)

    def applies(self, scope: Scope) -> bool:
        """True when this request is counted: limiting on, not a probe, not a CORS preflight."""
        return (
            self.enabled
            and scope["path"] not in self.exempt_paths
            and scope["method"] != "OPTIONS"  # CORS preflights are answered outside; never count them
        )

    async def refused(self, scope: Scope, send: Send) -> bool:
        """Count the request; send the 429 (or the fail-closed 503) and return True when refused."""
        state = scope.get("state")
        if not isinstance(state, (dict, MutableMapping)):  # dict first: the cheap check
            state = {}
            scope["state"] = state
        key = self._key(scope)
        state[_RATE_KEY] = key
        try:
            exceeded = await self.counter.hit(key)
        except LimiterUnavailable:
            self._report_fallback()
            await send_problem(
                send,
                503,
                "Service Unavailable",
                "The rate limiter's shared store is unreachable and this service fails closed.",
                [(b"retry-after", b"5")],
            )
            return True
        self._report_fallback()
        if exceeded is not None:
            RATE_LIMITED.inc()
            item, retry_after = exceeded
            await self._too_many(item, retry_after, send)
            return True
        return False

    def closing_send(self, send: Send) -> Send:
        """The lifespan's `send`, closing the counter's Redis pool once shutdown completes."""

        async def closing_send(message: MutableMapping[str, Any]) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self.counter.aclose()
            await send(message)

        return closing_send

    def _report_fallback(self) -> None:
        dead = self.counter.dead
        if dead != self._fallback_reported:
            self._fallback_reported = dead
            RATE_LIMIT_FALLBACK.set(1 if dead else 0)
            if dead:
                logger.warning("Rate-limit storage unreachable: counting in memory in this worker")
            else:
                logger.info("Rate-limit storage reachable again: counting in Redis")

    async def _too_many(self, item: RateLimitItem, retry_after: int, send: Send) -> None:
        limit_amount = str(item.amount)
        detail = str(item)
        headers = [
            (b"retry-after", str(retry_after).encode()),
            (b"x-ratelimit-limit", limit_amount.encode()),
            (b"x-ratelimit-remaining", b"0"),
        ]
        await send_problem(
            send,
            429,
            "Too Many Requests",
            f"Rate limit exceeded ({detail}). Retry after {retry_after} s.",
            headers,
        )


def _document_429(schema: dict[str, Any], limit: str) -> None:
    for operation in operations(schema, PROBE_PATHS):
        response = problem_response_doc(schema, f"Rate limit exceeded ({limit} per client)")
        response["headers"] = {
            "Retry-After": {"description": "Seconds until the window resets", "schema": {"type": "integer"}}
        }
        operation.setdefault("responses", {})["429"] = response


@dataclass(frozen=True)
class RateLimiting:
    """The limiter's parts, built once per app by the factory; `gate()` is what the edge runs."""

    settings: Settings
    limiter: Limiter
    counter: AsyncCounter

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiting:
        """Build the limiter (fails fast at start-up on a malformed limit string)."""
        parse_many(settings.rate_limit)
        return cls(settings=settings, limiter=build_limiter(settings), counter=AsyncCounter(settings))

    def gate(self, key_store: ApiKeyStore) -> RateGate:
        """The `RateGate` the edge runs (outside the API-key check)."""
        return RateGate(
            counter=self.counter,
            enabled=self.settings.rate_limit_enabled,
            trusted_proxies=TrustedProxies(self.settings.trusted_proxies),
            trusted_hops=self.settings.edge.trusted_proxy_hops,
            key_store=key_store,
        )

    def document(self, app: FastAPI) -> None:
        """Describe 429 in the OpenAPI document and log how requests are counted."""
        settings = self.settings
        if not settings.rate_limit_enabled:
            logger.warning("Rate limiting is disabled (CARBON_OPTIMIZER_RATE_LIMIT_ENABLED=false)")
            return
        extend_openapi(app, lambda schema: _document_429(schema, settings.rate_limit))
        if settings.redis.url is None:
            logger.warning(
                "No Redis URL: rate limits (%s) are counted per worker process", settings.rate_limit
            )
        else:
            logger.info("Rate limit %s per client, counted in Redis", settings.rate_limit)
