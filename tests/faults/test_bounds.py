"""Issue 11 item 10: per-worker memory the edge keeps is bounded (result cache bytes, cool-downs)."""

from __future__ import annotations

from typing import Any

import pytest

from carbon_optimizer.api.result_cache import ResultCache
from carbon_optimizer.errors import ProviderUnavailable
from carbon_optimizer.providers.carbon.base import Fetched, SeriesKind, SeriesRequest, Signal
from carbon_optimizer.providers.carbon.cache import CachedSeriesSource
from carbon_optimizer.providers.store import MemoryStore
from carbon_optimizer.settings import CacheSettings


def answer(n_options: int) -> dict[str, Any]:
    return {"options": [{"location": f"zone-{i}", "score": i * 0.5} for i in range(n_options)]}


def test_result_cache_is_bounded_by_bytes_not_only_entries() -> None:
    cache = ResultCache(max_entries=10_000, ttl_s=60, max_bytes=64 * 1024)
    big_body = b'{"workload": {}, "pad": "' + b"x" * 200_000 + b'"}'
    for i in range(500):
        cache.put(big_body + str(i).encode(), 1, answer(20))
    assert cache.nbytes <= 64 * 1024
    assert 0 < len(cache) < 500
    # Keys are digests: the 200 KB bodies are not kept (the byte count would be ~100 MB otherwise).
    assert cache.get(big_body + b"499", 1) is not None
    assert cache.get(big_body + b"0", 1) is None  # evicted, oldest first


def test_answer_larger_than_the_budget_is_not_cached() -> None:
    cache = ResultCache(max_entries=10, ttl_s=60, max_bytes=1024)
    cache.put(b"{}", 1, answer(500))
    assert len(cache) == 0
    assert cache.nbytes == 0


class AlwaysDown:
    name = "down"
    signals = frozenset({Signal.AVERAGE})

    def covers(self, zone: str) -> bool:
        return True

    async def fetch(self, request: SeriesRequest) -> Fetched:
        raise ProviderUnavailable("upstream 503")


async def test_failure_cooldown_map_is_bounded() -> None:
    now = [1000.0]
    cache = CachedSeriesSource(
        AlwaysDown(),
        MemoryStore(clock=lambda: now[0]),
        CacheSettings(local_max_entries=16),
        clock=lambda: now[0],
        monotonic=lambda: now[0],
        failure_cooldown_s=300,
    )
    for i in range(500):
        with pytest.raises(ProviderUnavailable):
            await cache.fetch(SeriesRequest(SeriesKind.FORECAST, f"Z{i}"))
    assert len(cache.tiers._cooling) <= 16
