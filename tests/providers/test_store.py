"""The store contract under backend failure: every Redis failure is an outage, never an exception."""

from __future__ import annotations

from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from carbon_optimizer.providers.store import MemoryStore, PrefixedStore, RedisStore, build_store
from carbon_optimizer.settings import RedisSettings


class _FailingClient:
    """A stand-in Redis client whose every command raises `exc` (what a reset connection does)."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.calls = 0

    async def _fail(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        raise self.exc

    get = set = delete = exists = ping = _fail


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("unable to perform operation on <TCPTransport closed=True>; the handler is closed"),
        RedisConnectionError("Connection reset by peer"),
        ConnectionResetError(104, "Connection reset by peer"),
        OSError(113, "No route to host"),
        TimeoutError(),
    ],
    ids=["uvloop-runtime-error", "redis-connection-error", "reset", "oserror", "timeout"],
)
async def test_every_redis_failure_reads_as_a_miss_and_marks_the_store_degraded(exc: BaseException) -> None:
    now = [0.0]
    client = _FailingClient(exc)
    store = RedisStore(client, op_timeout_s=1.0, retry_after_failure_s=5.0, clock=lambda: now[0])  # type: ignore[arg-type]
    assert await store.get("k") is None
    await store.set("k", b"v", 10)
    assert await store.acquire_lock("k:lock", "t", 1) is None
    assert store.healthy is False
    assert store.last_error == type(exc).__name__
    # While known to be failing the store is skipped (no round trip per request) ...
    calls = client.calls
    assert await store.get("k") is None
    assert client.calls == calls
    # ... and probed again once the retry interval has passed.
    now[0] = 6.0
    assert await store.get("k") is None
    assert client.calls == calls + 1


async def test_cancellation_is_not_swallowed() -> None:
    import asyncio

    store = RedisStore(_FailingClient(asyncio.CancelledError()), op_timeout_s=1.0, retry_after_failure_s=5.0)  # type: ignore[arg-type]
    with pytest.raises(asyncio.CancelledError):
        await store.get("k")


async def test_prefixed_store_namespaces_keys() -> None:
    inner = MemoryStore()
    view = PrefixedStore(inner, "co:v1")
    await view.set("prices:aws:us-east-1:on_demand", b"x", 60)
    assert await inner.get("co:v1:prices:aws:us-east-1:on_demand") == b"x"
    assert await view.get("prices:aws:us-east-1:on_demand") == b"x"


def test_build_store_connects_to_nothing_and_needs_a_url() -> None:
    assert build_store(RedisSettings()) is None
    store = build_store(RedisSettings(url="redis://127.0.0.1:1/0"))
    assert isinstance(store, RedisStore)
    assert "127.0.0.1" not in repr(store)
