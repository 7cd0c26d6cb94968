"""`CarbonChain.series_many`: a whole request's lookups in one pass, memoised per request shape.

The memo of a shape (zones, hours, signal) holds only while every tier it read still holds the
very objects it was painted from (`Lease`: the local entry's freshness and life, no put, eviction
or drop in the tier since) and within the hour; any zone that misses keeps the shape out. These
tests pin that each of those ends it, that its answers are the per-zone lane's, and that the
metrics move as that lane moves them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from carbon_optimizer.domain.models import CarbonSeries, SourceRun
from carbon_optimizer.errors import ProviderUnavailable, UnknownZone
from carbon_optimizer.metrics import CACHE_EVENTS, FALLBACKS
from carbon_optimizer.providers.carbon.base import Fetched, SeriesKind, SeriesRequest, Signal
from carbon_optimizer.providers.carbon.cache import CachedSeriesSource
from carbon_optimizer.providers.carbon.chain import CarbonChain
from carbon_optimizer.providers.store import MemoryStore
from carbon_optimizer.settings import CacheSettings
from tests.providers.carbon.test_chain import REPLAY, FakeOffline

HOUR = timedelta(hours=1)
START = datetime(2023, 6, 2, 12, 0, tzinfo=UTC)
ZONES = ("DE", "FR", "PL")  # DE and FR routed to the live source, PL bundled only


class Clock:
    """One settable wall clock for the chain (datetime) and the tier (epoch seconds)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def epoch(self) -> float:
        return self.now.timestamp()


@dataclass
class Live:
    """A live source: `hours` of forecast from START at `value`; fails while `fail` is set."""

    clock: Clock
    value: float = 100.0
    hours: int = 12
    fail: bool = False
    name: str = "live"
    signals: frozenset[Signal] = frozenset({Signal.AVERAGE})
    calls: list[SeriesRequest] = field(default_factory=list)

    def covers(self, zone: str) -> bool:
        return True

    async def fetch(self, request: SeriesRequest) -> Fetched:
        self.calls.append(request)
        if self.fail:
            raise ProviderUnavailable("live down", source=self.name)
        label = request.kind.label_for(self.name)
        values = np.full(self.hours, self.value)
        series = CarbonSeries(request.zone, START, HOUR, values, (SourceRun(0, self.hours, label),))
        return Fetched(series=series, fetched_at=self.clock())


def build(clock: Clock, **cache: float) -> tuple[CarbonChain, CachedSeriesSource, Live]:
    live = Live(clock)
    settings = CacheSettings(**({"forecast_ttl_s": 900, "local_ttl_s": 30, "stale_max_age_s": 3600} | cache))
    cached = CachedSeriesSource(
        live, MemoryStore(clock=clock.epoch), settings, clock=clock.epoch, monotonic=clock.epoch
    )
    routes = {"DE": ["live"], "FR": ["live"], "*": []}
    return CarbonChain([cached], FakeOffline(), live_deadline_s=1.0, routes=routes, clock=clock), cached, live


END = START + 6 * HOUR


async def warm(c: CarbonChain, start: datetime = START, end: datetime = END) -> list[object]:
    return [await c.series(zone, start, end) for zone in ZONES]


def counter(metric: object, *labels: str) -> float:
    return float(metric.labels(*labels)._value.get())  # type: ignore[attr-defined]


async def test_a_warm_shape_answers_the_per_zone_lanes_answers_and_keeps_them() -> None:
    clock = Clock(START + timedelta(minutes=5))
    c, _, live = build(clock)
    cold_walk = c.series_many(ZONES, START, END)
    assert cold_walk[:2] == [None, None]  # the live zones: nothing painted yet, `series` needed
    assert cold_walk[2] is not None  # the bundled-only zone: painted in the walk itself
    cold = await warm(c)
    per_zone = [c.series_cached(zone, START, END) for zone in ZONES]
    assert per_zone == cold
    first = c.series_many(ZONES, START + timedelta(seconds=20), END)
    again = c.series_many(ZONES, START + timedelta(seconds=40), END - timedelta(seconds=40))
    assert all(a is b for a, b in zip(first, cold, strict=True))
    assert all(a is b for a, b in zip(again, cold, strict=True))
    assert len(c._shape_memo) == 1  # the second call was the shape's memo, not a walk
    calls = len(live.calls)
    assert c.series_many(ZONES, START, END) == cold
    assert len(live.calls) == calls  # the memo lanes never ask upstream


async def test_a_shape_hit_moves_the_metrics_as_the_per_zone_lane_does() -> None:
    clock = Clock(START + timedelta(minutes=5))
    c, _, _ = build(clock)
    await warm(c)
    c.series_many(ZONES, START, END)  # the walk: remembered now

    def snapshot() -> tuple[float, float]:
        return counter(FALLBACKS, "carbon", REPLAY), counter(CACHE_EVENTS, "carbon", "local", "hit")

    before = snapshot()
    for zone in ZONES:
        assert c.series_cached(zone, START, END) is not None
    walked = snapshot()
    assert c.series_many(ZONES, START, END)[0] is not None
    memo = snapshot()
    assert walked[0] - before[0] == memo[0] - walked[0] > 0  # fallback answers counted per answer
    assert walked[1] - before[1] == memo[1] - walked[1] == 2  # one local hit per zone's peek


