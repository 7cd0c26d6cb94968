"""OfflineCarbonProvider: 2023 replay mapping (checked against the CSVs), annual fallback, errors."""

from __future__ import annotations

import csv
import gzip
import io
from datetime import UTC, date, datetime, time, timedelta, timezone

import numpy as np
import pytest

from carbon_optimizer.errors import UnknownZone
from carbon_optimizer.providers.carbon.base import BundledSeries
from carbon_optimizer.providers.carbon.offline import OfflineCarbonProvider, replay_indices
from carbon_optimizer.providers.catalog import data_file, load_hourly_carbon, read_csv

HOUR = timedelta(hours=1)
START_2023 = datetime(2023, 1, 1, tzinfo=UTC)


def reference_index(when: datetime) -> int:
    """The documented mapping, hour by hour, written independently of the vectorised code."""
    iso = when.isocalendar()
    day_2023 = date.fromisocalendar(2023, min(iso.week, 52), iso.weekday)
    replayed = datetime.combine(day_2023, time(when.hour), tzinfo=UTC)
    return int((replayed - START_2023) / HOUR)


def csv_lifecycle(zone: str) -> dict[str, float]:
    raw = gzip.decompress(data_file("timeseries", f"{zone}_2023_hourly.csv.gz").read_bytes())
    rows = csv.DictReader(io.StringIO(raw.decode("utf-8")))
    return {r["datetime_utc"]: float(r["carbon_intensity_gco2_per_kwh"]) for r in rows}


@pytest.fixture(scope="module")
def provider() -> OfflineCarbonProvider:
    return OfflineCarbonProvider()


class TestReplay:
    def test_wednesday_afternoon_maps_to_same_iso_week_weekday_hour(
        self, provider: OfflineCarbonProvider
    ) -> None:
        requested = datetime(2026, 6, 3, 14, 0, tzinfo=UTC)  # ISO 2026-W23, Wednesday
        assert requested.isocalendar()[1:] == (23, 3)
        series = provider.series_sync("DE", requested, requested + HOUR)
        # 2023-W23 Wednesday is 2023-06-07: read that hour straight from the shipped CSV.
        assert date.fromisocalendar(2023, 23, 3) == date(2023, 6, 7)
        assert series.values[0] == csv_lifecycle("DE")["2023-06-07T14:00:00Z"]
        assert reference_index(requested) == 3782

    def test_week_matches_reference_and_csv(self, provider: OfflineCarbonProvider) -> None:
        start = datetime(2026, 3, 11, 7, tzinfo=UTC)
        series = provider.series_sync("FR", start, start + timedelta(days=7))
        by_time = csv_lifecycle("FR")
        expected = [
            by_time[(START_2023 + reference_index(start + i * HOUR) * HOUR).strftime("%Y-%m-%dT%H:%M:%SZ")]
            for i in range(len(series.values))
        ]
        np.testing.assert_array_equal(series.values, expected)

    @pytest.mark.parametrize(
        "start",
        [
            datetime(2026, 12, 24, 5, tzinfo=UTC),  # runs through ISO 2026-W53 into 2027-W01
            datetime(2020, 12, 27, 0, tzinfo=UTC),  # ISO 2020 has 53 weeks too
            datetime(2025, 12, 28, 22, tzinfo=UTC),  # 52-week year into the next
            datetime(2024, 2, 26, 0, tzinfo=UTC),  # leap day inside the window
            datetime(2031, 7, 1, 12, tzinfo=UTC),
        ],
    )
    def test_indices_match_reference(self, start: datetime) -> None:
        count = 24 * 21
        first_hour = int(start.timestamp()) // 3600
        expected = [reference_index(start + i * HOUR) for i in range(count)]
        np.testing.assert_array_equal(replay_indices(first_hour, count), expected)

    def test_week_53_maps_to_week_52(self, provider: OfflineCarbonProvider) -> None:
        requested = datetime(2026, 12, 31, 9, tzinfo=UTC)  # ISO 2026-W53, Thursday
        assert requested.isocalendar()[1:] == (53, 4)
        series = provider.series_sync("GB", requested, requested + HOUR)
        # 2023-W52 Thursday = 2023-12-28
        assert series.values[0] == csv_lifecycle("GB")["2023-12-28T09:00:00Z"]

    def test_iso_year_boundary_restarts_at_week_1(self) -> None:
        start = datetime(2027, 1, 3, 22, tzinfo=UTC)  # Sunday of ISO 2026-W53, 22:00
        first_hour = int(start.timestamp()) // 3600
        indices = replay_indices(first_hour, 4).tolist()
        # W53 Sunday 22:00, 23:00 → 2023-W52 Sunday (2023-12-31); then 2027-W01 Monday → 2023-01-02.
        assert indices == [8758, 8759, 24, 25]

    def test_indices_are_cached_and_read_only(self) -> None:
        first_hour = int(datetime(2026, 6, 3, tzinfo=UTC).timestamp()) // 3600
        a = replay_indices(first_hour, 168)
        assert replay_indices(first_hour, 168) is a
        with pytest.raises(ValueError, match="read-only"):
            a[0] = 0

    def test_series_shape_and_label(self, provider: OfflineCarbonProvider) -> None:
        start = datetime(2026, 6, 3, 14, 30, tzinfo=UTC)
        end = datetime(2026, 6, 4, 2, 10, tzinfo=UTC)
        series = provider.series_sync("US-CAL-CISO", start, end)
        assert series.start == datetime(2026, 6, 3, 14, tzinfo=UTC)
        assert series.step == HOUR
        assert series.end >= end
        assert series.end - end < HOUR
        assert len(series.values) == 13  # 14:00 … 02:00 (the last hour covers 02:00–02:10)
        assert series.zone == "US-CAL-CISO"
        assert series.emission_factor_type == "lifecycle"
        assert [(r.start_index, r.end_index, r.label) for r in series.runs] == [
            (0, 13, "fallback:replay-2023")
        ]
        assert provider.source_label("US-CAL-CISO") == "fallback:replay-2023"

    def test_values_are_read_only_and_shared(self, provider: OfflineCarbonProvider) -> None:
        # Series are memoised per (zone, hour range) and shared between requests: nobody may write.
        start = datetime(2026, 6, 3, tzinfo=UTC)
        series = provider.series_sync("DE", start, start + HOUR)
        with pytest.raises(ValueError, match="read-only"):
            series.values[0] = -1.0
        again = provider.series_sync("DE", start, start + HOUR)
        assert again is series
        assert again.values[0] > 0
        assert provider.hourly.lifecycle.min() > 0  # the bundled array itself is untouched

    def test_offset_input_is_converted_to_utc(self, provider: OfflineCarbonProvider) -> None:
        cet = timezone(timedelta(hours=2))
        local = datetime(2026, 6, 3, 16, 0, tzinfo=cet)
        utc_series = provider.series_sync("DE", datetime(2026, 6, 3, 14, tzinfo=UTC), local + HOUR)
        assert provider.series_sync("DE", local, local + HOUR).values[0] == utc_series.values[0]

    def test_lowercase_zone(self, provider: OfflineCarbonProvider) -> None:
        start = datetime(2026, 6, 3, tzinfo=UTC)
        assert provider.series_sync("de", start, start + HOUR).zone == "DE"


