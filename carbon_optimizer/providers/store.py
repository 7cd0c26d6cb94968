"""Every key-value store of the service, and the only module (with the rate limiter) that imports redis.

Why one module: the carbon cache and the price cache both keep bytes by key with a TTL, and both
must survive a failing backend the same way. Implementations:

- `MemoryStore`: in-process LRU with per-key expiry (the embedded default, and the test fake).
- `RedisStore`: shared by every worker and replica; also holds short cross-process locks
  (`SET NX PX`, compare-and-delete release) for the caches' single-flight.
- `FileStore`: one file per key, the price cache of the embedded mode, written by
  `carbon-optimizer prices refresh` and read by the server across restarts.
- `PrefixedStore`: a namespaced view (`co:v1:` + key) over any of them.

A store never raises on backend failure: every failure of Redis (refused, reset, timing out, a
stalled server, the `RuntimeError` uvloop raises on a connection reset under it, a protocol error)
reads as a miss or a dropped write and marks the store degraded, so an outage costs a request
nothing but cache hits and is never a 5xx. `build_store` is the one place a Redis client is made.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import json
import logging
import os
import tempfile
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import WatchError

from carbon_optimizer.metrics import CACHE_EVENTS, child
from carbon_optimizer.settings import RedisSettings

log = logging.getLogger(__name__)

T = TypeVar("T")


@runtime_checkable
class KeyValueStore(Protocol):
    """Bytes by key with a time-to-live."""

    name: str

    async def get(self, key: str) -> bytes | None:
        """Return the value, or None on a miss or a backend failure."""
        ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store the value for ttl_s seconds (best effort)."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the key (best effort)."""
        ...

    @property
    def healthy(self) -> bool:
        """False while the backend is failing (reported by /health and /readyz)."""
        ...


