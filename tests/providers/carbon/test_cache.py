"""Cache unit tests: byte format, stores, tiers, single-flight, negative and stale entries.

fakeredis stands in for Redis here only (integration tests use a real redis-server).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import fakeredis
import numpy as np
import pytest
from pydantic import SecretStr

from carbon_optimizer.domain.models import CarbonSeries, SourceRun
from carbon_optimizer.errors import (
    NoDataForZone,
    ProviderAuthError,
    ProviderError,
    ProviderNotEntitled,
    ProviderUnavailable,
)
from carbon_optimizer.providers.carbon.base import Fetched, SeriesKind, SeriesRequest, Signal
from carbon_optimizer.providers.carbon.cache import (
    CachedSeriesSource,
    CacheEntry,
    decode_entry,
    encode_entry,
    mark_stale,
)
from carbon_optimizer.providers.store import MemoryStore, RedisStore
from carbon_optimizer.settings import CacheSettings, RedisSettings
from tests.support.clock import T0
from tests.support.clock import ManualClock as Clock
from tests.support.polling import eventually

FORECAST_DE = SeriesRequest(SeriesKind.FORECAST, "DE")


def make_series(
    zone: str = "DE", values: list[float] | None = None, label: str = "x:forecast"
) -> CarbonSeries:
    vals = np.array(values if values is not None else [100.0, 120.5, float("nan"), 90.0])
    return CarbonSeries(
        zone=zone,
        start=datetime(2023, 6, 2, 12, tzinfo=UTC),
        step=timedelta(hours=1),
        values=vals,
        runs=(SourceRun(0, len(vals), label),),
    )


@dataclass
class FakeSource:
    """Records calls; answers with a series, or raises queued errors; can be held on a gate."""

    clock: Clock
    name: str = "fake"
    calls: list[SeriesRequest] = field(default_factory=list)
    errors: list[ProviderError] = field(default_factory=list)
    gate: asyncio.Event | None = None
    value: float = 100.0
    signals: frozenset[Signal] = frozenset({Signal.AVERAGE})

    def covers(self, zone: str) -> bool:
        return True

    async def fetch(self, request: SeriesRequest) -> Fetched:
        self.calls.append(request)
        if self.gate is not None:
            await self.gate.wait()
        if self.errors:
            raise self.errors.pop(0)
        return Fetched(
            series=make_series(request.zone, [self.value, self.value + 1]),
            fetched_at=datetime.fromtimestamp(self.clock(), UTC),
        )


def settings(**overrides: Any) -> CacheSettings:
    base: dict[str, Any] = {
        "forecast_ttl_s": 900,
        "negative_ttl_s": 600,
        "stale_max_age_s": 3600,
        "local_ttl_s": 30,
        "lock_wait_s": 1.0,
    }
    return CacheSettings(**(base | overrides))


def memory_cache(clock: Clock, source: FakeSource, **overrides: Any) -> CachedSeriesSource:
    return CachedSeriesSource(
        source,
        MemoryStore(clock=clock),
        settings(**overrides),
        clock=clock,
        monotonic=clock,
        failure_cooldown_s=5,
    )


# ----- byte format -----


def test_entry_round_trip_is_zero_copy_numpy() -> None:
    fetched = Fetched(
        series=make_series(label="electricitymaps:forecast"),
        fetched_at=datetime.fromtimestamp(T0, UTC),
        issued_at=datetime.fromtimestamp(T0 - 60, UTC),
    )
    data = encode_entry(CacheEntry(fresh_until=T0 + 900, value=fetched))
    assert b"[100" not in data  # values are raw float64s, not a JSON list
    entry = decode_entry(data)
    assert entry is not None
    assert entry.value is not None
    series = entry.value.series
    np.testing.assert_array_equal(series.values, fetched.series.values)  # NaN survives
    assert series.values.dtype == np.dtype("<f8")
    assert not series.values.flags.writeable  # a view on the cached bytes, shared safely
    assert series.start == fetched.series.start
    assert series.step == timedelta(hours=1)
    assert series.runs == fetched.series.runs
    assert entry.value.fetched_at == fetched.fetched_at
    assert entry.value.issued_at == fetched.issued_at
    assert entry.fresh_until == T0 + 900


def test_negative_entry_round_trip_reraises_its_kind() -> None:
    entry = decode_entry(encode_entry(CacheEntry(fresh_until=T0, negative=("not_entitled", "no plan"))))
    assert entry is not None
    with pytest.raises(ProviderNotEntitled, match="no plan"):
        entry.result()


@pytest.mark.parametrize(
    "data", [b"", b"garbage", b"COC1\xff\xff\xff\xff{", b'COC1\x08\x00\x00\x00{"v": 99}']
)
def test_foreign_or_corrupt_bytes_read_as_miss(data: bytes) -> None:
    assert decode_entry(data) is None


def test_mark_stale_relabels_once() -> None:
    fetched = Fetched(series=make_series(label="electricitymaps:forecast"), fetched_at=datetime.now(UTC))
    stale = mark_stale(mark_stale(fetched, "boom"), "boom")
    assert [r.label for r in stale.series.runs] == ["electricitymaps:forecast(stale)"]
    assert stale.stale
    assert stale.error == "boom"
    assert stale.series.values is fetched.series.values


# ----- MemoryStore -----


async def test_memory_store_expiry_and_lru() -> None:
    clock = Clock()
    store = MemoryStore(max_entries=2, clock=clock)
    await store.set("a", b"1", 10)
    await store.set("b", b"2", 10)
    assert await store.get("a") == b"1"  # touch a: b is now least recent
    await store.set("c", b"3", 10)
    assert await store.get("b") is None
    assert await store.get("a") == b"1"
    clock.now += 11
    assert await store.get("a") is None
    await store.delete("c")
    assert await store.get("c") is None
    assert store.healthy
    assert await store.ping()


# ----- keys -----


def test_keys_are_versioned_and_distinct() -> None:
    clock = Clock()
    cache = CachedSeriesSource(
        FakeSource(clock), MemoryStore(), settings(), key_prefix="co:v1", variant="lifecycle-h72"
    )
    assert cache.key_for(FORECAST_DE) == "co:v1:carbon:v1:lifecycle-h72:forecast:DE"
    a = datetime(2023, 5, 1, tzinfo=UTC)
    past = SeriesRequest(SeriesKind.PAST_RANGE, "DE", a, a + timedelta(days=2))
    assert cache.key_for(past).startswith("co:v1:carbon:v1:lifecycle-h72:past-range:DE:")
    assert cache.key_for(past) != cache.key_for(
        SeriesRequest(SeriesKind.PAST_RANGE, "DE", a, a + timedelta(days=3))
    )
    assert cache.ttl_for(SeriesKind.FORECAST) < cache.ttl_for(SeriesKind.HISTORY)


# ----- hits, misses, expiry -----


async def test_miss_then_hit_then_expiry() -> None:
    clock = Clock()
    source = FakeSource(clock)
    cache = memory_cache(clock, source)
    first = await cache.fetch(FORECAST_DE)
    second = await cache.fetch(FORECAST_DE)
    assert len(source.calls) == 1
    assert second.series.values.tolist() == first.series.values.tolist()
    clock.now += 901
    await cache.fetch(FORECAST_DE)
    assert len(source.calls) == 2


async def test_peek_answers_the_local_tiers_fresh_object_and_nothing_else() -> None:
    clock = Clock()
    source = FakeSource(clock, errors=[ProviderNotEntitled("no forecast", source="fake")])
    cache = memory_cache(clock, source)
    assert cache.peek(FORECAST_DE) is None  # nothing fetched yet
    with pytest.raises(ProviderNotEntitled):
        await cache.fetch(FORECAST_DE)
    assert cache.peek(FORECAST_DE) is None  # a negative marker is never a value
    clock.now += 601  # the marker expired
    fetched = await cache.fetch(FORECAST_DE)
    assert cache.peek(FORECAST_DE) is fetched  # the very object `fetch` answers from memory
    assert await cache.fetch(FORECAST_DE) is fetched
    assert len(source.calls) == 2  # peeking never calls upstream
    clock.now += 901  # expired: peek leaves the refresh to `fetch`
    assert cache.peek(FORECAST_DE) is None


async def test_single_flight_in_process() -> None:
    clock = Clock()
    source = FakeSource(clock, gate=asyncio.Event())
    cache = memory_cache(clock, source)
    tasks = [asyncio.create_task(cache.fetch(FORECAST_DE)) for _ in range(50)]
    await asyncio.sleep(0.01)
    assert source.gate is not None
    source.gate.set()
    results = await asyncio.gather(*tasks)
    assert len(source.calls) == 1
    assert {r.series.values[0] for r in results} == {100.0}


async def test_a_caller_giving_up_does_not_cancel_the_shared_fetch() -> None:
    clock = Clock()
    source = FakeSource(clock, gate=asyncio.Event())
    cache = memory_cache(clock, source)
    patient = asyncio.create_task(cache.fetch(FORECAST_DE))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.02):
            await cache.fetch(FORECAST_DE)
    assert source.gate is not None
    source.gate.set()
    assert (await patient).series.values[0] == 100.0
    await cache.fetch(FORECAST_DE)
    assert len(source.calls) == 1


# ----- negative caching -----


@pytest.mark.parametrize(
    "error",
    [NoDataForZone("no recent data"), ProviderNotEntitled("not in plan"), ProviderAuthError("bad token")],
)
async def test_definite_answers_are_cached_negatively(error: ProviderError) -> None:
    clock = Clock()
    source = FakeSource(clock, errors=[error])
    cache = memory_cache(clock, source)
    for _ in range(3):
        with pytest.raises(type(error)):
            await cache.fetch(FORECAST_DE)
    assert len(source.calls) == 1
    clock.now += 601
    assert (await cache.fetch(FORECAST_DE)).series.values[0] == 100.0
    assert len(source.calls) == 2


async def test_transient_failures_are_not_cached() -> None:
    clock = Clock()
    source = FakeSource(clock, errors=[ProviderUnavailable("down")])
    cache = memory_cache(clock, source)
    with pytest.raises(ProviderUnavailable):
        await cache.fetch(FORECAST_DE)
    clock.now += 6  # past the per-key cool-down
    assert (await cache.fetch(FORECAST_DE)).series.values[0] == 100.0
    assert len(source.calls) == 2


async def test_a_failed_key_cools_down_before_asking_upstream_again() -> None:
    clock = Clock()
    source = FakeSource(clock)
    cache = memory_cache(clock, source)
    await cache.fetch(FORECAST_DE)
    clock.now += 1000
    source.errors.append(ProviderUnavailable("down"))
    assert (await cache.fetch(FORECAST_DE)).stale
    again = await cache.fetch(FORECAST_DE)  # e.g. the same request's baseline: no second wait
    assert again.stale
    assert len(source.calls) == 2

    forecast_fr = SeriesRequest(SeriesKind.FORECAST, "FR")
    source.errors.append(ProviderUnavailable("down"))
    with pytest.raises(ProviderUnavailable, match="down"):
        await cache.fetch(forecast_fr)
    with pytest.raises(ProviderUnavailable, match="recent failure"):  # no stale copy: fails fast
        await cache.fetch(forecast_fr)
    assert len(source.calls) == 3
    clock.now += 6
    assert not (await cache.fetch(forecast_fr)).stale
    assert not (await cache.fetch(FORECAST_DE)).stale
    assert len(source.calls) == 5


# ----- stale-while-error -----


async def test_stale_value_served_on_upstream_failure_within_max_age() -> None:
    clock = Clock()
    source = FakeSource(clock)
    cache = memory_cache(clock, source, stale_max_age_s=3600)
    await cache.fetch(FORECAST_DE)
    clock.now += 1000  # expired (ttl 900), within stale max age
    source.errors.append(ProviderUnavailable("HTTP 503"))
    stale = await cache.fetch(FORECAST_DE)
    assert stale.stale
    assert stale.error is not None
    assert "HTTP 503" in stale.error
    assert [r.label for r in stale.series.runs] == ["x:forecast(stale)"]
    assert stale.series.values[0] == 100.0

    clock.now += 3600  # now older than stale_max_age_s
    source.errors.append(ProviderUnavailable("HTTP 503"))
    with pytest.raises(ProviderUnavailable):
        await cache.fetch(FORECAST_DE)


async def test_recovers_fresh_value_after_outage() -> None:
    clock = Clock()
    source = FakeSource(clock)
    cache = memory_cache(clock, source)
    await cache.fetch(FORECAST_DE)
    clock.now += 1000
    source.errors.append(ProviderUnavailable("down"))
    assert (await cache.fetch(FORECAST_DE)).stale
    source.value = 200.0
    clock.now += 6  # past the per-key cool-down
    fresh = await cache.fetch(FORECAST_DE)
    assert not fresh.stale
    assert fresh.series.values[0] == 200.0


# ----- shared store (fakeredis) -----


class CountingRedis(fakeredis.FakeAsyncRedis):  # type: ignore[misc,unused-ignore]
    """Counts GETs so the tests can see when the local tier spares Redis."""

    gets = 0

    async def get(self, name: Any) -> Any:
        type(self).gets += 1
        return await super().get(name)


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


def redis_store(server: fakeredis.FakeServer, clock: Clock | None = None) -> RedisStore:
    client = CountingRedis(server=server)
    return RedisStore(client, op_timeout_s=0.5, retry_after_failure_s=5.0, clock=clock or Clock())


async def test_second_process_reads_what_the_first_fetched(server: fakeredis.FakeServer) -> None:
    clock = Clock()
    source_a, source_b = FakeSource(clock), FakeSource(clock)
    a = CachedSeriesSource(source_a, redis_store(server), settings(), clock=clock)
    b = CachedSeriesSource(source_b, redis_store(server), settings(), clock=clock)
    await a.fetch(FORECAST_DE)
    got = await b.fetch(FORECAST_DE)
    assert (len(source_a.calls), len(source_b.calls)) == (1, 0)
    assert got.series.values[0] == 100.0
    ttl_ms = await CountingRedis(server=server).pttl(a.key_for(FORECAST_DE))
    assert 900_000 + 3_600_000 - 5_000 < ttl_ms <= 900_000 + 3_600_000  # fresh + stale window


async def test_local_tier_spares_redis_until_local_ttl(server: fakeredis.FakeServer) -> None:
    clock = Clock()
    cache = CachedSeriesSource(FakeSource(clock), redis_store(server), settings(local_ttl_s=30), clock=clock)
    await cache.fetch(FORECAST_DE)
    before = CountingRedis.gets
    for _ in range(100):
        await cache.fetch(FORECAST_DE)
    assert CountingRedis.gets == before
    clock.now += 31
    await cache.fetch(FORECAST_DE)
    assert CountingRedis.gets == before + 1


async def test_cross_process_single_flight_via_lock(server: fakeredis.FakeServer) -> None:
    clock = Clock()
    gate = asyncio.Event()
    source_a, source_b = FakeSource(clock, gate=gate), FakeSource(clock)
    # A generous lock wait: on a loaded CI machine b may poll for more than a second.
    a = CachedSeriesSource(source_a, redis_store(server), settings(lock_wait_s=10), clock=clock)
    b = CachedSeriesSource(source_b, redis_store(server), settings(lock_wait_s=10), clock=clock)
    task_a = asyncio.create_task(a.fetch(FORECAST_DE))
    await eventually(lambda: source_a.calls, 5.0, 0.001)  # a holds the lock and waits upstream
    task_b = asyncio.create_task(b.fetch(FORECAST_DE))
    await asyncio.sleep(0.05)
    assert not task_b.done()  # b polls behind the lock instead of calling upstream
    gate.set()
    got_a, got_b = await asyncio.gather(task_a, task_b)
    assert (len(source_a.calls), len(source_b.calls)) == (1, 0)
    assert got_b.series.values[0] == got_a.series.values[0]


class SlowWriteStore(RedisStore):
    """A worker whose write of the fetched answer is slow (a starved CPU, a slow Redis)."""

    def __init__(self, server: fakeredis.FakeServer, gate: asyncio.Event) -> None:
        super().__init__(CountingRedis(server=server), op_timeout_s=0.5, retry_after_failure_s=5.0)
        self.gate = gate

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self.gate.wait()
        await super().set(key, value, ttl_s)


async def test_the_lock_is_held_until_the_answer_is_in_the_store(server: fakeredis.FakeServer) -> None:
    # A waiter that sees the lock gone reads the store once more and gives up if the answer is
    # not there: so the holder must write it before releasing. (Releasing first served the
    # other process's callers the fallback whenever the write lagged: a 2-process test, under
    # load, 3 runs in 8.)
    clock = Clock()
    write = asyncio.Event()
    source_a, source_b = FakeSource(clock), FakeSource(clock)
    a = CachedSeriesSource(source_a, SlowWriteStore(server, write), settings(lock_wait_s=10), clock=clock)
    b = CachedSeriesSource(source_b, redis_store(server), settings(lock_wait_s=10), clock=clock)
    task_a = asyncio.create_task(a.fetch(FORECAST_DE))
    await eventually(lambda: source_a.calls, 5.0, 0.001)  # a has its answer, and is writing it
    task_b = asyncio.create_task(b.fetch(FORECAST_DE))
    await asyncio.sleep(0.1)
    assert not task_b.done()  # b still waits behind a's lock
    write.set()
    got_a, got_b = await asyncio.gather(task_a, task_b)
    assert (len(source_a.calls), len(source_b.calls)) == (1, 0)
    assert not got_b.stale
    assert got_b.series.values[0] == got_a.series.values[0]


async def test_waiter_stops_when_lock_holder_fails(server: fakeredis.FakeServer) -> None:
    clock = Clock()
    gate = asyncio.Event()
    source_a = FakeSource(clock, gate=gate, errors=[ProviderUnavailable("down")])
    source_b = FakeSource(clock)
    a = CachedSeriesSource(source_a, redis_store(server), settings(lock_wait_s=5), clock=clock)
    b = CachedSeriesSource(source_b, redis_store(server), settings(lock_wait_s=5), clock=clock)
    task_a = asyncio.create_task(a.fetch(FORECAST_DE))
    # a holds the lock (a fixed sleep lost this race under load)
    await eventually(lambda: source_a.calls, 5.0, 0.001)
    task_b = asyncio.create_task(b.fetch(FORECAST_DE))
    await asyncio.sleep(0.1)  # b is polling behind the lock
    gate.set()
    loop = asyncio.get_running_loop()
    started = loop.time()
    for task in (task_a, task_b):
        with pytest.raises(ProviderUnavailable):
            await task
    assert loop.time() - started < 1.0  # far less than lock_wait_s
    assert len(source_b.calls) == 0


async def test_redis_failure_degrades_then_recovers() -> None:
    server = fakeredis.FakeServer()
    clock = Clock()
    store = RedisStore(CountingRedis(server=server), op_timeout_s=0.5, retry_after_failure_s=5, clock=clock)
    source = FakeSource(clock)
    cache = CachedSeriesSource(source, store, settings(local_ttl_s=1), clock=clock)
    await cache.fetch(FORECAST_DE)
    assert store.healthy

    server.connected = False
    clock.now += 2  # past the local TTL: the cache asks Redis, which fails
    got = await cache.fetch(FORECAST_DE)
    assert got.series.values[0] == 100.0  # served from the still-fresh local copy
    assert not store.healthy
    assert store.last_error == "ConnectionError"
    assert cache.health()["status"] == "degraded"
    assert len(source.calls) == 1

    before = CountingRedis.gets
    clock.now += 1
    await cache.fetch(SeriesRequest(SeriesKind.FORECAST, "FR"))  # miss while Redis is skipped
    assert CountingRedis.gets == before  # no Redis I/O inside retry_after_failure_s
    assert len(source.calls) == 2

    server.connected = True
    clock.now += 5
    await cache.fetch(SeriesRequest(SeriesKind.FORECAST, "ES"))
    assert store.healthy
    assert cache.health()["status"] == "ok"


async def test_redis_store_lock_semantics(server: fakeredis.FakeServer) -> None:
    store = redis_store(server)
    assert await store.acquire_lock("l", "a", 5) is True
    assert await store.acquire_lock("l", "b", 5) is False
    await store.release_lock("l", "b")  # not ours: stays
    assert await store.lock_held("l") is True
    await store.release_lock("l", "a")
    assert await store.lock_held("l") is False
    assert await store.ping()
    await store.aclose()


async def test_redis_store_never_shows_the_url() -> None:
    store = RedisStore.from_settings(
        RedisSettings(url=SecretStr("redis://:s3cret-pw@127.0.0.1:1/0"), connect_timeout_s=0.05)
    )
    assert await store.get("x") is None
    texts = [repr(store), str(store.last_error)]
    assert all("s3cret-pw" not in t and "127.0.0.1" not in t for t in texts)
    await store.aclose()


# ----- background refresh -----


async def test_background_refresh_warms_and_renews_entries() -> None:
    clock = Clock()
    source = FakeSource(clock)
    woke = asyncio.Event()

    async def fast_sleep(seconds: float) -> None:
        clock.now += seconds
        woke.set()
        await asyncio.sleep(0)

    cache = CachedSeriesSource(
        source,
        MemoryStore(clock=clock),
        settings(forecast_ttl_s=100, history_ttl_s=1000),
        clock=clock,
        sleep=fast_sleep,
    )
    cache.start_background_refresh(["DE", "FR"])
    for _ in range(200):
        await asyncio.sleep(0)
        if clock.now > T0 + 300:
            break
    await cache.aclose()
    zones = {(c.kind, c.zone) for c in source.calls}
    assert zones == {(k, z) for k in (SeriesKind.FORECAST, SeriesKind.HISTORY) for z in ("DE", "FR")}
    forecast_calls = sum(1 for c in source.calls if c.kind is SeriesKind.FORECAST)
    # ~3 forecast lifetimes elapsed: renewed before each expiry, not on every wake-up
    assert 2 * 2 <= forecast_calls <= 5 * 2
    assert cache.health()["background_refresh"] is False


async def test_aclose_cancels_fetches_still_in_flight() -> None:
    clock = Clock()
    cache = memory_cache(clock, FakeSource(clock, gate=asyncio.Event()))  # upstream never answers
    caller = asyncio.create_task(cache.fetch(FORECAST_DE))
    await asyncio.sleep(0.01)
    assert cache.health()["inflight"] == 1
    await cache.aclose()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert cache.health()["inflight"] == 0


async def test_refresh_skips_fresh_entries() -> None:
    clock = Clock()
    source = FakeSource(clock)
    cache = memory_cache(clock, source)
    assert await cache.refresh(FORECAST_DE) is True
    assert await cache.refresh(FORECAST_DE, min_remaining_s=100) is False
    assert len(source.calls) == 1


# ----- issue 11: negative markers beside the good value, no write-back, empty answers -----


async def test_a_negative_answer_never_overwrites_the_last_good_value() -> None:
    clock = Clock()
    source = FakeSource(clock)
    store = MemoryStore(clock=lambda: clock.now)
    cache = CachedSeriesSource(source, store, settings(), clock=clock, monotonic=clock)
    await cache.fetch(FORECAST_DE)
    good_key = cache.key_for(FORECAST_DE)
    good_bytes = await store.get(good_key)
    clock.now += 1000  # expired
    source.errors.append(ProviderAuthError("token rejected"))
    served = await cache.fetch(FORECAST_DE)
    # Stale live data is preferred to fallback, and the good entry is still there beside the marker.
    assert served.stale
    assert "ProviderAuthError" in (served.error or "")
    assert await store.get(good_key) == good_bytes
    marker = decode_entry(await store.get(good_key + ":neg") or b"")
    assert marker is not None
    assert marker.negative == ("auth", "token rejected")


async def test_negative_markers_live_seconds_with_back_off_not_the_cap() -> None:
    clock = Clock()
    source = FakeSource(clock)
    store = MemoryStore(clock=lambda: clock.now)
    cache = CachedSeriesSource(
        source, store, settings(negative_ttl_s=600, negative_base_s=5.0), clock=clock, monotonic=clock
    )
    lifetimes = []
    for _ in range(4):
        source.errors.append(ProviderNotEntitled("plan"))
        with pytest.raises(ProviderNotEntitled):
            await cache.fetch(FORECAST_DE)
        marker = decode_entry(await store.get(cache.key_for(FORECAST_DE) + ":neg") or b"")
        assert marker is not None
        lifetimes.append(round(marker.fresh_until - clock.now))
        clock.now += lifetimes[-1] + 0.5  # past the marker (and the local tier)
    assert lifetimes == [5, 10, 20, 40]
    # The upstream recovers: one good answer clears the marker for every worker.
    assert not (await cache.fetch(FORECAST_DE)).stale
    assert await store.get(cache.key_for(FORECAST_DE) + ":neg") is None


async def test_a_negative_marker_in_the_store_makes_other_workers_serve_stale_not_fallback() -> None:
    clock = Clock()
    store = MemoryStore(clock=lambda: clock.now)
    first_source, second_source = FakeSource(clock), FakeSource(clock)
    first = CachedSeriesSource(first_source, store, settings(), clock=clock, monotonic=clock)
    second = CachedSeriesSource(second_source, store, settings(), clock=clock, monotonic=clock)
    await first.fetch(FORECAST_DE)
    await second.fetch(FORECAST_DE)  # second has the good value locally too
    clock.now += 1000
    first_source.errors.append(NoDataForZone("404"))
    assert (await first.fetch(FORECAST_DE)).stale
    calls = len(second_source.calls)
    answer = await second.fetch(FORECAST_DE)  # obeys the marker: no upstream call, stale data
    assert answer.stale
    assert len(second_source.calls) == calls


async def test_a_local_copy_is_never_written_back_into_an_emptied_store() -> None:
    clock = Clock()
    store = MemoryStore(clock=lambda: clock.now)
    cache = CachedSeriesSource(FakeSource(clock), store, settings(), clock=clock, monotonic=clock)
    await cache.fetch(FORECAST_DE)
    await store.delete(cache.key_for(FORECAST_DE))  # FLUSHALL, an eviction, a restarted Redis
    assert (await cache.fetch(FORECAST_DE)).series.values[0] == 100.0
    assert await store.get(cache.key_for(FORECAST_DE)) is None


@dataclass
class NullSource(FakeSource):
    """Answers with every value null after `good` answers."""

    good: int = 1

    async def fetch(self, request: SeriesRequest) -> Fetched:
        fetched = await super().fetch(request)
        if len(self.calls) <= self.good:
            return fetched
        values = np.full(len(fetched.series.values), np.nan)
        return Fetched(series=replace(fetched.series, values=values), fetched_at=fetched.fetched_at)


async def test_an_all_null_answer_does_not_replace_good_data() -> None:
    clock = Clock()
    source = NullSource(clock)
    store = MemoryStore(clock=lambda: clock.now)
    cache = CachedSeriesSource(source, store, settings(), clock=clock, monotonic=clock)
    await cache.fetch(FORECAST_DE)
    good_bytes = await store.get(cache.key_for(FORECAST_DE))
    clock.now += 1000
    served = await cache.fetch(FORECAST_DE)
    assert served.stale
    assert served.series.values[0] == 100.0
    assert "without values" in (served.error or "")
    assert await store.get(cache.key_for(FORECAST_DE)) == good_bytes


async def test_an_all_null_first_answer_is_kept_for_the_chain_to_fill() -> None:
    clock = Clock()
    source = NullSource(clock, good=0)
    cache = memory_cache(clock, source)
    answer = await cache.fetch(FORECAST_DE)
    assert np.isnan(answer.series.values).all()
    assert not answer.stale


async def test_clear_negative_is_the_operators_lever() -> None:
    clock = Clock()
    source = FakeSource(clock)
    store = MemoryStore(clock=lambda: clock.now)
    cache = CachedSeriesSource(source, store, settings(), clock=clock, monotonic=clock)
    source.errors.append(ProviderAuthError("bad token"))
    with pytest.raises(ProviderAuthError):
        await cache.fetch(FORECAST_DE)
    with pytest.raises(ProviderAuthError):  # the marker answers without an upstream call
        await cache.fetch(FORECAST_DE)
    assert len(source.calls) == 1
    await cache.clear_negative(FORECAST_DE)
    assert not (await cache.fetch(FORECAST_DE)).stale
    assert len(source.calls) == 2
