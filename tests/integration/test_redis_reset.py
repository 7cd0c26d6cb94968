"""Issue 11 item 1: a reset Redis connection, under uvloop as gunicorn runs it, is never an error."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import uvloop

from carbon_optimizer.providers.store import RedisStore
from carbon_optimizer.settings import RedisSettings
from tests.support.redis import RedisServer
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration


@pytest.fixture
def proxy(redis_server: RedisServer) -> Iterator[TcpProxy]:
    running = TcpProxy(("127.0.0.1", redis_server.port)).start()
    try:
        yield running
    finally:
        running.stop()


async def _round_trips(store: RedisStore, proxy: TcpProxy) -> list[bytes | None]:
    await store.set("k", b"v", 60)
    seen = [await store.get("k")]
    for _ in range(5):
        proxy.reset_all()  # every pooled connection now gets an RST
        await asyncio.sleep(0.05)
        seen.append(await store.get("k"))  # must not raise, whatever the loop says
        await store.set("k", b"v", 60)
    await asyncio.sleep(0.3)  # > retry_after_failure_s: the store probes Redis again
    seen.append(await store.get("k"))
    return seen


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_a_reset_connection_reads_as_a_miss_then_recovers(proxy: TcpProxy, loop: str) -> None:
    settings = RedisSettings(
        url=f"redis://127.0.0.1:{proxy.port}/0", retry_after_failure_s=0.2, socket_timeout_s=0.5
    )

    async def main() -> tuple[list[bytes | None], bool, str | None]:
        store = RedisStore.from_settings(settings)
        try:
            seen = await _round_trips(store, proxy)
            return seen, store.healthy, store.last_error
        finally:
            await store.aclose()

    factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        seen, healthy, last_error = runner.run(main())
    assert seen[0] == b"v"
    assert seen[-1] == b"v"  # back to hits once Redis answers again
    assert healthy
    assert all(value in (None, b"v") for value in seen)
    assert None in seen  # the resets were seen (as misses), not silently absorbed
    assert last_error is not None  # ... and recorded as an outage (its class name only)
