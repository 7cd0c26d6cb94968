"""The forecaster's live history: stored once, extended with the newest hours, degrading to the replay.

The network boundary is respx in front of the real Electricity Maps adapter; the bodies follow
the documented v3 shapes (docs/data-sources.md §1.3: `data` rows of past-range, `history` rows of
the 24 h endpoint). Values are a synthetic daily cycle, so a fit on them is recognisable.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pytest
import respx
from pydantic import SecretStr

from carbon_optimizer.domain import forecast as fc
from carbon_optimizer.providers.budget import RequestBudget, request_budget
from carbon_optimizer.providers.carbon.base import HOUR, SeriesKind, SeriesRequest
from carbon_optimizer.providers.carbon.cache import CachedSeriesSource
from carbon_optimizer.providers.carbon.electricitymaps import ElectricityMapsProvider
from carbon_optimizer.providers.carbon.forecast import (
    OFFLINE_MAPE_PCT,
    ForecastSource,
    backtested_mape_pct,
)
from carbon_optimizer.providers.carbon.live_history import (
    KEEP_HOURS,
    STORED_HOURS,
    HistorySource,
    LiveHistory,
    decode,
)
from carbon_optimizer.providers.carbon.offline import REPLAY_LABEL, OfflineCarbonProvider
from carbon_optimizer.providers.carbon.stack import build_carbon_stack
from carbon_optimizer.providers.store import MemoryStore
from carbon_optimizer.providers.upstream import CircuitBreaker, CircuitState
from carbon_optimizer.settings import CacheSettings, CarbonChainSettings, ElectricityMapsSettings, Settings

BASE = "https://api.electricitymaps.com/v3"
TOKEN = "em-live-history-token-93ac1"
OFFLINE = OfflineCarbonProvider()
START = datetime(2026, 6, 3, 9, 30, tzinfo=UTC)


def intensity(when: datetime) -> float:
    """A daily cycle plus a weekday step: what the synthetic upstream measured at `when`."""
    return 300.0 + 80.0 * math.sin(2 * math.pi * when.hour / 24) + (15.0 if when.weekday() < 5 else 0.0)


def row(when: datetime) -> dict[str, object]:
    return {
        "zone": "DE",
        "carbonIntensity": intensity(when),
        "datetime": when.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "updatedAt": "2026-06-03T08:55:00.000Z",
        "emissionFactorType": "lifecycle",
        "isEstimated": False,
        "estimationMethod": None,
    }


def wire(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class Upstream:
    """The respx side: answers past-range for any window and the last 24 h of `now`."""

    def __init__(self) -> None:
        self.now = START
        self.past: list[tuple[datetime, datetime]] = []
        self.history_calls = 0
        self.fail_past: set[int] = set()  # indices (call order) of past-range calls answering 500
        self.past_status = 200
        self.timeout = False
        self.drop: tuple[datetime, datetime] | None = None  # hours answered null
        self.lag = 0  # newest hours not published yet

    def hour(self) -> datetime:
        return self.now.replace(minute=0, second=0, microsecond=0)

    def rows(self, a: datetime, b: datetime) -> list[dict[str, object]]:
        out = []
        when = a
        b = min(b, self.hour() - self.lag * HOUR)
        while when < b:
            r = row(when)
            if self.drop is not None and self.drop[0] <= when < self.drop[1]:
                r["carbonIntensity"] = None
            out.append(r)
            when += HOUR
        return out

    def past_range(self, request: httpx.Request) -> httpx.Response:
        index = len(self.past)
        a, b = wire(request.url.params["start"]), wire(request.url.params["end"])
        self.past.append((a, b))
        if self.timeout:
            raise httpx.ReadTimeout("upstream timed out", request=request)
        if index in self.fail_past or self.past_status != 200:
            status = 500 if index in self.fail_past else self.past_status
            if status == 401:  # the free tier's answer to past-range (docs/data-sources.md §1.5)
                return httpx.Response(401, json={"message": "Request unauthorized for zoneKey=DE"})
            return httpx.Response(status, json={"status": "error", "message": "Unknown error occured."})
        return httpx.Response(200, json={"zone": "DE", "data": self.rows(a, b)})

    def forecast(self, request: httpx.Request) -> httpx.Response:
        start = self.hour()
        body = {
            "zone": "DE",
            "forecast": self.rows(start, start + 73 * HOUR),
            "updatedAt": "2026-06-03T09:00Z",
        }
        return httpx.Response(200, json=body)

    def history(self, request: httpx.Request) -> httpx.Response:
        self.history_calls += 1
        end = self.hour()
        return httpx.Response(200, json={"zone": "DE", "history": self.rows(end - 24 * HOUR, end)})


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture
async def http(upstream: Upstream) -> AsyncIterator[httpx.AsyncClient]:
    router = respx.Router(base_url=BASE, assert_all_called=False)
    router.get("/carbon-intensity/past-range").mock(side_effect=upstream.past_range)
    router.get("/carbon-intensity/history").mock(side_effect=upstream.history)
    router.get("/carbon-intensity/forecast").mock(side_effect=upstream.forecast)
    async with httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler)) as client:
        yield client


class Worker:
    """What one worker's stack holds for the forecaster: adapter, its cache, live history, source."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        store: MemoryStore,
        upstream: Upstream,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.upstream = upstream
        settings = ElectricityMapsSettings(api_key=SecretStr(TOKEN), max_retries=0, backoff_base_s=0.01)
        self.em = ElectricityMapsProvider(http, settings, breaker=breaker, wall_clock=lambda: upstream.now)
        self.cache = CachedSeriesSource(self.em, store, CacheSettings(), variant="lifecycle-h72")
        source = HistorySource("electricitymaps", self.em, self.cache, "lifecycle")
        self.history = LiveHistory(
            lambda zone: [source], OFFLINE, store, clock=lambda: upstream.now.timestamp()
        )
        self.forecast = ForecastSource(
            self.history, store, CacheSettings(), covers=lambda z: True, clock=lambda: upstream.now
        )
        self.store = store

    async def fit(self) -> str:
        """Fit (or read the shared fit) for DE; the history kind of the band served."""
        await self.forecast.fetch(SeriesRequest(SeriesKind.FORECAST, "DE"))
        band = self.forecast.band("DE")
        assert band is not None
        return band.history

    async def expire_fit(self) -> None:
        """The hourly TTL passed: the next fetch refits (the stored history stays)."""
        await self.store.delete(self.forecast.cache.key_for(SeriesRequest(SeriesKind.FORECAST, "DE")))
        self.forecast = ForecastSource(
            self.history,
            self.store,
            CacheSettings(),
            covers=lambda z: True,
            clock=lambda: self.upstream.now,
        )

    async def stored(self) -> tuple[datetime, np.ndarray] | None:
        data = await self.store.get(self.history.key_for("electricitymaps", "DE"))
        entry = decode(data) if data is not None else None
        return (entry.end, np.asarray(entry.values)) if entry is not None else None