class TestAnnualFallback:
    def test_flat_series_with_latest_annual_value(self, provider: OfflineCarbonProvider) -> None:
        rows = [
            r
            for r in read_csv("annual_intensity.csv.gz")
            if r["scope"] == "zone" and r["em_zone"] == "SE-SE3"
        ]
        latest = max(rows, key=lambda r: int(r["year"]))
        assert latest["year"] == "2025"
        start = datetime(2026, 11, 24, 10, 15, tzinfo=UTC)
        series = provider.series_sync("SE-SE3", start, start + timedelta(hours=5))
        assert len(series.values) == 6
        assert np.all(series.values == float(latest["carbon_intensity_gco2_per_kwh"]))
        assert series.runs[0].label == "fallback:annual-2025"
        assert provider.source_label("se-se3") == "fallback:annual-2025"

    def test_every_known_zone_answers(self, provider: OfflineCarbonProvider) -> None:
        start = datetime(2026, 1, 1, tzinfo=UTC)
        for info in provider.catalog.zones():
            series = provider.series_sync(info.zone, start, start + timedelta(days=1))
            assert len(series.values) == 24
            assert np.isfinite(series.values).all()
            assert (series.runs[0].label == "fallback:replay-2023") == info.has_hourly


class TestErrors:
    def test_unknown_zone(self, provider: OfflineCarbonProvider) -> None:
        start = datetime(2026, 1, 1, tzinfo=UTC)
        with pytest.raises(UnknownZone, match=r"unknown zone 'XX'") as caught:
            provider.series_sync("XX", start, start + HOUR)
        assert caught.value.loc == ()
        with pytest.raises(UnknownZone):
            provider.source_label("XX")

    def test_naive_datetime_rejected(self, provider: OfflineCarbonProvider) -> None:
        with pytest.raises(ValueError, match="naive"):
            provider.series_sync("DE", datetime(2026, 1, 1), datetime(2026, 1, 2))


class TestProtocol:
    def test_satisfies_protocol(self, provider: OfflineCarbonProvider) -> None:
        assert isinstance(provider, BundledSeries)
        assert provider.name == "bundled"

    async def test_async_series(self, provider: OfflineCarbonProvider) -> None:
        start = datetime(2026, 6, 3, tzinfo=UTC)
        series = await provider.series("DE", start, start + timedelta(days=2))
        assert len(series.values) == 48
        row = load_hourly_carbon().row("DE")
        assert row is not None
        assert series.values[0] == load_hourly_carbon().lifecycle[row][reference_index(start)]
