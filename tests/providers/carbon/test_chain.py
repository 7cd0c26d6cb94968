"""Series assembly: live kinds first, the offline provider for the rest; never NaN, never a failure."""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carbon_optimizer.domain.models import CarbonSeries, SourceRun
from carbon_optimizer.errors import (
    DataUnavailable,
    NoDataForZone,
    ProviderError,
    ProviderNotEntitled,
    ProviderUnavailable,
    UnknownZone,
)
from carbon_optimizer.providers.carbon.base import Fetched, SeriesKind, SeriesRequest, SeriesResult, Signal
from carbon_optimizer.providers.carbon.chain import CarbonChain, ceil_to, floor_to
from carbon_optimizer.providers.carbon.electricitymaps import rows_to_series

FIXTURES = Path(__file__).parents[1] / "fixtures" / "electricitymaps"
NOW = datetime(2023, 6, 2, 12, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)
REPLAY = "fallback:replay-2023"


def fixture_series(name: str, kind: SeriesKind) -> CarbonSeries:
    body = json.loads((FIXTURES / name).read_text())
    rows = body.get("forecast") or body.get("history") or body.get("data") or [body]
    return rows_to_series("DE", rows, kind.label_for("electricitymaps"), "lifecycle")


FORECAST = fixture_series("forecast_DE.json", SeriesKind.FORECAST)  # 2023-06-02T12:00 .. 06-03T12:00
HISTORY = fixture_series("history_DE.json", SeriesKind.HISTORY)  # 2023-06-01T13:00 .. 06-02T12:00
HISTORY_NULLS = fixture_series("history_DE_with_nulls.json", SeriesKind.HISTORY)
LATEST = fixture_series("latest_DE.json", SeriesKind.LATEST)


@dataclass
class FakeLive:
    """SeriesSource fake: per-kind answers (a series, an error, or 'hang')."""

    answers: dict[SeriesKind, Any] = field(default_factory=dict)
    calls: list[SeriesRequest] = field(default_factory=list)
    name: str = "electricitymaps"
    signals: frozenset[Signal] = frozenset({Signal.AVERAGE})

    def covers(self, zone: str) -> bool:
        return True

    async def fetch(self, request: SeriesRequest) -> Fetched:
        self.calls.append(request)
        answer = self.answers.get(request.kind, NoDataForZone("nothing configured"))
        if answer == "hang":
            await asyncio.sleep(30)
        if isinstance(answer, ProviderError):
            raise answer
        if isinstance(answer, Fetched):
            return answer
        assert isinstance(answer, CarbonSeries)
        return Fetched(
            series=answer, fetched_at=NOW - timedelta(minutes=10), issued_at=NOW - timedelta(minutes=25)
        )


@dataclass
class FakeOffline:
    """Offline provider fake: hourly 1000 + hour-of-day, or a configured error."""

    error: Exception | None = None
    step: timedelta = HOUR
    calls: list[tuple[str, datetime, datetime]] = field(default_factory=list)
    name: str = "offline"

    async def series(self, zone: str, start: datetime, end: datetime) -> CarbonSeries:
        return self.series_sync(zone, start, end)

    def series_sync(self, zone: str, start: datetime, end: datetime) -> CarbonSeries:
        self.calls.append((zone, start, end))
        if self.error is not None:
            raise self.error
        begin = floor_to(start, self.step)
        count = int((ceil_to(end, self.step) - begin) / self.step)
        values = np.array([1000.0 + (begin + self.step * i).hour for i in range(count)])
        return CarbonSeries(zone, begin, self.step, values, (SourceRun(0, count, REPLAY),))


def layered(live: FakeLive, offline: FakeOffline | None = None, **kw: Any) -> CarbonChain:
    return CarbonChain(
        live, offline or FakeOffline(), live_deadline_s=kw.pop("deadline", 1.0), clock=lambda: NOW, **kw
    )


def labels(result: SeriesResult) -> list[tuple[int, int, str]]:
    return [(r.start_index, r.end_index, r.label) for r in result.series.runs]


