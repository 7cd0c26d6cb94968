"""Per-client rate limiting with slowapi, shared through Redis, degrading to memory when Redis dies.

Why it looks like this:
- The `Limiter` is built by `install_rate_limit` (called from the app factory), never at import:
  each gunicorn worker builds its own after the fork, and tests build apps with their own limits.
- Counters live in Redis (`storage_uri` = `CARBON_OPTIMIZER_REDIS__URL`) so every worker and every
  replica shares one count per client. Without a Redis URL the count is per process (logged).
- One application-wide limit (`CARBON_OPTIMIZER_RATE_LIMIT`, limits syntax such as `600/minute`)
  per client across all routes, fixed window (one Redis round trip per request). The client is the
  API key's non-secret client id when a *valid* key is presented (an invalid key must not buy a
  fresh bucket), else the client IP. `X-Forwarded-For` is honoured only when the direct peer is in
  `CARBON_OPTIMIZER_TRUSTED_PROXIES` (IPs or CIDRs), walking the chain from the right.
- A refused request is a 429 problem+json with `Retry-After` (seconds) and `X-RateLimit-*`.
- slowapi's `Limiter` holds the configuration (limit string, strategy, key prefix, enable switch,
  `storage_uri`), but the per-request hit goes through the same `limits` library's asyncio storage
  (`AsyncCounter`): slowapi's own check calls the synchronous storage on the event loop, and that
  blocking Redis round trip cost ~47 % of throughput under gunicorn (bench/bench_deploy.py).
- Redis down: count in per-process memory and re-probe Redis with back-off (1 s … 32 s), as
  slowapi's `in_memory_fallback_enabled` does; each Redis call is bounded by the Redis socket
  timeout, so a hung Redis costs at most one short timeout. Probes (`/healthz`, `/readyz`,
  `/metrics`) are never limited.
- Pure-ASGI middleware instead of slowapi's `BaseHTTPMiddleware` variant (hot path; see
  docs/architecture.md); it calls the limiter's request check the way slowapi's own ASGI
  middleware does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, MutableMapping
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
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from carbon_optimizer.api.security import (
    PROBE_PATHS,
    ApiKeyStore,
    extend_openapi,
    insert_middleware,
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


def client_ip(scope: Scope, trusted: TrustedProxies) -> str:
    """The caller's IP: the direct peer, or the right-most untrusted `X-Forwarded-For` hop."""
    client = scope.get("client")
    peer = client[0] if client else "unknown"
    if not trusted or not trusted.contains(peer):
        return peer
    hops: list[str] = []
    for name, value in scope.get("headers", ()):
        if name == b"x-forwarded-for":
            hops.extend(h.strip() for h in value.decode("latin-1").split(","))
    hops = [h for h in hops if h]
    # Right to left: each trusted proxy appended the address it saw; the first one we don't
    # trust is the client (anything left of it may be forged by that client).
    for hop in reversed(hops):
        if not trusted.contains(hop):
            return _normalise_ip(hop)
    return _normalise_ip(hops[0]) if hops else peer