async def test_new_data_in_the_tier_ends_the_shape_and_the_new_values_are_served() -> None:
    clock = Clock(START + timedelta(minutes=5))
    c, cached, live = build(clock)
    old = await warm(c)
    assert c.series_many(ZONES, START, END) == old
    live.value = 250.0
    clock.now += timedelta(minutes=14, seconds=30)  # 30 s before the entry's end: refresh it
    assert await cached.refresh(SeriesRequest(SeriesKind.FORECAST, "DE"), min_remaining_s=60)
    after = c.series_many(ZONES, START, END)
    assert after[0] is None  # DE's painted answer rests on the replaced object: ask `series`
    assert after[1] is old[1]
    assert after[2] is old[2]
    new = await c.series("DE", START, END)
    assert new.series.values.tolist() == [250.0] * 6
    assert c.series_many(ZONES, START, END)[0] is new


async def test_expiry_of_a_local_entry_ends_the_shape() -> None:
    clock = Clock(START + timedelta(minutes=5))
    c, _, live = build(clock, forecast_ttl_s=600)
    await warm(c)
    assert None not in c.series_many(ZONES, START, END)
    clock.now += timedelta(seconds=601)  # the forecast entries are no longer fresh
    assert c.series_many(ZONES, START, END)[:2] == [None, None]
    calls = len(live.calls)
    await c.series("DE", START, END)
    assert len(live.calls) == calls + 1  # `series` asks the cache, which asks upstream


async def test_a_new_hour_ends_the_shape() -> None:
    clock = Clock(START + timedelta(minutes=5))
    c, _, _ = build(clock, forecast_ttl_s=7200)
    await warm(c)
    assert None not in c.series_many(ZONES, START, END)
    clock.now += HOUR
    assert c.series_many(ZONES, START, END)[:2] == [None, None]


async def test_answers_around_a_failure_are_never_kept_and_warnings_stay_in_zone_order() -> None:
    clock = Clock(START + timedelta(minutes=5))
    c, _, live = build(clock, forecast_ttl_s=600)
    await warm(c)
    clock.now += timedelta(seconds=601)
    live.fail = True
    degraded = [await c.series(zone, START, END) for zone in ZONES]
    assert all("(stale)" in r.series.runs[0].label for r in degraded[:2])
    assert [w for r in degraded for w in r.warnings] == [
        f"live unavailable for {zone}; used cached data from 2023-06-02T12:05Z" for zone in ("DE", "FR")
    ]
    for _ in range(2):  # stale answers are the cache's `get`, never the memo lanes'
        assert c.series_many(ZONES, START, END)[:2] == [None, None]
    again = [await c.series(zone, START, END) for zone in ZONES]
    assert [r.warnings for r in again] == [r.warnings for r in degraded]
    live.fail = False
    clock.now += timedelta(seconds=10)  # past the failure's cool-down
    fresh = [await c.series(zone, START, END) for zone in ZONES]
    assert not any(r.warnings for r in fresh)
    assert c.series_many(ZONES, START, END) == fresh


async def test_a_shape_with_any_miss_is_not_kept() -> None:
    clock = Clock(START + timedelta(minutes=5))
    c, _, _ = build(clock)
    await c.series("DE", START, END)
    await c.series("PL", START, END)
    assert c.series_many(ZONES, START, END)[1] is None  # FR never painted
    fr = await c.series("FR", START, END)
    assert c.series_many(ZONES, START, END)[1] is fr  # the walk again, now complete


async def test_other_zone_lists_hours_and_signals_are_other_shapes() -> None:
    clock = Clock(START + timedelta(minutes=5))
    c, _, _ = build(clock)
    base = await warm(c)
    assert c.series_many(ZONES, START, END) == base
    assert c.series_many(ZONES[:2], START, END) == base[:2]
    longer = c.series_many(ZONES, START, END + HOUR)
    assert longer[:2] == [None, None]  # another shape: the live zones need `series` again
    assert longer[2] is not None  # the bundled-only zone's longer window, painted in the walk
    assert longer[2] is not base[2]
    assert len(longer[2].series.values) == 7
    # No source routes the marginal signal here: every zone is the bundled average, with a warning.
    marginal = c.series_many(ZONES, START, END, Signal.MARGINAL)
    assert [m is not None and m.warnings for m in marginal] == [
        (f"no marginal data for some hours of {zone}; used average bundled data",) for zone in ZONES
    ]
    assert c.series_many(ZONES, END, START) == [None, None, None]


async def test_a_bundled_only_zone_is_painted_in_the_walk_as_series_would_paint_it() -> None:
    """A new window of a zone no live source routes needs no `series` call (no task): the walk paints it.

    The answer is the one `series` gives (the same object from then on, from the offline memo), the
    fallback metric counts it once as a painted answer, the bundled data is read once, and a zone
    nobody knows is left to `series`, which raises for it.
    """
    clock = Clock(START + timedelta(minutes=5))
    c, _, live = build(clock)
    offline = c.offline
    assert isinstance(offline, FakeOffline)
    before = counter(FALLBACKS, "carbon", REPLAY)
    walked = c.series_many(("PL",), START, END)[0]
    assert walked is not None
    assert counter(FALLBACKS, "carbon", REPLAY) == before + 1
    assert len(offline.calls) == 1
    assert walked.series.values.tolist() == [1000.0 + (START + HOUR * i).hour for i in range(6)]
    assert [run.label for run in walked.series.runs] == [REPLAY]
    assert await c.series("PL", START, END) is walked  # the offline memo's answer, not a repaint
    assert len(offline.calls) == 1
    assert live.calls == []

    fresh = build(clock)[0]  # the per-zone lane alone gives the same answer
    painted = await fresh.series("PL", START, END)
    assert painted.series.values.tolist() == walked.series.values.tolist()
    assert painted.series.runs == walked.series.runs
    assert painted.warnings == walked.warnings

    offline.error = UnknownZone("no such zone")
    later = START + 24 * HOUR
    assert c.series_many(("PL",), later, later + 6 * HOUR) == [None]
    with pytest.raises(UnknownZone):
        await c.series("PL", later, later + 6 * HOUR)
