"""The chain's memo for routed zones: the same answer only while every fetched object is the same.

A live route's answer is a pure function of what its sources returned, the current hour and the
bundled data. The chain keeps it against the identities of the fetched objects (what the two-tier
cache hands back until it refreshes), so a warm zone costs a cache lookup, not a repaint — and
any new object, a new hour or a failure gives a freshly painted answer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from carbon_optimizer.providers.carbon.base import Fetched, SeriesKind, SeriesRequest, Signal
from carbon_optimizer.providers.carbon.chain import CarbonChain
from tests.providers.carbon.test_chain import FakeOffline
from tests.providers.carbon.test_chain_sources import Source

HOUR = timedelta(hours=1)
START = datetime(2023, 6, 2, 12, 0, tzinfo=UTC)


@dataclass
class CachingSource(Source):
    """A live source behind a cache: the same `Fetched` object per request until `refresh`."""

    _entries: dict[tuple[SeriesKind, str], Fetched] = field(default_factory=dict)

    def refresh(self, value: float) -> None:
        self.value = value
        self._entries.clear()

    async def fetch(self, request: SeriesRequest) -> Fetched:
        key = (request.kind, request.zone)
        fetched = self._entries.get(key)
        if fetched is None or self.fail:
            fetched = await super().fetch(request)  # records the call; raises while failing
            self._entries[key] = fetched
        else:
            self.calls.append(request)
        return fetched


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def chain(*sources: CachingSource, clock: Clock) -> CarbonChain:
    return CarbonChain(list(sources), FakeOffline(), live_deadline_s=1.0, clock=clock)


async def test_a_warm_routed_zone_gets_the_same_answer_and_still_asks_its_source() -> None:
    source = CachingSource("a", 100.0, hours=12)
    clock = Clock(START + timedelta(minutes=5))
    c = chain(source, clock=clock)
    first = await c.series("DE", START, START + 6 * HOUR)
    second = await c.series("DE", START + timedelta(seconds=30), START + 6 * HOUR - timedelta(seconds=30))
    assert second is first  # same hours, same fetched object: the memoised answer
    assert len(source.calls) == 2  # the memo never skips the source (its freshness is the cache's)
    assert not np.asarray(first.series.values).flags.writeable
    fresh = await chain(CachingSource("a", 100.0, hours=12), clock=clock).series(
        "DE", START, START + 6 * HOUR
    )
    np.testing.assert_array_equal(first.series.values, fresh.series.values)
    assert first.series.runs == fresh.series.runs


async def test_a_refreshed_cache_entry_gives_a_new_answer_with_the_new_values() -> None:
    source = CachingSource("a", 100.0, hours=12)
    c = chain(source, clock=Clock(START + timedelta(minutes=5)))
    first = await c.series("DE", START, START + 6 * HOUR)
    source.refresh(250.0)
    second = await c.series("DE", START, START + 6 * HOUR)
    assert second is not first
    assert second.series.values.tolist() == [250.0] * 6


async def test_a_new_hour_repaints_even_with_the_same_objects() -> None:
    source = CachingSource("a", 100.0, hours=3)  # 3 h of forecast, then bundled data
    clock = Clock(START + timedelta(minutes=5))
    c = chain(source, clock=clock)
    first = await c.series("DE", START, START + 6 * HOUR)
    clock.now += HOUR  # the current hour moved: what counts as past/future moved with it
    second = await c.series("DE", START, START + 6 * HOUR)
    assert second is not first


async def test_answers_painted_around_a_failure_are_not_kept() -> None:
    first_source = CachingSource("a", 100.0, hours=12, fail=True)
    second_source = CachingSource("b", 300.0, hours=12)
    c = chain(first_source, second_source, clock=Clock(START + timedelta(minutes=5)))
    degraded = await c.series("DE", START, START + 6 * HOUR)
    assert degraded.series.sources_between(START, START + 6 * HOUR) == ("b:forecast",)
    assert any("a" in w for w in degraded.warnings)
    first_source.fail = False  # the first source recovered: the next answer must use it
    recovered = await c.series("DE", START, START + 6 * HOUR)
    assert recovered.series.sources_between(START, START + 6 * HOUR) == ("a:forecast",)
    assert not recovered.warnings


async def test_checking_the_memo_never_asks_a_source_twice() -> None:
    first_source = CachingSource("a", 100.0, hours=3)  # leaves gaps: the second source is asked
    second_source = CachingSource("b", 300.0, hours=12)
    c = chain(first_source, second_source, clock=Clock(START + timedelta(minutes=5)))
    await c.series("DE", START, START + 6 * HOUR)
    first_source.refresh(120.0)  # a miss at the first step of the memo's trace
    again = await c.series("DE", START, START + 6 * HOUR)
    assert again.series.values.tolist() == [120.0] * 3 + [300.0] * 3
    assert len(first_source.calls) == 2
    assert len(second_source.calls) == 2  # once per call, memo check included


async def test_other_signals_zones_and_hours_are_other_entries() -> None:
    source = CachingSource("a", 100.0, hours=12, signals=frozenset({Signal.AVERAGE, Signal.MARGINAL}))
    c = chain(source, clock=Clock(START + timedelta(minutes=5)))
    base = await c.series("DE", START, START + 6 * HOUR)
    assert await c.series("DE", START, START + 6 * HOUR, Signal.MARGINAL) is not base
    assert await c.series("FR", START, START + 6 * HOUR) is not base
    assert await c.series("DE", START, START + 5 * HOUR) is not base
    assert await c.series("DE", START, START + 6 * HOUR) is base


@dataclass
class PeekingSource(CachingSource):
    """A cached source whose in-process tier can be read synchronously (as `CachedSeriesSource`)."""

    def peek(self, request: SeriesRequest) -> Fetched | None:
        return self._entries.get((request.kind, request.zone))


async def test_the_synchronous_lane_answers_a_warm_routed_zone_without_asking_anyone() -> None:
    source = PeekingSource("a", 100.0, hours=12)
    clock = Clock(START + timedelta(minutes=5))
    c = chain(source, clock=clock)
    end = START + 6 * HOUR
    assert c.series_cached("DE", START, end) is None  # nothing memoised yet
    first = await c.series("DE", START, end)
    assert c.series_cached("DE", START + timedelta(seconds=20), end) is first
    assert len(source.calls) == 1  # the lane read the tier, it did not fetch
    source.refresh(150.0)  # the tier holds another object now (or nothing): the lane misses
    assert c.series_cached("DE", START, end) is None
    renewed = await c.series("DE", START, end)
    assert renewed.series.values.tolist() == [150.0] * 6
    assert c.series_cached("DE", START, end) is renewed
    clock.now += HOUR
    assert c.series_cached("DE", START, end) is None  # another hour: painted again by `series`


async def test_the_synchronous_lane_needs_every_consumed_source_to_peek() -> None:
    first_source = PeekingSource("a", 100.0, hours=3)
    second_source = CachingSource("b", 300.0, hours=12)  # no peek: its freshness is unknown
    c = chain(first_source, second_source, clock=Clock(START + timedelta(minutes=5)))
    await c.series("DE", START, START + 6 * HOUR)
    assert c.series_cached("DE", START, START + 6 * HOUR) is None
    only_first = chain(PeekingSource("a", 100.0, hours=12), second_source, clock=Clock(START))
    answer = await only_first.series("DE", START, START + 6 * HOUR)
    assert only_first.series_cached("DE", START, START + 6 * HOUR) is answer  # b was never consumed


async def test_concurrent_misses_share_one_painting_and_survive_a_caller_giving_up() -> None:
    gate = asyncio.Event()

    class SlowSource(CachingSource):
        async def fetch(self, request: SeriesRequest) -> Fetched:
            await gate.wait()
            return await super().fetch(request)

    source = SlowSource("a", 100.0, hours=12)
    c = chain(source, clock=Clock(START + timedelta(minutes=5)))
    end = START + 6 * HOUR
    callers = [asyncio.ensure_future(c.series("DE", START, end)) for _ in range(8)]
    await asyncio.sleep(0)
    callers[0].cancel()  # one caller gives up: the shared painting goes on for the others
    gate.set()
    results = await asyncio.gather(*callers[1:])
    assert len(source.calls) == 1  # one painting, one fetch, for eight concurrent misses
    assert all(r is results[0] for r in results)
    assert results[0].series.values.tolist() == [100.0] * 6
    assert callers[0].cancelled()
    again = await c.series("DE", START, end)  # the flight is gone; the memo answers
    assert again is results[0]
