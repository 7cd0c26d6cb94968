"""Identical requests within a minute reuse the answer; a new minute, new body or no-cache recompute."""

from __future__ import annotations

from datetime import datetime, timedelta

from carbon_optimizer.api.result_cache import ResultCache
from carbon_optimizer.app import AppOverrides
from tests.api.conftest import ClientFactory
from tests.fakes import FIXED_NOW, FakeCarbon

BODY = {
    "workload": {"duration_minutes": 60, "vcpus": 2, "memory_gib": 4},
    "locations": [{"zone": "DE"}, {"zone": "FR"}],
    "objective": {"mode": "carbon"},
}


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def test_hit_miss_bypass_and_minute_rollover(client_factory: ClientFactory) -> None:
    carbon = FakeCarbon({"DE": lambda h: 300.0, "FR": lambda h: 100.0})
    clock = Clock(FIXED_NOW)
    async with client_factory(overrides=AppOverrides(carbon=carbon, clock=clock)) as client:
        first = await client.post("/v1/optimize", json=BODY, headers={"x-request-id": "one"})
        calls_after_first = len(carbon.calls)
        second = await client.post("/v1/optimize", json=BODY, headers={"x-request-id": "two"})
        assert len(carbon.calls) == calls_after_first  # served without touching the data
        bypass = await client.post("/v1/optimize", json=BODY, headers={"cache-control": "no-cache"})
        assert len(carbon.calls) > calls_after_first
        other = await client.post("/v1/optimize", json={**BODY, "max_results": 2})
        clock.now = FIXED_NOW + timedelta(minutes=1)
        calls_before_rollover = len(carbon.calls)
        rolled = await client.post("/v1/optimize", json=BODY)
        assert len(carbon.calls) > calls_before_rollover
    assert first.headers["x-result-cache"] == "miss"
    assert second.headers["x-result-cache"] == "hit"
    assert bypass.headers["x-result-cache"] == "bypass"
    assert other.headers["x-result-cache"] == "miss"
    assert rolled.headers["x-result-cache"] == "miss"
    a, b = first.json(), second.json()
    assert (a["request_id"], b["request_id"]) == ("one", "two")
    assert a["options"] == b["options"]
    assert len(other.json()["options"]) == 2
    assert rolled.json()["window"]["earliest_start"] == "2026-06-03T10:01:00Z"


def test_entries_expire_and_are_bounded() -> None:
    now = [0.0]
    cache = ResultCache(max_entries=2, ttl_s=10, clock=lambda: now[0])
    cache.put(b"a", 1, {"x": 1})
    cache.put(b"b", 1, {"x": 2})
    cache.put(b"c", 1, {"x": 3})
    assert cache.get(b"a", 1) is None  # evicted, least recently used
    assert cache.get(b"c", 1) == {"x": 3}
    assert cache.get(b"c", 2) is None  # another minute
    now[0] = 11.0
    assert cache.get(b"c", 1) is None  # expired
    off = ResultCache(max_entries=0)
    off.put(b"a", 1, {"x": 1})
    assert off.get(b"a", 1) is None


def test_a_key_hashed_once_finds_what_get_and_put_store() -> None:
    cache = ResultCache(max_entries=4, ttl_s=10)
    key = cache.key(b"body", 7)
    assert cache.lookup(key) is None
    cache.store(key, {"x": 1}, encoded_size=7)
    assert cache.get(b"body", 7) == {"x": 1}
    assert cache.get(b"body", 8) is None
    cache.put(b"other", 7, {"x": 2})
    assert cache.lookup(cache.key(b"other", 7)) == {"x": 2}
    assert cache.lookup(cache.key(b"other", 6)) is None


async def test_no_cache_anywhere_in_the_first_cache_control_bypasses(client_factory: ClientFactory) -> None:
    async with client_factory() as client:
        await client.post("/v1/optimize", json=BODY)
        hit = await client.post("/v1/optimize", json=BODY, headers={"cache-control": "max-age=0"})
        bypass = await client.post(
            "/v1/optimize", json=BODY, headers={"cache-control": "max-age=0, no-cache"}
        )
    assert hit.headers["x-result-cache"] == "hit"
    assert bypass.headers["x-result-cache"] == "bypass"
