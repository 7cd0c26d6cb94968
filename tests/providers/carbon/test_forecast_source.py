"""Our forecaster as a carbon source: packed cache entries, one fit per TTL, chain placement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import numpy as np

from carbon_optimizer.domain.models import CarbonSeries
from carbon_optimizer.providers.carbon.base import HOUR, SeriesKind, SeriesRequest
from carbon_optimizer.providers.carbon.chain import CarbonChain
from carbon_optimizer.providers.carbon.forecast import (
    OFFLINE_REL_BAND,
    ForecastSource,
    backtested_mape_pct,
    pack,
    unpack,
)
from carbon_optimizer.providers.carbon.offline import OfflineCarbonProvider
from carbon_optimizer.providers.carbon.stack import build_carbon_stack
from carbon_optimizer.providers.store import MemoryStore
from carbon_optimizer.settings import CacheSettings, CarbonChainSettings, Settings

NOW = datetime(2026, 6, 3, 9, 30, tzinfo=UTC)
OFFLINE = OfflineCarbonProvider()


def _clock() -> datetime:
    return NOW


class CountingHistory:
    """The bundled replay as history, counting reads (each read is one fit)."""

    def __init__(self) -> None:
        self.reads = 0

    async def __call__(self, zone: str, start: datetime, end: datetime) -> CarbonSeries:
        self.reads += 1
        return await OFFLINE.series(zone, start, end)


def _source(history: CountingHistory, store: MemoryStore | None = None) -> ForecastSource:
    return ForecastSource(
        history, store or MemoryStore(), CacheSettings(), covers=lambda z: z != "XX", clock=_clock
    )


async def test_pack_unpack_round_trip_keeps_p50_band_and_history_kind() -> None:
    end = datetime(2026, 6, 3, 9, tzinfo=UTC)
    history = await OFFLINE.series("DE", end - timedelta(hours=1600), end)
    history = CarbonSeries(
        zone="DE",
        start=history.start,
        step=HOUR,
        values=np.asarray(history.values)[:1600],
        runs=((history.runs[0].__class__(0, 1600, history.runs[0].label)),),
        emission_factor_type=history.emission_factor_type,
    )
    series, band = unpack(pack(history))
    assert series.start == end
    assert len(series.values) == 168
    assert series.runs[0].label == "forecast:profile-ar"
    assert band.history == "replay"
    assert band.model == "profile-ar"
    np.testing.assert_array_equal(band.paths[1], series.values)
    # Replayed history: the measured flat relative band, not the forecaster's hourly one.
    np.testing.assert_allclose(band.paths[2] / band.paths[1] - 1.0, OFFLINE_REL_BAND[2])
    assert band.window(end + 5 * HOUR, 3) is not None
    assert band.window(end + 167 * HOUR, 2) is None


async def test_fits_once_per_ttl_and_workers_share_the_fit_through_the_store() -> None:
    history, store = CountingHistory(), MemoryStore()
    first, second = _source(history, store), _source(history, store)
    request = SeriesRequest(SeriesKind.FORECAST, "DE")
    a = await first.fetch(request)
    b = await first.fetch(request)
    c = await second.fetch(request)  # another worker: reads the shared entry, no refit
    assert history.reads == 1
    np.testing.assert_array_equal(a.series.values, c.series.values)
    assert b.series.runs[0].label == "forecast:profile-ar"
    band = second.band("DE")
    assert band is not None
    assert np.all(band.paths[0] <= band.paths[1])
    assert np.all(band.paths[1] <= band.paths[2])


async def test_chain_paints_our_forecast_only_where_nothing_earlier_reached() -> None:
    history = CountingHistory()
    chain = CarbonChain((_source(history),), OFFLINE, live_deadline_s=5.0, clock=_clock)
    start = datetime(2026, 6, 3, 10, tzinfo=UTC)
    result = await chain.series("DE", start, start + timedelta(days=8))
    labels = [r.label for r in result.series.runs]
    assert labels == ["forecast:profile-ar", "fallback:replay-2023"]  # beyond 168 h: the replay
    assert result.warnings == ()
    # A zone the source does not cover (no hourly history) keeps the bundled data, no fit.
    assert chain.route("XX") == ()


def test_backtested_error_depends_on_history_and_horizon() -> None:
    assert backtested_mape_pct(1, "live") < backtested_mape_pct(100, "live")
    assert backtested_mape_pct(1, "replay") == backtested_mape_pct(150, "replay")


async def test_stack_puts_the_forecaster_last_offline_and_can_be_switched_off() -> None:
    async with httpx.AsyncClient() as http:
        on = await build_carbon_stack(Settings(_env_file=None), http=http, offline=OFFLINE)
        off = await build_carbon_stack(
            Settings(_env_file=None, carbon_chain=CarbonChainSettings(forecast_offline=False)),
            http=http,
            offline=OFFLINE,
        )
        try:
            assert [s.name for s in on.provider.route("DE")] == ["forecast"]
            assert on.provider.route("IS") == ()  # annual-only zone: no hourly history
            assert off.provider.route("DE") == ()
            assert off.forecast is None
        finally:
            await on.aclose()
            await off.aclose()
