"""GB Carbon Intensity adapter against MockTransport fixtures in the documented wire shapes.

Fixtures under fixtures/gb_intensity/ follow the national and the three regional envelopes (values
invented). `Emulator` answers range routes by the API's boundary rule — every half-hour whose END
lies in [from, to] — so the tests check that our requests ask for exactly the periods we keep.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import numpy as np
import pytest
import respx

from carbon_optimizer.errors import (
    MalformedUpstreamResponse,
    NoDataForZone,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderUnavailable,
    UnknownZone,
)
from carbon_optimizer.providers.carbon.base import SeriesKind, SeriesRequest, SeriesSource
from carbon_optimizer.providers.carbon.common import Signal
from carbon_optimizer.providers.carbon.gb_intensity import (
    ACTUAL,
    FORECAST,
    GB_ZONES,
    GBIntensityProvider,
    floor_period,
    parse_periods,
    periods_to_points,
    range_chunks,
)
from carbon_optimizer.providers.upstream import CircuitBreaker, CircuitState
from carbon_optimizer.settings import GBIntensitySettings, Settings
from tests.providers.carbon.support import FakeTime, load, upstream_count

BASE = "https://api.carbonintensity.org.uk"
NOW = datetime(2024, 5, 1, 12, 7, tzinfo=UTC)  # inside the 12:00–12:30 half-hour
HALF = timedelta(minutes=30)


def gb(name: str) -> Any:
    return load("gb_intensity", name)


def stamp(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%MZ")


class Emulator:
    """Answers `/intensity/{from}/{fw24h|fw48h|pt24h|to}` like the live API (national shape)."""

    def __init__(self, now: datetime, *, max_days: int = 14) -> None:
        self.now = now
        self.max_days = max_days
        self.spans: list[tuple[datetime, datetime]] = []

    @staticmethod
    def value(start: datetime) -> int:
        return 100 + int(start.timestamp() // 1800) % 97

    def __call__(self, request: httpx.Request) -> httpx.Response:
        _, _, frm, last = request.url.path.split("/")
        a = datetime.fromisoformat(frm)
        if last in ("fw24h", "fw48h"):
            lo, hi = a, a + timedelta(hours=int(last[2:4]))
        elif last == "pt24h":
            lo, hi = a - timedelta(hours=24), a
        else:
            lo, hi = a, datetime.fromisoformat(last)
        if hi - lo > timedelta(days=self.max_days) or lo.year != (hi - timedelta(minutes=1)).year:
            return httpx.Response(400, json={"error": {"code": "400 Bad Request", "message": "range"}})
        self.spans.append((lo, hi))
        end = floor_period(lo) + (HALF if floor_period(lo) < lo else timedelta(0))
        rows = []
        while end <= hi:
            start = end - HALF
            measured = start < floor_period(self.now)
            intensity = {"forecast": self.value(start), "actual": self.value(start) if measured else None}
            rows.append({"from": stamp(start), "to": stamp(end), "intensity": {**intensity, "index": "low"}})
            end += HALF
        return httpx.Response(200, json={"data": rows})


@pytest.fixture
def router() -> respx.Router:
    return respx.Router(base_url=BASE, assert_all_called=False)


@pytest.fixture
async def http(router: respx.Router) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler)) as client:
        yield client


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


def make(
    http: httpx.AsyncClient,
    fake_time: FakeTime,
    *,
    breaker: CircuitBreaker | None = None,
    wall_clock: Callable[[], datetime] = lambda: NOW,
    **overrides: Any,
) -> GBIntensityProvider:
    return GBIntensityProvider(
        http,
        GBIntensitySettings(enabled=True, backoff_base_s=0.1, **overrides),
        breaker=breaker,
        wall_clock=wall_clock,
        monotonic=fake_time.monotonic,
        sleep=fake_time.sleep,
        rng=lambda: 0.5,
    )


def state_of(breaker: CircuitBreaker) -> CircuitState:
    return breaker.state


# ----- pure parsing -----


def test_national_periods_keep_forecast_and_actual() -> None:
    periods = parse_periods(gb("intensity_current.json"), None)
    assert len(periods) == 1
    period = periods[0]
    assert (period.start, period.end) == (
        datetime(2024, 5, 1, 12, tzinfo=UTC),
        datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
    )
    assert (period.forecast, period.actual, period.index) == (266.0, 263.0, "moderate")
    assert periods_to_points(periods)[0].value == 263.0
    assert periods_to_points(periods)[0].label == ACTUAL


def test_forecast_is_used_where_nothing_was_measured() -> None:
    periods = parse_periods(gb("intensity_pt24h.json"), None)
    points = periods_to_points(periods)
    assert [p.label for p in points[-2:]] == [ACTUAL, FORECAST]
    last = gb("intensity_pt24h.json")["data"][-1]["intensity"]
    assert last["actual"] is None
    assert points[-1].value == last["forecast"]


def test_three_regional_envelopes_parse_to_the_asked_region() -> None:
    window = parse_periods(gb("regional_fw48h_regionid_13.json"), 13)  # data = object
    now = parse_periods(gb("regional_regionid_13.json"), 13)  # data = [region]
    per_period = parse_periods(gb("regional_all.json"), 13)  # data = [period with regions]
    assert len(window) == 96
    assert all(p.actual is None for p in window)  # regional routes publish no actual
    assert now[0].forecast == gb("regional_regionid_13.json")["data"][0]["data"][0]["intensity"]["forecast"]
    assert [p.forecast for p in per_period] == [130.0]
    assert parse_periods(gb("regional_all.json"), 1)[0].forecast == 10.0
    with pytest.raises(MalformedUpstreamResponse, match="answered region 13"):
        parse_periods(gb("regional_fw48h_regionid_13.json"), 12)
    with pytest.raises(MalformedUpstreamResponse, match="region 19 missing"):
        parse_periods(gb("regional_all.json"), 19)


@pytest.mark.parametrize(
    "body",
    [
        [1, 2],
        {"error": "x"},
        {"data": "nope"},
        {"data": [{"from": "2024-05-01T12:00Z", "intensity": {"forecast": 1}}]},
        {"data": [{"from": "2024-05-01T12:30Z", "to": "2024-05-01T12:00Z", "intensity": {"forecast": 1}}]},
        {"data": [{"from": "2024-05-01T12:00Z", "to": "2024-05-01T12:30Z", "intensity": 5}]},
        {
            "data": [
                {"from": "2024-05-01T12:00Z", "to": "2024-05-01T12:30Z", "intensity": {"forecast": "high"}}
            ]
        },
    ],
)
def test_wrong_shapes_are_malformed(body: Any) -> None:
    with pytest.raises(MalformedUpstreamResponse):
        parse_periods(body, None)


def test_empty_object_is_the_documented_outage() -> None:
    with pytest.raises(ProviderUnavailable, match="offline"):
        parse_periods({}, 13)


def test_floor_period_is_utc_whatever_the_input_zone() -> None:
    bst = timezone(timedelta(hours=1))
    assert floor_period(datetime(2024, 5, 1, 13, 44, 59, tzinfo=bst)) == datetime(
        2024, 5, 1, 12, 30, tzinfo=UTC
    )
    assert floor_period(datetime(2024, 5, 1, 12, 0, tzinfo=UTC)) == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert floor_period(datetime(2024, 5, 1, 12, 29, 59, 999999, tzinfo=UTC)).minute == 0


def test_range_chunks_are_short_and_never_cross_new_year() -> None:
    start, end = datetime(2023, 12, 20, tzinfo=UTC), datetime(2024, 1, 20, tzinfo=UTC)
    chunks = range_chunks(start, end)
    assert chunks[0] == (start, datetime(2024, 1, 1, tzinfo=UTC))
    assert all(b - a <= timedelta(days=13) for a, b in chunks)
    assert all(a.year == (b - timedelta(microseconds=1)).year for a, b in chunks)
    assert chunks[-1][1] == end
    assert all(chunks[i][1] == chunks[i + 1][0] for i in range(len(chunks) - 1))


# ----- endpoints -----


async def test_national_forecast_asks_from_just_past_the_boundary(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    route = router.get("/intensity/2024-05-01T12:01Z/fw48h").respond(json=gb("intensity_fw48h.json"))
    before = upstream_count("carbonintensity-uk", "forecast", "ok")
    got = await make(http, fake_time).forecast("GB")
    request = route.calls.last.request
    assert "content-type" not in request.headers  # the regional routes answer 400 to one
    assert request.headers["user-agent"] == "carbon-optimizer"
    series = got.series
    assert series.zone == "GB"
    assert series.start == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert series.step == HALF
    assert len(series.values) == 96
    assert series.values.tolist() == [
        float(r["intensity"]["forecast"]) for r in gb("intensity_fw48h.json")["data"]
    ]
    assert [r.label for r in series.runs] == [FORECAST]
    assert series.emission_factor_type == "direct"
    assert got.fetched_at == NOW
    assert upstream_count("carbonintensity-uk", "forecast", "ok") == before + 1


async def test_boundary_period_that_ends_at_from_is_dropped(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    # Had we asked from 12:00Z exactly, the API would add the half-hour ending at 12:00Z (97 rows).
    router.get("/intensity/2024-05-01T12:01Z/fw48h").respond(json=gb("intensity_fw48h_boundary.json"))
    got = await make(http, fake_time).forecast("GB")
    assert got.series.start == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert len(got.series.values) == 96


@pytest.mark.parametrize(
    ("horizon", "window", "points"), [(6, "fw24h", 12), (24, "fw24h", 48), (72, "fw48h", 96)]
)
async def test_forecast_horizon_is_trimmed_and_capped_at_48h(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime, horizon: int, window: str, points: int
) -> None:
    route = router.get(f"/intensity/2024-05-01T12:01Z/{window}").respond(json=gb("intensity_fw48h.json"))
    got = await make(http, fake_time).forecast("GB", horizon_hours=horizon)
    assert route.call_count == 1
    assert len(got.series.values) == points
    assert got.series.end <= NOW + timedelta(hours=48)


async def test_forecast_rejects_a_non_positive_horizon(http: httpx.AsyncClient, fake_time: FakeTime) -> None:
    with pytest.raises(ValueError, match="positive"):
        await make(http, fake_time).forecast("GB", horizon_hours=0)


async def test_history_labels_measured_and_forecast_points(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    router.get("/intensity/2024-05-01T12:01Z/pt24h").respond(json=gb("intensity_pt24h.json"))
    got = await make(http, fake_time).history("GB")
    series = got.series
    assert series.start == datetime(2024, 4, 30, 12, tzinfo=UTC)
    assert series.end == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert [(r.start_index, r.end_index, r.label) for r in series.runs] == [
        (0, 47, ACTUAL),
        (47, 48, FORECAST),
    ]
    assert series.sources_between(series.start, series.end) == (ACTUAL, FORECAST)


async def test_latest_national_and_regional(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    router.get("/intensity").respond(json=gb("intensity_current.json"))
    router.get("/regional/regionid/13").respond(json=gb("regional_regionid_13.json"))
    provider = make(http, fake_time)
    national = await provider.latest("GB")
    london = await provider.latest("GB-LONDON")
    assert national.series.values.tolist() == [263.0]
    assert national.series.runs[0].label == ACTUAL
    assert london.series.runs[0].label == FORECAST
    assert london.series.zone == "GB-LONDON"


async def test_regional_forecast_uses_the_region_route(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    path = "/regional/intensity/2024-05-01T12:01Z/fw48h/regionid/13"
    route = router.get(path).respond(json=gb("regional_fw48h_regionid_13.json"))
    got = await make(http, fake_time).forecast("GB-LONDON")
    assert route.call_count == 1
    assert len(got.series.values) == 96
    assert [r.label for r in got.series.runs] == [FORECAST]


async def test_past_range_chunks_follow_the_boundary_rule_without_gaps_or_duplicates(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    emulator = Emulator(NOW)
    router.get(url__regex=r"/intensity/[^/]+/[^/]+$").mock(side_effect=emulator)
    start, end = datetime(2023, 12, 20, 7, 10, tzinfo=UTC), datetime(2024, 1, 20, tzinfo=UTC)
    got = await make(http, fake_time).past_range("GB", start, end)
    series = got.series
    assert series.start == datetime(2023, 12, 20, 7, 0, tzinfo=UTC)  # the half-hour holding `start`
    assert series.end == end
    assert len(emulator.spans) == 3  # 11.7 d up to New Year, then 13 d and 6 d
    assert not np.isnan(series.values).any()
    expected = [Emulator.value(series.start + i * HALF) for i in range(len(series.values))]
    assert series.values.tolist() == expected
    assert [r.label for r in series.runs] == [ACTUAL]


async def test_half_hours_stay_regular_across_the_clock_change(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    # UK clocks went forward at 01:00 UTC on 31 March 2024 (a 46-period local day); UTC is unaffected.
    now = datetime(2024, 3, 30, 23, 45, tzinfo=UTC)
    router.get(url__regex=r"/intensity/[^/]+/fw24h$").mock(side_effect=Emulator(now))
    got = await make(http, fake_time, wall_clock=lambda: now).forecast("GB", horizon_hours=24)
    series = got.series
    assert series.start == datetime(2024, 3, 30, 23, 30, tzinfo=UTC)
    assert len(series.values) == 48
    assert not np.isnan(series.values).any()
    assert series.end - series.start == timedelta(hours=24)


async def test_duplicate_periods_are_deduplicated(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    body = gb("intensity_pt24h.json")
    body["data"].insert(10, body["data"][10])
    router.get("/intensity/2024-05-01T12:01Z/pt24h").respond(json=body)
    got = await make(http, fake_time).history("GB")
    assert len(got.series.values) == 48


async def test_fetch_dispatches_series_requests(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    router.get("/intensity").respond(json=gb("intensity_current.json"))
    router.get("/intensity/2024-05-01T12:01Z/fw48h").respond(json=gb("intensity_fw48h.json"))
    provider = make(http, fake_time)
    assert len((await provider.fetch(SeriesRequest(SeriesKind.LATEST, "GB"))).series.values) == 1
    assert len((await provider.fetch(SeriesRequest(SeriesKind.FORECAST, "GB"))).series.values) == 96


async def test_coverage_is_gb_and_average_only(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    route = router.get("/intensity").respond(json=gb("intensity_current.json"))
    provider = make(http, fake_time)
    assert provider.covers("GB")
    assert provider.covers("GB-NORTH-SCOTLAND")
    assert not provider.covers("GB", Signal.MARGINAL)
    assert not provider.covers("GB-NIR")  # Northern Ireland is not in the GB system
    assert len([z for z, r in GB_ZONES.items() if r is not None and r <= 14]) == 14
    with pytest.raises(NoDataForZone, match="Great Britain only"):
        await provider.latest("DE")
    with pytest.raises(UnknownZone):
        await provider.latest("GB/../x")
    assert route.call_count == 0


# ----- the fault table -----


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            400,
            {"error": {"code": "400 Bad Request", "message": "No postcode match can be found."}},
            NoDataForZone,
        ),
        (404, {"error": {"code": "404 Not Found", "message": "nothing"}}, NoDataForZone),
        (401, {"error": {"code": "401 Unauthorized", "message": "no"}}, ProviderAuthError),
        (403, "Forbidden", ProviderAuthError),
    ],
)
async def test_definite_errors_are_mapped_and_not_retried(
    router: respx.Router,
    http: httpx.AsyncClient,
    fake_time: FakeTime,
    status: int,
    body: Any,
    expected: type[ProviderError],
) -> None:
    response = (
        httpx.Response(status, json=body) if isinstance(body, dict) else httpx.Response(status, text=body)
    )
    route = router.get("/intensity").mock(return_value=response)
    provider = make(http, fake_time)
    with pytest.raises(expected) as info:
        await provider.latest("GB")
    assert type(info.value) is expected
    assert route.call_count == 1
    assert state_of(provider.breaker) is CircuitState.CLOSED
    assert provider.status.last_error is not None


async def test_400_keeps_the_upstream_words(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    router.get("/intensity").respond(400, json=gb("error_400_postcode.json"))
    with pytest.raises(NoDataForZone, match="No postcode match"):
        await make(http, fake_time).latest("GB")


async def test_500_is_retried_then_unavailable(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    route = router.get("/intensity").respond(500, json=gb("error_500.json"))
    with pytest.raises(ProviderUnavailable, match="Requested resource not found"):
        await make(http, fake_time, max_retries=2).latest("GB")
    assert route.call_count == 3
    assert fake_time.sleeps == pytest.approx([0.05, 0.1])


async def test_5xx_then_success(router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime) -> None:
    router.get("/intensity").mock(
        side_effect=[httpx.Response(502), httpx.Response(200, json=gb("intensity_current.json"))]
    )
    assert (await make(http, fake_time).latest("GB")).series.values.tolist() == [263.0]


async def test_429_retry_after_is_honoured(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    route = router.get("/intensity").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "1"}),
            httpx.Response(200, json=gb("intensity_current.json")),
        ]
    )
    await make(http, fake_time).latest("GB")
    assert route.call_count == 2
    assert fake_time.sleeps[0] >= 1.0


async def test_429_beyond_the_deadline_gives_up_at_once(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    route = router.get("/intensity").respond(429, headers={"Retry-After": "120"})
    with pytest.raises(ProviderRateLimited) as info:
        await make(http, fake_time).latest("GB")
    assert route.call_count == 1
    assert info.value.retry_after_s == 120


@pytest.mark.parametrize(
    "error",
    [httpx.ReadTimeout("read timed out"), httpx.ConnectTimeout("connect"), httpx.ConnectError("refused")],
)
async def test_transport_errors_are_retried_then_unavailable(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime, error: Exception
) -> None:
    route = router.get("/intensity").mock(side_effect=error)
    with pytest.raises(ProviderUnavailable) as info:
        await make(http, fake_time, max_retries=2).latest("GB")
    assert route.call_count == 3
    assert info.value.retryable


async def test_slow_upstream_is_cut_by_the_deadline(router: respx.Router, http: httpx.AsyncClient) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, json=gb("intensity_current.json"))

    router.get("/intensity").mock(side_effect=slow)
    provider = GBIntensityProvider(
        http, GBIntensitySettings(request_deadline_s=0.2, read_timeout_s=5, max_retries=3)
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ProviderUnavailable):
        await provider.latest("GB")
    assert loop.time() - started < 0.5


@pytest.mark.parametrize("body", [b"", b"{}", b"  \n"])
async def test_outage_bodies_are_unavailable_and_count_against_the_breaker(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime, body: bytes
) -> None:
    route = router.get("/regional/regionid/13").respond(200, content=body)
    breaker = CircuitBreaker("gb-outage", failure_threshold=1, reset_s=30, clock=fake_time.monotonic)
    with pytest.raises(ProviderUnavailable):
        await make(http, fake_time, breaker=breaker).latest("GB-LONDON")
    assert route.call_count == 1  # not retried: the data source is offline, not flaky
    assert state_of(breaker) is CircuitState.OPEN


@pytest.mark.parametrize(
    "body", [b"<html>oops</html>", b"[1, 2]", b'{"data": "x"}', b'{"data": [{"from": 1}]}']
)
async def test_malformed_bodies(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime, body: bytes
) -> None:
    route = router.get("/intensity").respond(200, content=body)
    before = upstream_count("carbonintensity-uk", "latest", "malformed")
    provider = make(http, fake_time)
    with pytest.raises(MalformedUpstreamResponse):
        await provider.latest("GB")
    assert route.call_count == 1
    assert upstream_count("carbonintensity-uk", "latest", "malformed") == before + 1
    assert provider.status.last_success is None


async def test_empty_data_and_all_null_values_are_no_data(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    nulls = gb("intensity_fw48h.json")
    for row in nulls["data"]:
        row["intensity"]["forecast"] = None
    router.get("/intensity").respond(json={"data": []})
    router.get("/intensity/2024-05-01T12:01Z/fw48h").respond(json=nulls)
    provider = make(http, fake_time)
    with pytest.raises(NoDataForZone, match="empty"):
        await provider.latest("GB")
    with pytest.raises(NoDataForZone, match="no values"):
        await provider.forecast("GB")


async def test_some_null_values_become_nan(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    body = gb("intensity_fw48h.json")
    body["data"][5]["intensity"]["forecast"] = None
    router.get("/intensity/2024-05-01T12:01Z/fw48h").respond(json=body)
    values = (await make(http, fake_time).forecast("GB")).series.values
    assert math.isnan(values[5])
    assert np.isfinite(np.delete(values, 5)).all()


async def test_breaker_opens_after_failures(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    route = router.get("/intensity").respond(503)
    breaker = CircuitBreaker("gb-test", failure_threshold=2, reset_s=30, clock=fake_time.monotonic)
    provider = make(http, fake_time, breaker=breaker, max_retries=0)
    for _ in range(2):
        with pytest.raises(ProviderUnavailable):
            await provider.latest("GB")
    calls = route.call_count
    with pytest.raises(ProviderUnavailable, match="circuit open"):
        await provider.latest("GB")
    assert route.call_count == calls
    fake_time.now += 31
    route.respond(json=gb("intensity_current.json"))
    await provider.latest("GB")
    assert state_of(breaker) is CircuitState.CLOSED


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARBON_OPTIMIZER_GB_INTENSITY__ENABLED", "true")
    monkeypatch.setenv("CARBON_OPTIMIZER_GB_INTENSITY__BASE_URL", "http://127.0.0.1:9/ci")
    settings = Settings(_env_file=None)
    assert settings.gb_intensity.enabled
    assert settings.gb_intensity.base_url == "http://127.0.0.1:9/ci"
    assert not Settings(_env_file=None).watttime.password
    monkeypatch.delenv("CARBON_OPTIMIZER_GB_INTENSITY__ENABLED")
    assert not Settings(_env_file=None).gb_intensity.enabled  # opt in: the default never calls out


async def test_adapter_satisfies_the_series_source_protocol(http: httpx.AsyncClient) -> None:
    assert isinstance(GBIntensityProvider(http, GBIntensitySettings()), SeriesSource)