def assert_well_formed(result: SeriesResult, start: datetime, end: datetime) -> None:
    series = result.series
    assert series.start <= start
    assert series.end >= end
    assert series.start == floor_to(series.start, HOUR)
    assert not np.isnan(series.values).any()
    runs = series.runs
    assert runs[0].start_index == 0
    assert runs[-1].end_index == len(series.values)
    assert all(a.end_index == b.start_index for a, b in itertools.pairwise(runs))


async def test_future_window_inside_horizon_is_pure_forecast() -> None:
    live, offline = FakeLive({SeriesKind.FORECAST: FORECAST}), FakeOffline()
    start, end = NOW, NOW + timedelta(hours=8)
    result = await layered(live, offline).series("DE", start, end)
    assert_well_formed(result, start, end)
    assert result.series.start == datetime(2023, 6, 2, 12, tzinfo=UTC)
    assert len(result.series.values) == 9
    assert result.series.values.tolist() == FORECAST.values[:9].tolist()
    assert labels(result) == [(0, 9, "electricitymaps:forecast")]
    assert result.warnings == ()
    assert [c.kind for c in live.calls] == [SeriesKind.FORECAST]
    assert offline.calls == []


async def test_beyond_horizon_continues_with_offline_data() -> None:
    live, offline = FakeLive({SeriesKind.FORECAST: FORECAST}), FakeOffline()
    start, end = NOW, NOW + timedelta(hours=48)
    result = await layered(live, offline).series("DE", start, end)
    assert_well_formed(result, start, end)
    assert labels(result) == [(0, 25, "electricitymaps:forecast"), (25, 49, REPLAY)]
    horizon_end = FORECAST.end
    assert offline.calls == [("DE", horizon_end, result.series.end)]  # only the gap is asked for
    assert result.series.values[25] == 1000.0 + horizon_end.hour
    window = result.series.sources_between(NOW + timedelta(hours=20), NOW + timedelta(hours=30))
    assert "+".join(window) == "electricitymaps:forecast+fallback:replay-2023"
    assert result.warnings == ()


async def test_past_part_uses_history_then_forecast() -> None:
    live = FakeLive({SeriesKind.FORECAST: FORECAST, SeriesKind.HISTORY: HISTORY})
    start, end = NOW - timedelta(hours=6), NOW + timedelta(hours=3)
    result = await layered(live).series("DE", start, end)
    assert_well_formed(result, start, end)
    # 06:00..11:00 measured, 12:00.. forecast (the current hour belongs to the forecast)
    assert labels(result) == [(0, 6, "electricitymaps:history"), (6, 10, "electricitymaps:forecast")]
    assert result.series.values[:6].tolist() == HISTORY.values[-7:-1].tolist()
    assert {c.kind for c in live.calls} == {SeriesKind.FORECAST, SeriesKind.HISTORY}


async def test_null_history_hours_are_filled_from_offline_and_labelled() -> None:
    live = FakeLive({SeriesKind.FORECAST: FORECAST, SeriesKind.HISTORY: HISTORY_NULLS})
    start, end = HISTORY_NULLS.start, NOW
    result = await layered(live).series("DE", start, end)
    assert_well_formed(result, start, end)
    assert (5, 7, REPLAY) in labels(result)
    assert result.series.values[5] == 1000.0 + (HISTORY_NULLS.start + 5 * HOUR).hour
    assert any("missing hours" in w for w in result.warnings)


async def test_null_history_hours_outside_the_window_raise_no_warning() -> None:
    live = FakeLive({SeriesKind.FORECAST: FORECAST, SeriesKind.HISTORY: HISTORY_NULLS})
    start, end = NOW - timedelta(hours=6), NOW + timedelta(hours=2)
    result = await layered(live).series("DE", start, end)
    assert labels(result) == [(0, 6, "electricitymaps:history"), (6, 9, "electricitymaps:forecast")]
    assert result.warnings == ()