def end_hour(now: datetime) -> datetime:
    return now.replace(minute=0, second=0, microsecond=0)


async def test_first_fit_backfills_nine_weeks_once_then_extends_with_the_24h_history(
    http: httpx.AsyncClient, upstream: Upstream
) -> None:
    store = MemoryStore()
    worker = Worker(http, store, upstream)
    assert await worker.fit() == "live"
    # 9 weeks + 6 h in ≤ 10-day chunks: 7 past-range calls, no 24 h call.
    assert len(upstream.past) == -(-STORED_HOURS // 240) == 7
    assert upstream.history_calls == 0
    assert upstream.past[0][0] == end_hour(START) - STORED_HOURS * HOUR
    assert upstream.past[-1][1] == end_hour(START)
    band = worker.forecast.band("DE")
    assert band is not None
    assert band.model == fc.MODEL_NAME
    stored = await worker.stored()
    assert stored is not None
    assert stored[0] == end_hour(START)
    assert np.isfinite(stored[1]).all()

    # Two hours later the fit expired: the refit asks only the 24 h history (through its cache).
    upstream.now = START + 2 * HOUR
    await worker.expire_fit()
    assert await worker.fit() == "live"
    assert len(upstream.past) == 7
    assert upstream.history_calls == 1
    stored = await worker.stored()
    assert stored is not None
    assert stored[0] == end_hour(START) + 2 * HOUR
    assert len(stored[1]) == STORED_HOURS  # the window slid: the oldest two hours were trimmed
    expected = intensity(end_hour(START) + HOUR)
    assert stored[1][-1] == pytest.approx(expected)

    # Another worker sharing the store reuses both the fit and the history: no upstream call.
    other = Worker(http, store, upstream)
    assert await other.fit() == "live"
    assert (len(upstream.past), upstream.history_calls) == (7, 1)


async def test_a_long_pause_is_caught_up_with_one_past_range_not_a_new_backfill(
    http: httpx.AsyncClient, upstream: Upstream
) -> None:
    worker = Worker(http, MemoryStore(), upstream)
    await worker.fit()
    upstream.now = START + timedelta(days=3)
    await worker.expire_fit()
    assert await worker.fit() == "live"
    assert upstream.past[7:] == [(end_hour(START), end_hour(START) + timedelta(days=3))]


@pytest.mark.parametrize("failure", ["500", "timeout"])
async def test_upstream_failure_during_backfill_fits_on_the_replay_and_says_so(
    http: httpx.AsyncClient, upstream: Upstream, failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    if failure == "500":
        upstream.past_status = 500
    else:
        upstream.timeout = True
    breaker = CircuitBreaker("electricitymaps", failure_threshold=100, reset_s=30.0)
    worker = Worker(http, MemoryStore(), upstream, breaker)
    with caplog.at_level(logging.DEBUG):
        kind = await worker.fit()
    assert kind == "replay"
    assert len(upstream.past) == 7
    # An outage is one log line per backfill, naming how much of it failed, not one per chunk.
    lines = [r.getMessage() for r in caplog.records if "history backfill" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].startswith("history backfill of DE from electricitymaps: 7 of 7 chunks failed (")
    band = worker.forecast.band("DE")
    assert band is not None
    assert backtested_mape_pct(10, band.history) == OFFLINE_MAPE_PCT
    assert TOKEN not in caplog.text
    assert all(TOKEN not in key for key in worker.store._data)  # keys name source and zone only
    # The failed backfill waits out its retry delay; the next refit asks only the 24 h history,
    # whose measured hours join the replay: a mixed history, still the replay's error figures.
    upstream.past_status, upstream.timeout = 200, False
    upstream.now = START + HOUR
    await worker.expire_fit()
    assert await worker.fit() == "mixed"
    assert (len(upstream.past), upstream.history_calls) == (7, 1)
    assert backtested_mape_pct(1, "mixed") == OFFLINE_MAPE_PCT


async def test_an_open_circuit_stops_the_backfill_calls(http: httpx.AsyncClient, upstream: Upstream) -> None:
    upstream.past_status = 503
    breaker = CircuitBreaker("electricitymaps", failure_threshold=3, reset_s=30.0)
    worker = Worker(http, MemoryStore(), upstream, breaker)
    assert await worker.fit() == "replay"
    assert breaker.state is CircuitState.OPEN
    assert len(upstream.past) == 3  # the other 4 chunks cost nothing: the circuit answered


async def test_a_failed_chunk_leaves_a_gap_filled_from_the_replay_and_labelled_mixed(
    http: httpx.AsyncClient, upstream: Upstream
) -> None:
    upstream.fail_past = {3}
    history = Worker(http, MemoryStore(), upstream).history
    end = end_hour(START)
    series = await history("DE", end - KEEP_HOURS * HOUR, end)
    labels = [run.label for run in series.runs]
    assert labels == ["electricitymaps:history", REPLAY_LABEL, "electricitymaps:history"]
    gap = series.runs[1]
    replay = await OFFLINE.series("DE", series.start, end)
    np.testing.assert_array_equal(
        np.asarray(series.values)[gap.start_index : gap.end_index],
        np.asarray(replay.values)[gap.start_index : gap.end_index],
    )
    assert np.isfinite(np.asarray(series.values)).all()

    worker = Worker(http, MemoryStore(), upstream)
    upstream.fail_past = {10}  # the new worker's 4th call (7 + 3)
    assert await worker.fit() == "mixed"
    assert backtested_mape_pct(1, "mixed") == OFFLINE_MAPE_PCT  # the cautious (replay) figures


async def test_null_hours_upstream_are_filled_from_the_replay(
    http: httpx.AsyncClient, upstream: Upstream
) -> None:
    end = end_hour(START)
    upstream.drop = (end - 30 * HOUR, end - 27 * HOUR)
    history = Worker(http, MemoryStore(), upstream).history
    series = await history("DE", end - KEEP_HOURS * HOUR, end)
    gap = [r for r in series.runs if r.label == REPLAY_LABEL]
    assert [(r.end_index - r.start_index) for r in gap] == [3]


async def test_the_requests_budget_bounds_the_backfill_and_the_next_refit_continues_it(
    http: httpx.AsyncClient, upstream: Upstream
) -> None:
    budget = RequestBudget(client="c1", max_calls=3, max_retries=0)
    worker = Worker(http, MemoryStore(), upstream)
    with request_budget(budget):
        assert await worker.fit() == "mixed"  # 3 of 7 chunks arrived, the rest is replay
    assert len(upstream.past) == 3
    assert budget.calls == 3
    assert budget.refused == 4
    upstream.now = START + HOUR
    await worker.expire_fit()
    with request_budget(RequestBudget(client="c2", max_calls=40, max_retries=0)):
        assert await worker.fit() == "live"  # no retry delay after a refusal: the 4 missing chunks
    assert len(upstream.past) == 3 + 4


async def test_a_zone_without_a_live_history_source_keeps_the_replay() -> None:
    history = LiveHistory(lambda zone: [], OFFLINE, MemoryStore())
    end = end_hour(START)
    series = await history("DE", end - 48 * HOUR, end)
    assert [r.label for r in series.runs] == [REPLAY_LABEL]


def _settings(*, live_history: bool = True, factors: str = "lifecycle") -> Settings:
    em = ElectricityMapsSettings.model_validate(
        {"api_key": TOKEN, "base_url": BASE, "max_retries": 0, "emission_factor_type": factors}
    )
    chain = CarbonChainSettings(forecast_live_history=live_history)
    return Settings(_env_file=None, electricitymaps=em, carbon_chain=chain)


@pytest.mark.parametrize(
    ("settings", "kind", "calls"),
    [
        (_settings(), "live", 7),
        (_settings(live_history=False), "replay", 0),
        (_settings(factors="direct"), "replay", 0),  # never glued to lifecycle
    ],
)
async def test_the_stack_fits_on_live_history_when_a_lifecycle_source_is_configured(
    http: httpx.AsyncClient, upstream: Upstream, settings: Settings, kind: str, calls: int
) -> None:
    stack = await build_carbon_stack(settings, http=http, offline=OFFLINE, clock=lambda: START)
    try:
        assert stack.forecast is not None
        await stack.forecast.fetch(SeriesRequest(SeriesKind.FORECAST, "DE"))
        band = stack.forecast.band("DE")
        assert band is not None
        assert band.history == kind
        assert len(upstream.past) == calls
    finally:
        await stack.aclose()


async def test_prefetched_zones_are_fitted_by_the_background_refresher_not_a_request(
    http: httpx.AsyncClient, upstream: Upstream
) -> None:
    settings = _settings().model_copy(
        update={
            "electricitymaps": _settings().electricitymaps.model_copy(update={"prefetch_zones": ["DE"]}),
            "cache": CacheSettings(background_refresh=True),
        }
    )
    store = MemoryStore()
    stack = await build_carbon_stack(settings, http=http, offline=OFFLINE, store=store, clock=lambda: START)
    try:
        assert stack.forecast is not None
        key = stack.forecast.cache.key_for(SeriesRequest(SeriesKind.FORECAST, "DE"))
        for _ in range(200):  # the refresher's first round starts at once
            if await store.get(key) is not None:
                break
            await asyncio.sleep(0.02)
        assert await store.get(key) is not None
        assert len(upstream.past) == 7
        # A request now reads the refresher's fit: no further upstream call.
        await stack.forecast.fetch(SeriesRequest(SeriesKind.FORECAST, "DE"))
        band = stack.forecast.band("DE")
        assert band is not None
        assert band.history == "live"
        assert len(upstream.past) == 7
    finally:
        await stack.aclose()


async def test_a_plan_without_past_range_accrues_the_24h_history_and_asks_past_range_daily(
    http: httpx.AsyncClient, upstream: Upstream
) -> None:
    upstream.past_status = 401
    breaker = CircuitBreaker("electricitymaps", failure_threshold=100, reset_s=30.0)
    worker = Worker(http, MemoryStore(), upstream, breaker)
    assert await worker.fit() == "replay"
    assert len(upstream.past) == 1  # the first chunk's 401 stands for the others
    for hours in (1, 2, 3):  # hourly refits: the 24 h history only, its hours kept
        upstream.now = START + hours * HOUR
        await worker.expire_fit()
        assert await worker.fit() == "mixed"
    assert len(upstream.past) == 1
    assert upstream.history_calls == 3
    stored = await worker.stored()
    assert stored is not None
    assert int(np.isfinite(stored[1]).sum()) == 24 + 2  # the first 24 h, then one new hour per refit
    upstream.now = START + 25 * HOUR  # a day later past-range is asked again (plans change)
    await worker.expire_fit()
    await worker.fit()
    assert len(upstream.past) == 2


@pytest.mark.parametrize(("lag", "kind", "starts"), [(2, "live", -2), (9, "mixed", 0)])
async def test_newest_hours_not_yet_published_end_the_history_earlier_instead_of_replaying_them(
    http: httpx.AsyncClient, upstream: Upstream, lag: int, kind: str, starts: int
) -> None:
    upstream.lag = lag
    worker = Worker(http, MemoryStore(), upstream)
    assert await worker.fit() == kind
    band = worker.forecast.band("DE")
    assert band is not None
    assert band.start == end_hour(START) + starts * HOUR  # the forecast starts where history ends
    assert band.model == fc.MODEL_NAME  # still the full 9 weeks, not the -short model
