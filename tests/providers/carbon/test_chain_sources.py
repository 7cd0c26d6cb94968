"""The per-zone priority chain: several live sources in order, then bundled data; signals."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from carbon_optimizer.domain.models import CarbonSeries, SourceRun
from carbon_optimizer.errors import ProviderUnavailable
from carbon_optimizer.providers.carbon.base import Fetched, SeriesKind, SeriesRequest, Signal
from carbon_optimizer.providers.carbon.chain import CarbonChain
from tests.providers.carbon.test_chain import REPLAY, FakeOffline

NOW = datetime(2023, 6, 2, 12, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)
START = datetime(2023, 6, 2, 12, 0, tzinfo=UTC)


@dataclass
class Source:
    """A live source fake with a forecast of `hours` hours from START (value = `value`)."""

    name: str
    value: float
    hours: int = 6
    signals: frozenset[Signal] = frozenset({Signal.AVERAGE})
    zones: frozenset[str] | None = None
    fail: bool = False
    calls: list[SeriesRequest] = field(default_factory=list)

    def covers(self, zone: str) -> bool:
        return self.zones is None or zone in self.zones

    async def fetch(self, request: SeriesRequest) -> Fetched:
        self.calls.append(request)
        if self.fail:
            raise ProviderUnavailable(f"{self.name} down", source=self.name)
        label = request.kind.label_for(self.name)
        values = np.full(self.hours, self.value)
        series = CarbonSeries(request.zone, START, HOUR, values, (SourceRun(0, self.hours, label),))
        return Fetched(series=series, fetched_at=NOW)


def chain(*sources: Source, routes: dict[str, list[str]] | None = None) -> CarbonChain:
    return CarbonChain(list(sources), FakeOffline(), live_deadline_s=1.0, routes=routes, clock=lambda: NOW)


async def test_a_complete_first_source_costs_the_others_nothing() -> None:
    first, second = Source("a", 100.0, hours=12), Source("b", 200.0, hours=12)
    result = await chain(first, second).series("DE", START, START + 6 * HOUR)
    assert result.series.values.tolist() == [100.0] * 6
    assert result.series.sources_between(START, START + 6 * HOUR) == ("a:forecast",)
    assert first.calls
    assert not second.calls


async def test_gaps_of_the_first_source_are_filled_by_the_next_then_by_bundled_data() -> None:
    first, second = Source("a", 100.0, hours=2), Source("b", 200.0, hours=4)
    result = await chain(first, second).series("DE", START, START + 6 * HOUR)
    assert result.series.values[:4].tolist() == [100.0, 100.0, 200.0, 200.0]
    assert result.series.sources_between(START, START + 6 * HOUR) == ("a:forecast", "b:forecast", REPLAY)
    assert second.calls


async def test_a_failing_source_is_skipped_with_a_warning_naming_it() -> None:
    first, second = Source("a", 100.0, fail=True), Source("b", 200.0, hours=12)
    result = await chain(first, second).series("DE", START, START + 3 * HOUR)
    assert result.series.sources_between(START, START + 3 * HOUR) == ("b:forecast",)
    assert any(w.startswith("a unavailable for DE") for w in result.warnings)


async def test_routes_give_each_zone_its_own_priority_order() -> None:
    gb = Source("gb", 50.0, hours=12, zones=frozenset({"GB"}))
    em = Source("em", 300.0, hours=12)
    provider = chain(gb, em, routes={"GB": ["gb", "em"], "*": ["em"]})
    assert [s.name for s in provider.route("GB")] == ["gb", "em"]
    assert [s.name for s in provider.route("DE")] == ["em"]
    assert (await provider.series("GB", START, START + HOUR)).series.values.tolist() == [50.0]
    assert (await provider.series("DE", START, START + HOUR)).series.values.tolist() == [300.0]
    assert all(r.zone == "GB" for r in gb.calls)


async def test_a_source_that_does_not_cover_a_zone_is_never_asked() -> None:
    gb = Source("gb", 50.0, zones=frozenset({"GB"}))
    result = await chain(gb).series("DE", START, START + HOUR)
    assert not gb.calls
    assert result.series.sources_between(START, START + HOUR) == (REPLAY,)


async def test_marginal_comes_only_from_sources_that_have_it() -> None:
    average = Source("avg", 300.0, hours=12)
    marginal = Source("moer", 700.0, hours=12, signals=frozenset({Signal.AVERAGE, Signal.MARGINAL}))
    provider = chain(average, marginal)
    assert provider.signals("DE") == {Signal.AVERAGE, Signal.MARGINAL}
    result = await provider.series("DE", START, START + HOUR, Signal.MARGINAL)
    assert result.series.values.tolist() == [700.0]
    assert not average.calls
    assert marginal.calls[0].signal is Signal.MARGINAL
    # Average still prefers the first source.
    assert (await provider.series("DE", START, START + HOUR)).series.values.tolist() == [300.0]


async def test_marginal_gaps_are_filled_with_average_bundled_data_and_said_so() -> None:
    marginal = Source("moer", 700.0, hours=1, signals=frozenset({Signal.MARGINAL}))
    result = await chain(marginal).series("DE", START, START + 3 * HOUR, Signal.MARGINAL)
    assert result.series.sources_between(START, START + 3 * HOUR) == ("moer:forecast", REPLAY)
    assert any("no marginal data" in w and "average" in w for w in result.warnings)


@pytest.mark.parametrize("zone", ["DE", "GB"])
def test_without_a_marginal_source_only_average_is_answerable(zone: str) -> None:
    assert chain(Source("em", 1.0)).signals(zone) == {Signal.AVERAGE}
    assert chain().signals(zone) == {Signal.AVERAGE}


def test_the_cache_keys_average_as_before_and_marginal_apart() -> None:
    from carbon_optimizer.providers.carbon.cache import CachedSeriesSource
    from carbon_optimizer.providers.store import MemoryStore
    from carbon_optimizer.settings import CacheSettings

    cache = CachedSeriesSource(Source("em", 1.0), MemoryStore(), CacheSettings(), variant="lifecycle-h72")
    average = cache.key_for(SeriesRequest(SeriesKind.FORECAST, "DE"))
    assert average == "co:v1:carbon:v1:lifecycle-h72:forecast:DE"
    marginal = cache.key_for(SeriesRequest(SeriesKind.FORECAST, "DE", signal=Signal.MARGINAL))
    assert marginal == average + ":marginal"
