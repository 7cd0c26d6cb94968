"""WattTime v3 adapter against MockTransport fixtures built from the documented wire shapes.

Fixtures under fixtures/watttime/ follow the v3 OpenAPI shapes (login, forecast, historical,
region-from-loc, error bodies); every value in them is invented (WattTime data is proprietary).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pytest
import respx
from pydantic import SecretStr

from carbon_optimizer.errors import (
    MalformedUpstreamResponse,
    NoDataForZone,
    ProviderAuthError,
    ProviderError,
    ProviderNotEntitled,
    ProviderRateLimited,
    ProviderUnavailable,
    UnknownZone,
)
from carbon_optimizer.providers.carbon.base import SeriesKind, SeriesRequest, SeriesSource
from carbon_optimizer.providers.carbon.common import Signal
from carbon_optimizer.providers.carbon.watttime import (
    LBS_PER_MWH_TO_G_PER_KWH,
    WattTimeProvider,
    lbs_per_mwh_to_g_per_kwh,
    parse_access,
    parse_body,
    parse_region,
    parse_token,
)
from carbon_optimizer.providers.upstream import CircuitBreaker, CircuitState
from carbon_optimizer.settings import Settings, WattTimeSettings
from tests.providers.carbon.support import FakeTime, load, raw, upstream_count

HOST = "https://api.watttime.org"
USER = "freddo"
PASSWORD = "the_frog-Secr3t!"
NOW = datetime(2024, 3, 5, 14, 7, 12, tzinfo=UTC)
FIVE_MIN = timedelta(minutes=5)


def wt(name: str) -> Any:
    return load("watttime", name)


class Login:
    """`/login` handler: checks Basic auth, hands out token-1, token-2, ... (tests refresh)."""

    def __init__(self) -> None:
        self.issued: list[str] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.001)  # a real round trip: lets concurrent callers interleave
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if request.headers.get("authorization") != expected:
            return httpx.Response(403, text="<html><title>403 Forbidden</title></html>")
        token = f"eyJ-test-token-{len(self.issued) + 1}"
        self.issued.append(token)
        return httpx.Response(200, json={"token": token})


@pytest.fixture
def router() -> respx.Router:
    return respx.Router(base_url=HOST, assert_all_called=False)


@pytest.fixture
def login(router: respx.Router) -> Login:
    handler = Login()
    router.get("/login").mock(side_effect=handler)
    return handler


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
) -> WattTimeProvider:
    settings = WattTimeSettings(username=USER, password=SecretStr(PASSWORD), backoff_base_s=0.1, **overrides)
    return WattTimeProvider(
        http,
        settings,
        breaker=breaker,
        wall_clock=wall_clock,
        monotonic=fake_time.monotonic,
        sleep=fake_time.sleep,
        rng=lambda: 0.5,
    )


def bearer(request: httpx.Request) -> str:
    return str(request.headers.get("authorization", "")).removeprefix("Bearer ")


def state_of(breaker: CircuitBreaker) -> CircuitState:
    return breaker.state


# ----- pure parsing and units -----


def test_conversion_matches_a_hand_computation() -> None:
    # 1 lb = 453.59237 g exactly; 1 MWh = 1000 kWh. 870 lbs/MWh = 870 × 453.59237 g / 1000 kWh.
    assert lbs_per_mwh_to_g_per_kwh(870.0) == pytest.approx(394.6253619, abs=1e-7)
    assert lbs_per_mwh_to_g_per_kwh(1000.0) == pytest.approx(453.59237)
    assert lbs_per_mwh_to_g_per_kwh(2.20462262) == pytest.approx(1.0, rel=1e-8)
    assert LBS_PER_MWH_TO_G_PER_KWH == 453.59237 / 1000


def test_parse_forecast_body_converts_every_point() -> None:
    body = wt("forecast_CAISO_NORTH_24h.json")
    parsed = parse_body(body, signal_type="co2_moer", label="x")
    assert len(parsed.points) == 288
    assert parsed.step == FIVE_MIN
    assert parsed.generated_at == datetime(2024, 3, 5, 14, 5, tzinfo=UTC)
    assert parsed.region == "CAISO_NORTH"
    first = body["data"][0]
    assert parsed.points[0].start == datetime(2024, 3, 5, 14, 5, tzinfo=UTC)
    assert parsed.points[0].value == pytest.approx(first["value"] * 0.45359237)


def test_parse_accepts_z_timestamps_and_naive_times_as_utc() -> None:
    body = {
        "data": [
            {"point_time": "2024-03-05T14:05:00Z", "value": 100.0},
            {"point_time": "2024-03-05T15:10:00+01:00", "value": 200.0},
        ],
        "meta": {"units": "lbs_co2_per_mwh", "signal_type": "co2_moer"},
    }
    parsed = parse_body(body, signal_type="co2_moer", label="x")
    assert [p.start for p in parsed.points] == [
        datetime(2024, 3, 5, 14, 5, tzinfo=UTC),
        datetime(2024, 3, 5, 14, 10, tzinfo=UTC),
    ]
    assert parsed.step is None  # no period in meta: the series derives it from the gaps


def test_percentile_units_are_refused_not_converted() -> None:
    with pytest.raises(MalformedUpstreamResponse, match="units"):
        parse_body(wt("signal_index_PSCO.json"), signal_type="co2_moer", label="x")


@pytest.mark.parametrize(
    "body",
    [
        [1, 2],
        {"data": "nope", "meta": {"units": "lbs_co2_per_mwh"}},
        {"data": []},
        {"data": [], "meta": {}},
        {"data": [{"point_time": "yesterday", "value": 1.0}], "meta": {"units": "lbs_co2_per_mwh"}},
        {
            "data": [{"point_time": "2024-03-05T14:05:00Z", "value": "high"}],
            "meta": {"units": "lbs_co2_per_mwh"},
        },
        {
            "data": [{"point_time": "2024-03-05T14:05:00Z", "value": True}],
            "meta": {"units": "lbs_co2_per_mwh"},
        },
        {"data": [], "meta": {"units": "lbs_co2_per_mwh", "signal_type": "health_damage"}},
    ],
)
def test_parse_rejects_wrong_shapes(body: Any) -> None:
    with pytest.raises(MalformedUpstreamResponse):
        parse_body(body, signal_type="co2_moer", label="x")


def test_parse_region_and_token() -> None:
    assert parse_region(wt("region_from_loc.json"), "co2_moer") == "ISONE_WCMA"
    with pytest.raises(MalformedUpstreamResponse):
        parse_region(wt("region_from_loc.json"), "co2_aoer")
    with pytest.raises(MalformedUpstreamResponse):
        parse_region({"region": "a b"}, "co2_moer")
    token = parse_token(wt("login.json"))
    assert token.get_secret_value() == "abcdef0123456789fedcabc"
    assert "abcdef" not in repr(token)
    with pytest.raises(MalformedUpstreamResponse):
        parse_token({"ok": "User created"})


# ----- endpoints -----


async def test_forecast_logs_in_then_sends_the_bearer_token(
    router: respx.Router, login: Login, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    route = router.get("/v3/forecast").respond(json=wt("forecast_CAISO_NORTH_24h.json"))
    before = upstream_count("watttime", "forecast", "ok")

    got = await make(http, fake_time).forecast("US-CAL-CISO", horizon_hours=24)

    request = route.calls.last.request
    assert bearer(request) == login.issued[0]
    assert dict(request.url.params) == {
        "region": "CAISO_NORTH",
        "signal_type": "co2_moer",
        "horizon_hours": "24",
    }
    series = got.series
    expected = np.array([p["value"] for p in wt("forecast_CAISO_NORTH_24h.json")["data"]]) * 0.45359237
    np.testing.assert_allclose(series.values, expected)
    assert series.zone == "US-CAL-CISO"
    assert series.start == datetime(2024, 3, 5, 14, 5, tzinfo=UTC)
    assert series.step == FIVE_MIN
    assert series.end == series.start + timedelta(hours=24)
    assert [r.label for r in series.runs] == ["watttime:co2_moer:forecast"]
    assert series.emission_factor_type == "direct"
    assert got.issued_at == datetime(2024, 3, 5, 14, 5, tzinfo=UTC)
    assert got.fetched_at == NOW
    assert upstream_count("watttime", "forecast", "ok") == before + 1


@pytest.mark.parametrize(
    ("horizon", "fixture", "points"),
    [(None, "forecast_CAISO_NORTH_72h.json", 864), (0, "forecast_CAISO_NORTH_0h.json", 1)],
)
async def test_forecast_horizons(
    router: respx.Router,
    login: Login,
    http: httpx.AsyncClient,
    fake_time: FakeTime,
    horizon: int | None,
    fixture: str,
    points: int,
) -> None:
    route = router.get("/v3/forecast").respond(json=wt(fixture))
    got = await make(http, fake_time).forecast("US-CAL-CISO", horizon_hours=horizon)
    assert route.calls.last.request.url.params["horizon_hours"] == str(72 if horizon is None else horizon)
    assert len(got.series.values) == points


@pytest.mark.parametrize("horizon", [-1, 73])
async def test_forecast_horizon_outside_the_api_range_is_refused_before_any_request(
    router: respx.Router, login: Login, http: httpx.AsyncClient, fake_time: FakeTime, horizon: int
) -> None:
    route = router.get("/v3/forecast").respond(json=wt("forecast_CAISO_NORTH_0h.json"))
    with pytest.raises(ValueError, match="horizon_hours"):
        await make(http, fake_time).forecast("US-CAL-CISO", horizon_hours=horizon)
    assert route.call_count == 0
    assert login.issued == []


async def test_latest_is_the_first_forecast_point(
    router: respx.Router, login: Login, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    route = router.get("/v3/forecast").respond(json=wt("forecast_CAISO_NORTH_0h.json"))
    got = await make(http, fake_time).latest("US-CAL-CISO")
    assert route.calls.last.request.url.params["horizon_hours"] == "0"
    assert got.series.values.tolist() == pytest.approx([650.0 * 0.45359237])


async def test_average_has_no_forecast_and_costs_no_request(
    router: respx.Router, login: Login, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    route = router.get("/v3/forecast").respond(json=wt("forecast_CAISO_NORTH_0h.json"))
    with pytest.raises(NoDataForZone, match="no average"):
        await make(http, fake_time).forecast("US-CAL-CISO", Signal.AVERAGE)
    assert route.call_count == 0


async def test_historical_marginal_filters_to_the_half_open_range(
    router: respx.Router, login: Login, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    route = router.get("/v3/historical").respond(json=wt("historical_CAISO_NORTH.json"))
    start = datetime(2024, 3, 4, 14, 0, tzinfo=UTC)
    got = await make(http, fake_time).historical("US-CAL-CISO", start, start + timedelta(hours=6))
    params = route.calls.last.request.url.params
    assert (params["start"], params["end"]) == ("2024-03-04T14:00:00Z", "2024-03-04T20:00:00Z")
    assert params["signal_type"] == "co2_moer"
    assert len(got.series.values) == 72  # 6 h of 5-min points; the fixture's later points dropped
    assert got.series.start == start
    assert got.series.runs[0].label == "watttime:co2_moer:history"


async def test_historical_average_is_hourly_from_the_parent_region(
    router: respx.Router, login: Login, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    route = router.get("/v3/historical").respond(json=wt("historical_aoer_CAISO.json"))
    start = datetime(2024, 3, 1, tzinfo=UTC)
    got = await make(http, fake_time).historical(
        "US-CAL-CISO", start, start + timedelta(days=1), Signal.AVERAGE
    )
    params = route.calls.last.request.url.params
    assert (params["region"], params["signal_type"]) == ("CAISO", "co2_aoer")
    assert got.series.step == timedelta(hours=1)
    assert len(got.series.values) == 24
    first = wt("historical_aoer_CAISO.json")["data"][0]["value"]
    assert got.series.values[0] == pytest.approx(first * 0.45359237)
    assert got.series.runs[0].label == "watttime:co2_aoer:history"


async def test_historical_is_chunked_and_inclusive_ends_are_deduplicated(
    router: respx.Router, login: Login, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        a = datetime.fromisoformat(request.url.params["start"])
        b = datetime.fromisoformat(request.url.params["end"])
        if b - a > timedelta(days=32):
            return httpx.Response(400, json={"error": "INVALID_QUERY_PARAMS", "message": "max 32 days"})
        count = int((b - a) / timedelta(hours=1)) + 1  # start AND end inclusive, like the API
        data = [{"point_time": (a + timedelta(hours=i)).isoformat(), "value": 1000.0} for i in range(count)]
        meta = {"data_point_period_seconds": 3600, "units": "lbs_co2_per_mwh", "signal_type": "co2_aoer"}
        return httpx.Response(200, json={"data": data, "meta": meta})

    route = router.get("/v3/historical").mock(side_effect=answer)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    end = start + timedelta(days=65)
    got = await make(http, fake_time).historical("US-CAL-CISO", start, end, Signal.AVERAGE)
    spans = sorted(
        (
            datetime.fromisoformat(c.request.url.params["start"]),
            datetime.fromisoformat(c.request.url.params["end"]),
        )
        for c in route.calls
    )
    assert len(spans) == 3
    assert all(b - a <= timedelta(days=30) for a, b in spans)
    assert spans[0][0] == start
    assert spans[-1][1] == end
    assert all(spans[i][1] == spans[i + 1][0] for i in range(2))
    assert len(got.series.values) == 65 * 24  # no duplicate seam points, nothing at `end`
    assert np.allclose(got.series.values, 453.59237)
    assert login.issued == ["eyJ-test-token-1"]  # three concurrent chunks, one login


async def test_history_is_the_last_day(
    router: respx.Router, login: Login, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    route = router.get("/v3/historical").respond(json=wt("historical_CAISO_NORTH.json"))
    end = datetime(2024, 3, 5, 14, 0, tzinfo=UTC)
    got = await make(http, fake_time, wall_clock=lambda: end).history("US-CAL-CISO")
    params = route.calls.last.request.url.params
    assert (params["start"], params["end"]) == ("2024-03-04T14:00:00Z", "2024-03-05T14:00:00Z")
    assert len(got.series.values) == 288


async def test_all_null_values_are_no_data(
    router: respx.Router, login: Login, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    router.get("/v3/historical").respond(json=wt("historical_all_null.json"))
    start = datetime(2024, 3, 4, 14, 0, tzinfo=UTC)
    with pytest.raises(NoDataForZone, match="no values"):
        await make(http, fake_time).historical("US-CAL-CISO", start, start + timedelta(hours=1))


async def test_some_null_values_become_nan(
    router: respx.Router, login: Login, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    body = wt("forecast_CAISO_NORTH_24h.json")
    body["data"][3]["value"] = None
    router.get("/v3/forecast").respond(json=body)
    got = await make(http, fake_time).forecast("US-CAL-CISO")
    assert math.isnan(got.series.values[3])
    assert np.isfinite(np.delete(got.series.values, 3)).all()


async def test_meta_warnings_are_logged_and_the_data_kept(
    router: respx.Router,
    login: Login,
    http: httpx.AsyncClient,
    fake_time: FakeTime,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="carbon_optimizer.providers.carbon.watttime")
    router.get("/v3/forecast").respond(json=wt("forecast_with_warning.json"))
    got = await make(http, fake_time).forecast("US-CAL-CISO")
    assert len(got.series.values) == 12
    assert "EXAMPLE_WARNING" in caplog.text


async def test_fetch_dispatches_series_requests(
    router: respx.Router, login: Login, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    router.get("/v3/forecast").respond(json=wt("forecast_CAISO_NORTH_0h.json"))
    historical = router.get("/v3/historical").respond(json=wt("historical_aoer_CAISO.json"))
    provider = make(http, fake_time)
    latest = await provider.fetch(SeriesRequest(SeriesKind.LATEST, "US-CAL-CISO", signal=Signal.MARGINAL))
    assert len(latest.series.values) == 1
    start = datetime(2024, 3, 1, tzinfo=UTC)
    end = start + timedelta(hours=24)
    request = SeriesRequest(SeriesKind.PAST_RANGE, "US-CAL-CISO", start, end, signal=Signal.AVERAGE)
    past = await provider.fetch(request)
    assert historical.calls.last.request.url.params["region"] == "CAISO"
    assert len(past.series.values) == 24


# ----- regions -----


async def test_zone_table_and_coverage(
    router: respx.Router, login: Login, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    route = router.get("/v3/forecast").respond(json=wt("forecast_CAISO_NORTH_0h.json"))
    provider = make(http, fake_time)
    assert provider.covers("US-CAL-CISO", Signal.MARGINAL)
    assert provider.covers("US-CAL-CISO", Signal.AVERAGE)
    assert provider.covers("US-NY-NYIS", Signal.MARGINAL)
    assert not provider.covers("US-NY-NYIS", Signal.AVERAGE)
    assert not provider.covers("DE")
    with pytest.raises(NoDataForZone, match="no co2_moer region"):
        await provider.forecast("DE")
    with pytest.raises(UnknownZone):
        await provider.forecast("DE&region=X")
    assert route.call_count == 0
    await provider.latest("DE", region="CAISO_NORTH")  # an explicit region needs no table entry
    assert route.calls.last.request.url.params["region"] == "CAISO_NORTH"


async def test_region_from_location_is_cached_until_its_ttl(
    router: respx.Router, login: Login, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    route = router.get("/v3/region-from-loc").respond(json=wt("region_from_loc.json"))
    provider = make(http, fake_time, region_cache_ttl_s=3600)
    assert await provider.region_from_location(42.372, -72.519) == "ISONE_WCMA"
    params = route.calls.last.request.url.params
    assert (params["latitude"], params["longitude"], params["signal_type"]) == (
        "42.372",
        "-72.519",
        "co2_moer",
    )
    assert await provider.region_from_location(42.372, -72.519) == "ISONE_WCMA"
    assert route.call_count == 1
    fake_time.now += 3601
    await provider.region_from_location(42.372, -72.519)
    assert route.call_count == 2


async def test_region_from_location_without_coverage_is_no_data(
    router: respx.Router, login: Login, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    router.get("/v3/region-from-loc").respond(404, json=wt("error_404_no_coverage.json"))
    with pytest.raises(NoDataForZone, match="No coverage available"):
        await make(http, fake_time).region_from_location(0.0, 0.0)
    with pytest.raises(ValueError, match="latitude"):
        await make(http, fake_time).region_from_location(91.0, 0.0)


# ----- token lifecycle -----


async def test_token_is_cached_until_renewal_time(
    router: respx.Router, login: Login, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    route = router.get("/v3/forecast").respond(json=wt("forecast_CAISO_NORTH_0h.json"))
    provider = make(http, fake_time)  # ttl 1800 s, margin 300 s → renew after 1500 s
    for _ in range(3):
        await provider.latest("US-CAL-CISO")
    assert login.issued == ["eyJ-test-token-1"]
    fake_time.now += 1499
    await provider.latest("US-CAL-CISO")
    assert provider.logins == 1
    fake_time.now += 2
    await provider.latest("US-CAL-CISO")
    assert provider.logins == 2
    assert bearer(route.calls.last.request) == "eyJ-test-token-2"


async def test_401_logs_in_again_once_and_retries(
    router: respx.Router, login: Login, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if bearer(request) == "eyJ-test-token-1":
            return httpx.Response(401, text="expired")
        return httpx.Response(200, json=wt("forecast_CAISO_NORTH_0h.json"))

    route = router.get("/v3/forecast").mock(side_effect=answer)
    got = await make(http, fake_time).latest("US-CAL-CISO")
    assert len(got.series.values) == 1
    assert login.issued == ["eyJ-test-token-1", "eyJ-test-token-2"]
    assert [bearer(c.request) for c in route.calls] == ["eyJ-test-token-1", "eyJ-test-token-2"]
    assert fake_time.sleeps == []  # a re-login is not a backoff


async def test_401_after_a_fresh_login_is_an_auth_error_without_a_loop(
    router: respx.Router, login: Login, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    route = router.get("/v3/forecast").respond(401)
    provider = make(http, fake_time)
    with pytest.raises(ProviderAuthError, match="after a fresh login") as info:
        await provider.latest("US-CAL-CISO")
    assert type(info.value) is ProviderAuthError
    assert route.call_count == 2
    assert provider.logins == 2
    assert state_of(provider.breaker) is CircuitState.CLOSED  # the upstream is up, it said no


async def test_concurrent_callers_share_one_login(
    router: respx.Router, login: Login, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    router.get("/v3/forecast").respond(json=wt("forecast_CAISO_NORTH_0h.json"))
    provider = make(http, fake_time)
    await asyncio.gather(*(provider.latest("US-CAL-CISO") for _ in range(8)))
    assert login.issued == ["eyJ-test-token-1"]


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(403, text="<html><title>403 Forbidden</title></html>"),
        httpx.Response(401, json={"error": "bad credentials"}),
    ],
)
async def test_rejected_credentials_are_an_auth_error(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime, response: httpx.Response
) -> None:
    router.get("/login").mock(return_value=response)
    data = router.get("/v3/forecast").respond(json=wt("forecast_CAISO_NORTH_0h.json"))
    with pytest.raises(ProviderAuthError, match="credentials rejected"):
        await make(http, fake_time).latest("US-CAL-CISO")
    assert data.call_count == 0


async def test_login_5xx_is_retried(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    router.get("/login").mock(side_effect=[httpx.Response(502), httpx.Response(200, json={"token": "t2"})])
    data = router.get("/v3/forecast").respond(json=wt("forecast_CAISO_NORTH_0h.json"))
    await make(http, fake_time).latest("US-CAL-CISO")
    assert bearer(data.calls.last.request) == "t2"


# ----- 403: both readings of the contract -----


async def test_403_invalid_scope_is_not_in_plan_without_a_relogin(
    router: respx.Router, login: Login, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    route = router.get("/v3/forecast").respond(403, json=wt("error_403_invalid_scope.json"))
    before = upstream_count("watttime", "forecast", "not_entitled")
    provider = make(http, fake_time)
    with pytest.raises(ProviderNotEntitled, match="Invalid scope"):
        await provider.forecast("US-MIDA-PJM")
    assert route.call_count == 1
    assert provider.logins == 1
    assert upstream_count("watttime", "forecast", "not_entitled") == before + 1


async def test_other_json_403_gets_one_relogin_then_succeeds(
    router: respx.Router, login: Login, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    route = router.get("/v3/forecast").mock(
        side_effect=[
            httpx.Response(403, json={"error": "Forbidden", "message": "token not valid"}),
            httpx.Response(200, json=wt("forecast_CAISO_NORTH_0h.json")),
        ]
    )
    await make(http, fake_time).latest("US-CAL-CISO")
    assert [bearer(c.request) for c in route.calls] == ["eyJ-test-token-1", "eyJ-test-token-2"]


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (httpx.Response(403, json={"error": "Forbidden", "message": "nope"}), ProviderNotEntitled),
        (httpx.Response(403, content=raw("watttime", "error_403_nginx.html")), ProviderAuthError),
    ],
)
async def test_persistent_403_after_relogin(
    router: respx.Router,
    login: Login,
    http: httpx.AsyncClient,
    fake_time: FakeTime,
    response: httpx.Response,
    expected: type[ProviderError],
) -> None:
    route = router.get("/v3/forecast").mock(return_value=response)
    with pytest.raises(expected) as info:
        await make(http, fake_time).latest("US-CAL-CISO")
    assert type(info.value) is expected
    assert route.call_count == 2
    assert len(login.issued) == 2


# ----- the fault table -----


@pytest.mark.parametrize(
    ("status", "body", "words"),
    [
        (400, "error_400_invalid_params.json", "invalid parameters"),
        (404, "error_404_no_coverage.json", "No coverage"),
        (422, "error_422_validation.json", "not a valid float"),
    ],
)
async def test_definite_4xx_are_no_data_and_not_retried(
    router: respx.Router,
    login: Login,
    http: httpx.AsyncClient,
    fake_time: FakeTime,
    status: int,
    body: str,
    words: str,
) -> None:
    route = router.get("/v3/forecast").respond(status, json=wt(body))
    provider = make(http, fake_time)
    with pytest.raises(NoDataForZone, match=words) as info:
        await provider.forecast("US-CAL-CISO")
    assert not info.value.retryable
    assert route.call_count == 1
    assert state_of(provider.breaker) is CircuitState.CLOSED
    assert (provider.status.last_error or "").startswith("NoDataForZone")


async def test_5xx_is_retried_then_unavailable(
    router: respx.Router, login: Login, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    route = router.get("/v3/forecast").respond(503, text="busy")
    with pytest.raises(ProviderUnavailable, match="HTTP 503"):
        await make(http, fake_time, max_retries=2).forecast("US-CAL-CISO")
    assert route.call_count == 3
    assert fake_time.sleeps == pytest.approx([0.05, 0.1])  # full jitter, rng = 0.5
    assert login.issued == ["eyJ-test-token-1"]  # retries reuse the token


async def test_5xx_then_success(
    router: respx.Router, login: Login, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    router.get("/v3/forecast").mock(
        side_effect=[httpx.Response(500), httpx.Response(200, json=wt("forecast_CAISO_NORTH_0h.json"))]
    )
    got = await make(http, fake_time).latest("US-CAL-CISO")
    assert len(got.series.values) == 1


async def test_429_retry_after_is_honoured(
    router: respx.Router, login: Login, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    route = router.get("/v3/forecast").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "1"}),
            httpx.Response(200, json=wt("forecast_CAISO_NORTH_0h.json")),
        ]
    )
    await make(http, fake_time).latest("US-CAL-CISO")
    assert route.call_count == 2
    assert fake_time.sleeps[0] >= 1.0


async def test_429_beyond_the_deadline_gives_up_at_once(
    router: respx.Router, login: Login, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    route = router.get("/v3/forecast").respond(429, headers={"Retry-After": "30"})
    with pytest.raises(ProviderRateLimited) as info:
        await make(http, fake_time).latest("US-CAL-CISO")
    assert route.call_count == 1
    assert info.value.retry_after_s == 30
    assert fake_time.sleeps == []


async def test_429_without_retry_after_after_retries(
    router: respx.Router, login: Login, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    route = router.get("/v3/forecast").respond(429, json={"error": "rate limited"})
    with pytest.raises(ProviderRateLimited) as info:
        await make(http, fake_time, max_retries=1).latest("US-CAL-CISO")
    assert route.call_count == 2
    assert info.value.retry_after_s is None


@pytest.mark.parametrize(
    "error",
    [httpx.ReadTimeout("read timed out"), httpx.ConnectTimeout("connect"), httpx.ConnectError("refused")],
)
async def test_transport_errors_are_retried_then_unavailable(
    router: respx.Router, login: Login, http: httpx.AsyncClient, fake_time: FakeTime, error: Exception
) -> None:
    route = router.get("/v3/forecast").mock(side_effect=error)
    with pytest.raises(ProviderUnavailable) as info:
        await make(http, fake_time, max_retries=2).latest("US-CAL-CISO")
    assert route.call_count == 3
    assert info.value.retryable


async def test_slow_upstream_is_cut_by_the_deadline(
    router: respx.Router, login: Login, http: httpx.AsyncClient
) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, json=wt("forecast_CAISO_NORTH_0h.json"))

    router.get("/v3/forecast").mock(side_effect=slow)
    settings = WattTimeSettings(
        username=USER, password=SecretStr(PASSWORD), request_deadline_s=0.2, read_timeout_s=5, max_retries=3
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ProviderUnavailable):
        await WattTimeProvider(http, settings).latest("US-CAL-CISO")
    assert loop.time() - started < 0.5


@pytest.mark.parametrize(
    "body",
    [
        b"<html>oops</html>",
        b"",
        b"[1, 2]",
        b'{"data": "nope"}',
        b'{"data": [], "meta": {"units": "lbs_co2_per_mwh", "signal_type": "co2_moer"}, "x": 1',
        b'{"data": [{"point_time": "2024-03-05T14:05:00Z", "value": 1}], "meta": {"units": "kg"}}',
    ],
)
async def test_malformed_bodies(
    router: respx.Router, login: Login, http: httpx.AsyncClient, fake_time: FakeTime, body: bytes
) -> None:
    route = router.get("/v3/forecast").respond(200, content=body)
    before = upstream_count("watttime", "forecast", "malformed")
    provider = make(http, fake_time)
    with pytest.raises(MalformedUpstreamResponse):
        await provider.latest("US-CAL-CISO")
    assert route.call_count == 1
    assert upstream_count("watttime", "forecast", "malformed") == before + 1
    assert provider.status.last_success is None


async def test_empty_data_is_no_data(
    router: respx.Router, login: Login, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    body = wt("forecast_CAISO_NORTH_0h.json")
    body["data"] = []
    router.get("/v3/forecast").respond(json=body)
    with pytest.raises(NoDataForZone):
        await make(http, fake_time).latest("US-CAL-CISO")


async def test_breaker_opens_after_failures_and_probes_after_reset(
    router: respx.Router, login: Login, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    route = router.get("/v3/forecast").respond(503)
    breaker = CircuitBreaker("wt-test", failure_threshold=2, reset_s=30, clock=fake_time.monotonic)
    provider = make(http, fake_time, breaker=breaker, max_retries=0)
    for _ in range(2):
        with pytest.raises(ProviderUnavailable):
            await provider.latest("US-CAL-CISO")
    assert state_of(breaker) is CircuitState.OPEN
    calls = route.call_count
    with pytest.raises(ProviderUnavailable, match="circuit open"):
        await provider.latest("US-CAL-CISO")
    assert route.call_count == calls
    fake_time.now += 31
    route.respond(json=wt("forecast_CAISO_NORTH_0h.json"))
    await provider.latest("US-CAL-CISO")
    assert state_of(breaker) is CircuitState.CLOSED


# ----- secrets -----


async def test_password_and_token_never_in_errors_reprs_status_or_logs(
    router: respx.Router,
    login: Login,
    http: httpx.AsyncClient,
    fake_time: FakeTime,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)

    def echo(request: httpx.Request) -> httpx.Response:
        # A careless upstream quoting our credentials back must not leak them through us.
        return httpx.Response(400, json={"error": "bad", "message": f"{bearer(request)} {PASSWORD}"})

    router.get("/v3/forecast").mock(side_effect=echo)
    router.get("/v3/my-access").mock(
        side_effect=[httpx.Response(401), httpx.Response(400, json={"message": "old token eyJ-test-token-1"})]
    )
    router.get("/v3/historical").mock(side_effect=httpx.ConnectError("refused"))
    router.get("/v3/region-from-loc").respond(401)
    provider = make(http, fake_time, max_retries=0)
    texts = [repr(provider), repr(provider._settings), str(provider._settings.model_dump())]
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: provider.latest("US-CAL-CISO"),
        lambda: provider.history("US-CAL-CISO"),
        lambda: provider.region_from_location(42.0, -72.0),
        provider.my_access,  # echoes a token refused earlier: scrubbed too
    ]
    for call in calls:
        with pytest.raises(ProviderError) as info:
            await call()
        texts += [str(info.value), repr(info.value), info.value.message, str(info.value.__cause__)]
        texts.append(str(provider.status.as_dict()))
    texts += [repr(provider), caplog.text]
    assert login.issued  # tokens were handed out, so there was something to leak
    for secret in [PASSWORD, *login.issued]:
        assert all(secret not in text for text in texts), secret


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARBON_OPTIMIZER_WATTTIME__USERNAME", USER)
    monkeypatch.setenv("CARBON_OPTIMIZER_WATTTIME__PASSWORD", PASSWORD)
    monkeypatch.setenv("CARBON_OPTIMIZER_WATTTIME__FORECAST_HORIZON_HOURS", "24")
    settings = Settings(_env_file=None)
    assert settings.watttime.username == USER
    assert settings.watttime.password is not None
    assert settings.watttime.password.get_secret_value() == PASSWORD
    assert settings.watttime.forecast_horizon_hours == 24
    assert PASSWORD not in repr(settings)


async def test_provider_requires_credentials(http: httpx.AsyncClient) -> None:
    with pytest.raises(ValueError, match="username"):
        WattTimeProvider(http, WattTimeSettings(username=USER))


# ----- plan coverage -----


def test_parse_access_flattens_the_plan() -> None:
    granted = parse_access(wt("my_access.json"))
    assert granted == {
        ("co2_moer", "CAISO_NORTH", "v3/forecast"),
        ("co2_moer", "CAISO_NORTH", "v3/historical"),
        ("co2_moer", "PJM_NJ", "v3/historical"),
        ("co2_aoer", "CAISO", "v3/historical"),
    }
    with pytest.raises(MalformedUpstreamResponse):
        parse_access({"regions": []})


async def test_can_access_asks_my_access(
    router: respx.Router, login: Login, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    route = router.get("/v3/my-access").respond(json=wt("my_access.json"))
    provider = make(http, fake_time)
    assert await provider.can_access("US-CAL-CISO", Signal.MARGINAL)
    assert await provider.can_access("US-CAL-CISO", Signal.AVERAGE, "v3/historical")
    assert not await provider.can_access("US-CAL-CISO", Signal.AVERAGE, "v3/forecast")
    assert not await provider.can_access("US-MIDA-PJM", Signal.MARGINAL)  # PJM_DC not in this plan
    calls = route.call_count
    assert not await provider.can_access("DE", Signal.MARGINAL)  # no region: no request
    assert route.call_count == calls
    assert bearer(route.calls.last.request) == login.issued[0]


async def test_adapter_satisfies_the_series_source_protocol(http: httpx.AsyncClient) -> None:
    provider = WattTimeProvider(http, WattTimeSettings(username=USER, password=SecretStr(PASSWORD)))
    assert isinstance(provider, SeriesSource)