def _normalise_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text[:64]  # not an IP (e.g. "unknown"): keep it bounded, it is only a bucket name


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
    if settings.redis.url is not None:
        storage_uri = settings.redis.url.get_secret_value()
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
    - Redis unreachable → count in this process's memory and re-probe Redis with back-off (1 s
      doubling to 32 s), like slowapi's `in_memory_fallback`.
    """

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.items = parse_many(settings.rate_limit)
        self.prefix = f"{settings.redis.key_prefix}:rl"
        self.memory = AsyncFixedWindow(AsyncMemoryStorage())
        self.timeout_s = settings.redis.socket_timeout_s
        self._redis_storage: AsyncRedisStorage | None = None
        if settings.redis.url is not None:
            self._redis_storage = AsyncRedisStorage(
                settings.redis.url.get_secret_value(),
                implementation="redispy",
                key_prefix=self.prefix,
                socket_timeout=settings.redis.socket_timeout_s,
                socket_connect_timeout=settings.redis.connect_timeout_s,
            )
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
        """Count one request for `key`; None if allowed, else (exceeded limit, Retry-After seconds)."""
        for item in self.items:
            if self._use_redis():
                try:
                    retry_after = await self._hit_redis(item, key)
                except Exception:  # any storage failure: count in memory, never fail the request
                    self._mark_dead()
                    retry_after = await self._hit_memory(item, key)
                else:
                    if self.dead:
                        self.dead, self._backoff_s = False, 1.0
            else:
                retry_after = await self._hit_memory(item, key)
            if retry_after is not None:
                return item, retry_after
        return None

    async def _hit_redis(self, item: RateLimitItem, key: str) -> int | None:
        assert self._redis_storage is not None
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
            # rather than sending a burst of INCRBYs (and stranding their tokens).
            await asyncio.shield(pending)
        seen = grant.seen if grant is not None and grant.window == window else 0
        batch = reservation_size(item.amount, seen)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending[grant_key] = done
        try:
            async with asyncio.timeout(self.timeout_s):
                count = await self._redis_storage.incr(f"{grant_key}/{window}", period, amount=batch)
        finally:
            del self._pending[grant_key]
            done.set_result(None)
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


class RateLimitMiddleware:
    """Pure-ASGI slowapi check: 429 problem+json with `Retry-After` when a client is over its limit."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: Limiter,
        counter: AsyncCounter,
        trusted_proxies: TrustedProxies,
        key_store: ApiKeyStore | None = None,
        exempt_paths: Iterable[str] = PROBE_PATHS,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.counter = counter
        self.trusted = trusted_proxies
        self.key_store = key_store
        self.exempt_paths = frozenset(exempt_paths)
        self._fallback_reported = False

    def _key(self, scope: Scope) -> str:
        if self.key_store is not None and self.key_store.enabled:
            client_id, _ = self.key_store.resolve(scope)
            if client_id is not None:
                return "key:" + client_id
        return "ip:" + client_ip(scope, self.trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if (
            scope["type"] != "http"
            or not self.limiter.enabled
            or scope["path"] in self.exempt_paths
            or scope["method"] == "OPTIONS"  # CORS preflights are answered outside; never count them
        ):
            await self.app(scope, receive, send)
            return
        state = scope.get("state")
        if not isinstance(state, MutableMapping):
            state = {}
            scope["state"] = state
        key = self._key(scope)
        state[_RATE_KEY] = key
        exceeded = await self.counter.hit(key)
        self._report_fallback()
        if exceeded is not None:
            RATE_LIMITED.inc()
            item, retry_after = exceeded
            await self._too_many(item, retry_after, send)
            return
        await self.app(scope, receive, send)

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


def _close_on_shutdown(app: FastAPI, counter: AsyncCounter) -> None:
    """Wrap the app's lifespan so the counter's Redis pool closes when the app stops."""
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with inner(a) as state:
            try:
                yield state
            finally:
                await counter.aclose()

    app.router.lifespan_context = lifespan


def install_rate_limit(app: FastAPI, settings: Settings) -> Limiter:
    """Build the limiter and install its middleware just outside API-key auth (if installed)."""
    from carbon_optimizer.api.security import ApiKeyMiddleware

    parse_many(settings.rate_limit)  # fail fast at start-up on a malformed limit string
    limiter = build_limiter(settings)
    counter = AsyncCounter(settings)
    app.state.limiter = limiter
    app.state.rate_counter = counter
    _close_on_shutdown(app, counter)
    store = getattr(app.state, "api_key_store", None)
    if store is None:
        store = ApiKeyStore.from_settings(settings)
        app.state.api_key_store = store
    insert_middleware(
        app,
        Middleware(
            RateLimitMiddleware,
            limiter=limiter,
            counter=counter,
            trusted_proxies=TrustedProxies(settings.trusted_proxies),
            key_store=store,
        ),
        outside_of=ApiKeyMiddleware,
    )
    if settings.rate_limit_enabled:
        extend_openapi(app, lambda schema: _document_429(schema, settings.rate_limit))
    if not settings.rate_limit_enabled:
        logger.warning("Rate limiting is disabled (CARBON_OPTIMIZER_RATE_LIMIT_ENABLED=false)")
    elif settings.redis.url is None:
        logger.warning("No Redis URL: rate limits (%s) are counted per worker process", settings.rate_limit)
    else:
        logger.info("Rate limit %s per client, counted in Redis", settings.rate_limit)
    return limiter