async def test_old_window_asks_past_range_week_aligned() -> None:
    past = CarbonSeries(
        "DE",
        datetime(2023, 5, 28, tzinfo=UTC),
        HOUR,
        np.full(72, 321.0),
        (SourceRun(0, 72, "electricitymaps:history"),),
    )
    live = FakeLive({SeriesKind.PAST_RANGE: past})
    start, end = datetime(2023, 5, 29, 5, 20, tzinfo=UTC), datetime(2023, 5, 29, 9, tzinfo=UTC)
    result = await layered(live).series("DE", start, end)
    assert_well_formed(result, start, end)
    assert [c.kind for c in live.calls] == [SeriesKind.PAST_RANGE]
    call = live.calls[0]
    # The epoch-aligned week around the window (1970-01-01 was a Thursday): shared by every window in it.
    assert (call.start, call.end) == (datetime(2023, 5, 25, tzinfo=UTC), datetime(2023, 6, 1, tzinfo=UTC))
    assert labels(result) == [(0, 4, "electricitymaps:history")]
    assert result.series.values.tolist() == [321.0] * 4


async def test_upstream_failure_ends_in_fallback_with_warning() -> None:
    live = FakeLive({SeriesKind.FORECAST: ProviderUnavailable("HTTP 503")})
    start, end = NOW, NOW + timedelta(hours=5)
    result = await layered(live).series("ZA", start, end)
    assert_well_formed(result, start, end)
    assert labels(result) == [(0, 6, REPLAY)]
    assert result.warnings == ("electricitymaps unavailable for ZA; used fallback data",)


async def test_not_in_plan_forecast_uses_latest_flat_then_offline() -> None:
    live = FakeLive({SeriesKind.FORECAST: ProviderNotEntitled("plan"), SeriesKind.LATEST: LATEST})
    start, end = NOW, NOW + timedelta(hours=30)
    result = await layered(live, latest_extension=timedelta(hours=24)).series("DE", start, end)
    assert_well_formed(result, start, end)
    assert labels(result) == [(0, 24, "electricitymaps:latest"), (24, 31, REPLAY)]
    assert set(result.series.values[:24].tolist()) == {LATEST.values[0]}
    assert [c.kind for c in live.calls] == [SeriesKind.FORECAST, SeriesKind.LATEST]
    assert result.warnings == ()


async def test_not_in_plan_everywhere_says_so() -> None:
    live = FakeLive(
        {SeriesKind.FORECAST: ProviderNotEntitled("plan"), SeriesKind.LATEST: ProviderNotEntitled("p")}
    )
    result = await layered(live).series("PT", NOW, NOW + HOUR)
    assert labels(result) == [(0, 2, REPLAY)]
    assert result.warnings == (
        "electricitymaps plan does not include forecast data for PT; used fallback data",
    )


async def test_stale_forecast_is_labelled_and_warned() -> None:
    stale_series = CarbonSeries(
        "DE", FORECAST.start, HOUR, FORECAST.values, (SourceRun(0, 25, "electricitymaps:forecast(stale)"),)
    )
    stale = Fetched(
        series=stale_series,
        fetched_at=datetime(2023, 6, 2, 8, 5, tzinfo=UTC),
        stale=True,
        error="ProviderUnavailable: HTTP 503",
    )
    live = FakeLive({SeriesKind.FORECAST: stale})
    result = await layered(live).series("DE", NOW, NOW + timedelta(hours=2))
    assert labels(result) == [(0, 3, "electricitymaps:forecast(stale)")]
    assert result.warnings == ("electricitymaps unavailable for DE; used cached data from 2023-06-02T08:05Z",)
    assert all("HTTP 503" not in w for w in result.warnings)  # internal error text stays internal


async def test_hanging_upstream_is_cut_at_the_live_deadline() -> None:
    live = FakeLive({SeriesKind.FORECAST: "hang"})
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await layered(live, deadline=0.1).series("DE", NOW, NOW + timedelta(hours=3))
    assert loop.time() - started < 0.3
    assert labels(result) == [(0, 4, REPLAY)]
    assert result.warnings == ("electricitymaps unavailable for DE; used fallback data",)