@runtime_checkable
class CacheStore(KeyValueStore, Protocol):
    """What the cache needs of a store beyond `KeyValueStore`: status, a probe and a close."""

    @property
    def last_error(self) -> str | None:
        """Short description of the last backend failure (no secrets), or None."""
        ...

    async def ping(self) -> bool:
        """Whether the backend answers now."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class LockingStore(Protocol):
    """A shared store that can also hold short cross-process locks (Redis)."""

    async def acquire_lock(self, key: str, token: str, ttl_s: float) -> bool | None:
        """True if acquired, False if held by someone else, None if the store is unavailable."""
        ...

    async def release_lock(self, key: str, token: str) -> None:
        """Release the lock if we still hold it."""
        ...

    async def lock_held(self, key: str) -> bool | None:
        """Whether anyone holds the lock (None: unavailable)."""
        ...


@runtime_checkable
class ScanningStore(Protocol):
    """A store that can delete every key matching a glob (the operators' clear-negative lever)."""

    async def delete_matching(self, pattern: str) -> int:
        """Delete keys matching the glob `pattern`; the number deleted (-1: store unavailable)."""
        ...


class MemoryStore:
    """In-process `KeyValueStore` (the embedded default): an LRU dict with per-key expiry."""

    name = "memory"

    def __init__(self, *, max_entries: int = 4096, clock: Callable[[], float] = time.monotonic) -> None:
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max_entries = max_entries
        self._clock = clock

    def __repr__(self) -> str:
        return f"MemoryStore(entries={len(self._data)})"

    @property
    def healthy(self) -> bool:
        """Always True: memory does not fail."""
        return True

    @property
    def last_error(self) -> str | None:
        """Always None."""
        return None

    async def get(self, key: str) -> bytes | None:
        """Return the value or None when absent/expired."""
        item = self._data.get(key)
        if item is None:
            return None
        expires_at, value = item
        if expires_at <= self._clock():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store with expiry, evicting the least recently used entry when full."""
        self._data[key] = (self._clock() + ttl_s, value)
        self._data.move_to_end(key)
        while len(self._data) > self._max_entries:
            self._data.popitem(last=False)

    async def delete(self, key: str) -> None:
        """Remove the key."""
        self._data.pop(key, None)

    async def incr(self, key: str, ttl_s: float) -> int | None:
        """Increment a counter (created with `ttl_s`); the new value."""
        item = self._data.get(key)
        now = self._clock()
        count = 1
        expires_at = now + ttl_s
        if item is not None and item[0] > now:
            expires_at = item[0]
            count = int(item[1]) + 1
        self._data[key] = (expires_at, str(count).encode())
        self._data.move_to_end(key)
        while len(self._data) > self._max_entries:
            self._data.popitem(last=False)
        return count

    async def delete_matching(self, pattern: str) -> int:
        """Delete every key matching the glob `pattern` (same syntax as Redis `SCAN MATCH`)."""
        doomed = [key for key in self._data if fnmatch.fnmatchcase(key, pattern)]
        for key in doomed:
            del self._data[key]
        return len(doomed)

    async def ping(self) -> bool:
        """Always reachable."""
        return True

    async def aclose(self) -> None:
        """Nothing to close."""


class RedisStore:
    """`KeyValueStore` on Redis that never raises: failures read as misses and mark it degraded."""

    name = "redis"

    def __init__(
        self,
        client: aioredis.Redis[bytes],
        *,
        op_timeout_s: float,
        retry_after_failure_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._op_timeout_s = op_timeout_s
        self._retry_after_failure_s = retry_after_failure_s
        self._clock = clock
        self._down_until = 0.0
        self._healthy = True
        self._last_error: str | None = None
        self._last_failure: float | None = None

    @classmethod
    def from_settings(cls, settings: RedisSettings) -> RedisStore:
        """Build from settings without connecting (connections are made lazily)."""
        if settings.url is None:
            raise ValueError("RedisStore needs settings.redis.url")
        # No client-side retries: one bounded attempt, then the store is skipped for a while.
        no_retry = Retry(NoBackoff(), 0)
        # Blocking: redis-py's plain pool raises at its bound (100) at once, so a 200-zone request
        # turned 100 of its reads into "Redis failing"; here they queue for a connection instead.
        pool = aioredis.BlockingConnectionPool.from_url(  # type: ignore[var-annotated,unused-ignore]
            settings.url.get_secret_value(),
            max_connections=settings.max_connections,
            timeout=settings.socket_timeout_s + settings.connect_timeout_s,
            socket_timeout=settings.socket_timeout_s,
            socket_connect_timeout=settings.connect_timeout_s,
            retry=no_retry,
            health_check_interval=0,
        )
        client: aioredis.Redis[bytes] = aioredis.Redis(connection_pool=pool, retry=no_retry)
        return cls(
            client,
            # A stalled server accepts TCP but never answers: bound every operation end to end.
            op_timeout_s=settings.socket_timeout_s + settings.connect_timeout_s,
            retry_after_failure_s=settings.retry_after_failure_s,
        )

    def __repr__(self) -> str:  # never the URL: it may carry a password
        return f"RedisStore(healthy={self._healthy})"

    @property
    def healthy(self) -> bool:
        """False from a failed operation until a later one succeeds."""
        return self._healthy

    @property
    def last_error(self) -> str | None:
        """Class name of the last failure (no message: it could name hosts or credentials)."""
        return self._last_error

    async def _run(self, operation: Callable[[], Awaitable[T]], default: T) -> tuple[bool, T]:
        if not self._healthy and self._clock() < self._down_until:
            return False, default  # skip Redis while it is known to be failing
        try:
            async with asyncio.timeout(self._op_timeout_s):
                result = await operation()
        except Exception as exc:
            self._mark_down(exc)
            return False, default
        if not self._healthy:
            log.info("redis cache reachable again")
        self._healthy = True
        return True, result

    def _mark_down(self, exc: BaseException) -> None:
        if self._healthy:
            log.warning("redis cache failing (%s); serving from the local tier", type(exc).__name__)
        self._healthy = False
        self._last_error = type(exc).__name__
        self._last_failure = self._clock()
        self._down_until = self._clock() + self._retry_after_failure_s
        child(CACHE_EVENTS, "kv", self.name, "error").inc()  # the store serves carbon and price caches

    async def get(self, key: str) -> bytes | None:
        """GET; None on a miss or a failure."""
        _, value = await self._run(lambda: self._client.get(key), None)
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """SET with PX expiry (best effort)."""
        await self._run(lambda: self._client.set(key, value, px=max(1, int(ttl_s * 1000))), None)

    async def delete(self, key: str) -> None:
        """DEL (best effort)."""
        await self._run(lambda: self._client.delete(key), None)

    async def incr(self, key: str, ttl_s: float) -> int | None:
        """INCR + PEXPIRE NX in one transaction; None while Redis fails (callers count locally)."""

        async def bump() -> int:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.pexpire(key, max(1, int(ttl_s * 1000)), nx=True)
                count, _ = await pipe.execute()
            return int(count)

        ok, value = await self._run(bump, None)
        return value if ok else None

    async def delete_matching(self, pattern: str) -> int:
        """SCAN MATCH + UNLINK in batches (never KEYS: it blocks Redis); -1 when Redis failed."""
        deleted, cursor = 0, 0
        while True:  # one bounded round trip per SCAN page, so a big keyspace never hits the op timeout
            ok, page = await self._run(partial(self._client.scan, cursor, match=pattern, count=500), None)
            if not ok or page is None:
                return -1
            cursor, keys = int(page[0]), list(page[1])
            if keys:
                ok, removed = await self._run(partial(self._client.unlink, *keys), 0)
                if not ok:
                    return -1
                deleted += int(removed)
            if cursor == 0:
                return deleted

    async def acquire_lock(self, key: str, token: str, ttl_s: float) -> bool | None:
        """SET key token NX PX ttl."""
        ok, result = await self._run(
            lambda: self._client.set(key, token, nx=True, px=max(1, int(ttl_s * 1000))), None
        )
        return bool(result) if ok else None

    async def release_lock(self, key: str, token: str) -> None:
        """Compare-and-delete (WATCH/MULTI), so a lock that expired and was re-taken is left alone."""

        async def release() -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                await pipe.watch(key)
                if await pipe.get(key) != token.encode():
                    await pipe.unwatch()
                    return
                pipe.multi()
                pipe.delete(key)
                with contextlib.suppress(WatchError):  # changed under us: it is not ours any more
                    await pipe.execute()

        await self._run(release, None)

    async def lock_held(self, key: str) -> bool | None:
        """EXISTS on the lock key."""
        ok, result = await self._run(lambda: self._client.exists(key), 0)
        return bool(result) if ok else None

    async def ping(self) -> bool:
        """PING (skipped, False, while Redis is known to be failing)."""
        ok, result = await self._run(lambda: self._client.ping(), False)  # type: ignore[no-untyped-call,unused-ignore]
        return ok and bool(result)

    async def aclose(self) -> None:
        """Close the client and its connection pool (a pool passed in is not closed by the client)."""
        with contextlib.suppress(Exception):  # closing a dead connection may fail any way
            await self._client.aclose()  # type: ignore[attr-defined,unused-ignore]
            await self._client.connection_pool.disconnect()


def build_store(settings: RedisSettings) -> RedisStore | None:
    """The shared store the settings ask for (None: no Redis configured); connects to nothing."""
    return RedisStore.from_settings(settings) if settings.url is not None else None


class PrefixedStore:
    """A KeyValueStore view that namespaces keys (`co:v1:` + key), like the carbon cache does."""

    def __init__(self, inner: KeyValueStore, prefix: str) -> None:
        self.inner = inner
        self.prefix = prefix.rstrip(":") + ":" if prefix else ""
        self.name = inner.name

    @property
    def healthy(self) -> bool:
        """The wrapped store's health."""
        return self.inner.healthy

    async def get(self, key: str) -> bytes | None:
        """Get `prefix + key`."""
        return await self.inner.get(self.prefix + key)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Set `prefix + key`."""
        await self.inner.set(self.prefix + key, value, ttl_s)

    async def delete(self, key: str) -> None:
        """Delete `prefix + key`."""
        await self.inner.delete(self.prefix + key)


_SUFFIX = ".entry"


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/carbon-optimizer/prices` (or `~/.cache/...`)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "carbon-optimizer" / "prices"


class FileStore:
    """Bytes by key with a TTL, one file per key; safe for several processes on one host."""

    name = "file"

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self._healthy = True

    @property
    def healthy(self) -> bool:
        """False after an I/O failure, until the next success."""
        return self._healthy

    def _path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]
        return self.directory / f"{digest}{_SUFFIX}"

    def _get_sync(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            with path.open("rb") as handle:
                header = json.loads(handle.readline())
                value = handle.read()
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            self._failed("read", exc)
            return None
        self._healthy = True
        if header.get("key") != key:
            return None  # a hash collision (or a foreign file): a miss, never someone else's value
        if float(header.get("expires_at", 0)) <= time.time():
            self._unlink(path)
            return None
        return value

    def _set_sync(self, key: str, value: bytes, ttl_s: float) -> None:
        header = json.dumps({"key": key, "expires_at": time.time() + ttl_s}).encode() + b"\n"
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=_SUFFIX)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(header)
                    handle.write(value)
                os.replace(tmp, self._path(key))
            except BaseException:
                self._unlink(Path(tmp))
                raise
        except OSError as exc:
            self._failed("write", exc)
            return
        self._healthy = True

    def _unlink(self, path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            self._failed("delete", exc)

    def _failed(self, what: str, exc: BaseException) -> None:
        self._healthy = False
        log.warning("price file cache %s failed in %s: %s", what, self.directory, type(exc).__name__)

    async def get(self, key: str) -> bytes | None:
        """Return the value, or None on a miss, an expired entry or an I/O failure."""
        return await asyncio.to_thread(self._get_sync, key)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store the value for ttl_s seconds (atomic replace; best effort)."""
        await asyncio.to_thread(self._set_sync, key, value, ttl_s)

    async def delete(self, key: str) -> None:
        """Remove the key (best effort)."""
        await asyncio.to_thread(self._unlink, self._path(key))