async def test_zone_nobody_knows_is_unknown() -> None:
    live = FakeLive({SeriesKind.FORECAST: NoDataForZone("No recent data for zone")})
    with pytest.raises(UnknownZone):
        await layered(live, FakeOffline(error=UnknownZone("XX"))).series("XX", NOW, NOW + HOUR)


async def test_offline_unknown_during_outage_is_data_unavailable_not_unknown() -> None:
    live = FakeLive({SeriesKind.FORECAST: ProviderUnavailable("down")})
    with pytest.raises(DataUnavailable):
        await layered(live, FakeOffline(error=UnknownZone("PT"))).series("PT", NOW, NOW + HOUR)


async def test_offline_unknown_but_partial_live_extends_nearest_value() -> None:
    live = FakeLive({SeriesKind.FORECAST: FORECAST})
    offline = FakeOffline(error=UnknownZone("DE"))
    start, end = NOW, NOW + timedelta(hours=30)
    result = await layered(live, offline).series("DE", start, end)
    assert_well_formed(result, start, end)
    assert labels(result) == [
        (0, 25, "electricitymaps:forecast"),
        (25, 31, "electricitymaps:forecast(extended)"),
    ]
    assert set(result.series.values[25:].tolist()) == {FORECAST.values[-1]}


async def test_invalid_zone_key_is_unknown_zone() -> None:
    with pytest.raises(UnknownZone):
        await layered(FakeLive()).series("../etc", NOW, NOW + HOUR)


async def test_finer_offline_step_is_averaged_onto_the_hour() -> None:
    live = FakeLive({SeriesKind.FORECAST: ProviderUnavailable("down")})
    offline = FakeOffline(step=timedelta(minutes=15))
    result = await layered(live, offline).series("DE", NOW, NOW + timedelta(hours=2))
    assert result.series.step == HOUR
    assert result.series.values.tolist() == [1012.0, 1013.0, 1014.0]


async def test_series_protocol_method_and_data_age() -> None:
    provider = layered(FakeLive({SeriesKind.FORECAST: FORECAST}))
    result = await provider.series("DE", NOW, NOW + HOUR)
    assert isinstance(result, SeriesResult)
    assert isinstance(result.series, CarbonSeries)
    assert provider.data_age_s() == {"DE": 25 * 60.0}


KINDS = [SeriesKind.FORECAST, SeriesKind.HISTORY, SeriesKind.PAST_RANGE, SeriesKind.LATEST]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    start_offset_min=st.integers(min_value=-5 * 24 * 60, max_value=4 * 24 * 60),
    length_min=st.integers(min_value=1, max_value=7 * 24 * 60),
    failing=st.sets(st.sampled_from(KINDS)),
    nan_positions=st.sets(st.integers(min_value=0, max_value=24), max_size=10),
)
def test_property_every_point_filled_and_labelled(
    start_offset_min: int, length_min: int, failing: set[SeriesKind], nan_positions: set[int]
) -> None:
    forecast_values = FORECAST.values.copy()
    forecast_values[sorted(nan_positions)] = np.nan
    forecast = CarbonSeries("DE", FORECAST.start, HOUR, forecast_values, FORECAST.runs)
    past = CarbonSeries(
        "DE",
        datetime(2023, 5, 1, tzinfo=UTC),
        HOUR,
        np.full(40 * 24, 250.0),
        (SourceRun(0, 960, "electricitymaps:history"),),
    )
    answers: dict[SeriesKind, Any] = {
        SeriesKind.FORECAST: forecast,
        SeriesKind.HISTORY: HISTORY_NULLS,
        SeriesKind.PAST_RANGE: past,
        SeriesKind.LATEST: LATEST,
    }
    for kind in failing:
        answers[kind] = ProviderUnavailable("down")
    start = NOW + timedelta(minutes=start_offset_min)
    end = start + timedelta(minutes=length_min)
    result = asyncio.run(layered(FakeLive(answers)).series("DE", start, end))
    assert_well_formed(result, start, end)
    allowed = {"electricitymaps:forecast", "electricitymaps:history", REPLAY}
    assert {r.label for r in result.series.runs} <= allowed
