"""Electricity Maps adapter against respx mocks built from the documented wire shapes.

Every fixture under fixtures/electricitymaps/ follows docs/data-sources.md (§1.3 for
bodies, §1.4 for errors); carbonIntensity values are the real DE 2023 hourly figures.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import respx
from prometheus_client import REGISTRY
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
from carbon_optimizer.providers.carbon.base import SeriesKind, SeriesRequest
from carbon_optimizer.providers.carbon.electricitymaps import ElectricityMapsProvider
from carbon_optimizer.providers.upstream import CircuitBreaker, CircuitState
from carbon_optimizer.settings import ElectricityMapsSettings

FIXTURES = Path(__file__).parents[1] / "fixtures" / "electricitymaps"
BASE = "https://api.electricitymaps.com/v3"
TOKEN = "em-test-token-5f2b9c"
NOW = datetime(2023, 6, 2, 12, 0, tzinfo=UTC)


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


class FakeTime:
    """Monotonic clock + sleep that advance instantly and record every sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


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
    **overrides: Any,
) -> ElectricityMapsProvider:
    settings = ElectricityMapsSettings(api_key=SecretStr(TOKEN), backoff_base_s=0.1, **overrides)
    return ElectricityMapsProvider(
        http,
        settings,
        breaker=breaker,
        wall_clock=lambda: NOW,
        monotonic=fake_time.monotonic,
        sleep=fake_time.sleep,
        rng=lambda: 0.5,
    )


def state_of(breaker: CircuitBreaker) -> CircuitState:
    """Read through a call so mypy does not narrow the property between assertions."""
    return breaker.state


def upstream_count(endpoint: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "carbon_optimizer_upstream_requests_total",
        {"upstream": "electricitymaps", "endpoint": endpoint, "outcome": outcome},
    )
    return value or 0.0


# ----- endpoints -----


async def test_forecast_parses_documented_shape_and_sends_token(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    route = router.get("/carbon-intensity/forecast").respond(json=load("forecast_DE.json"))
    before = upstream_count("forecast", "ok")

    got = await make(http, fake_time).forecast("DE")

    request = route.calls.last.request
    assert request.headers["auth-token"] == TOKEN
    assert request.url.params["zone"] == "DE"
    assert request.url.params["horizonHours"] == "72"  # settings default
    assert request.url.params["emissionFactorType"] == "lifecycle"
    series = got.series
    rows = load("forecast_DE.json")["forecast"]
    assert series.start == NOW
    assert series.step == timedelta(hours=1)
    assert len(series.values) == 25
    assert series.values.tolist() == [float(r["carbonIntensity"]) for r in rows]
    assert [r.label for r in series.runs] == ["electricitymaps:forecast"]
    assert got.issued_at == datetime(2023, 6, 2, 12, 5, 24, 685000, tzinfo=UTC)
    assert got.fetched_at == NOW
    assert not got.stale
    assert upstream_count("forecast", "ok") == before + 1


async def test_forecast_horizon_from_settings_and_72h_body(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    route = router.get("/carbon-intensity/forecast").respond(json=load("forecast_DE_72h.json"))
    got = await make(http, fake_time, forecast_horizon_hours=24).forecast("DE")
    assert route.calls.last.request.url.params["horizonHours"] == "24"
    assert len(got.series.values) == 73
    await make(http, fake_time).forecast("DE", horizon_hours=6)
    assert route.calls.last.request.url.params["horizonHours"] == "6"


async def test_history_v3_and_v4_envelopes_agree(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    router.get("/carbon-intensity/history").mock(
        side_effect=[
            httpx.Response(200, json=load("history_DE.json")),
            httpx.Response(200, json=load("history_DE_v4.json")),
        ]
    )
    provider = make(http, fake_time)
    v3 = await provider.history("DE")
    v4 = await provider.history("DE")
    assert len(v3.series.values) == 24
    assert v3.series.start == NOW - timedelta(hours=23)
    assert v3.series.runs[0].label == "electricitymaps:history"
    np.testing.assert_array_equal(v3.series.values, v4.series.values)
    assert v3.issued_at == datetime(2023, 6, 2, 11, 48, 54, 12000, tzinfo=UTC)
    assert v4.issued_at is None  # v4 rows without updatedAt are accepted


async def test_history_null_intensity_becomes_nan(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    router.get("/carbon-intensity/history").respond(json=load("history_DE_with_nulls.json"))
    got = await make(http, fake_time).history("DE")
    assert np.isnan(got.series.values[[5, 6]]).all()
    assert np.isfinite(np.delete(got.series.values, [5, 6])).all()


@pytest.mark.parametrize("fixture", ["latest_DE.json", "latest_DE_v4.json"])
async def test_latest_one_point(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime, fixture: str
) -> None:
    router.get("/carbon-intensity/latest").respond(json=load(fixture))
    got = await make(http, fake_time).latest("DE")
    assert got.series.values.tolist() == [float(load(fixture)["carbonIntensity"])]
    assert got.series.start == NOW
    assert got.series.runs[0].label == "electricitymaps:latest"


async def test_past_range_single_chunk(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    route = router.get("/carbon-intensity/past-range").respond(json=load("past_range_DE.json"))
    start = datetime(2023, 5, 21, 21, tzinfo=UTC)
    got = await make(http, fake_time).past_range("DE", start, start + timedelta(hours=6))
    assert route.call_count == 1
    params = route.calls.last.request.url.params
    assert (params["start"], params["end"]) == ("2023-05-21T21:00:00Z", "2023-05-22T03:00:00Z")
    assert len(got.series.values) == 6
    assert got.series.runs[0].label == "electricitymaps:history"


async def test_past_range_is_chunked_to_ten_days(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        start = datetime.fromisoformat(request.url.params["start"])
        end = datetime.fromisoformat(request.url.params["end"])
        if end - start > timedelta(days=10):
            return httpx.Response(400, json={"error": "range too long"})
        hours = int((end - start) / timedelta(hours=1))
        rows = [
            {"zone": "DE", "carbonIntensity": 100 + i, "datetime": (start + timedelta(hours=i)).isoformat()}
            for i in range(hours)
        ]
        return httpx.Response(200, json={"zone": "DE", "data": rows})

    route = router.get("/carbon-intensity/past-range").mock(side_effect=answer)
    start = datetime(2023, 3, 1, tzinfo=UTC)
    end = start + timedelta(days=25)
    got = await make(http, fake_time).past_range("DE", start, end)
    spans = sorted(
        (
            datetime.fromisoformat(c.request.url.params["start"]),
            datetime.fromisoformat(c.request.url.params["end"]),
        )
        for c in route.calls
    )
    assert len(spans) == 3
    assert spans[0][0] == start
    assert spans[-1][1] == end
    assert all(b - a <= timedelta(days=10) for a, b in spans)
    assert all(spans[i][1] == spans[i + 1][0] for i in range(2))
    assert len(got.series.values) == 25 * 24
    assert not np.isnan(got.series.values).any()


async def test_fetch_dispatches_by_kind(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    router.get("/carbon-intensity/latest").respond(json=load("latest_DE.json"))
    got = await make(http, fake_time).fetch(SeriesRequest(SeriesKind.LATEST, "DE"))
    assert got.series.zone == "DE"


async def test_zones_access_check(router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime) -> None:
    route = router.get("/zones").respond(json=load("zones_with_token.json"))
    provider = make(http, fake_time)
    access = await provider.zones()
    assert route.calls.last.request.headers["auth-token"] == TOKEN
    assert "emissionFactorType" not in route.calls.last.request.url.params
    assert access["PL"] == frozenset({"*"})
    assert "updated-since" in access["PT"]
    assert await provider.can_access("PL", "carbon-intensity/forecast")
    assert await provider.can_access("DE", "carbon-intensity/forecast")
    assert not await provider.can_access("PT", "carbon-intensity/forecast")
    assert not await provider.can_access("XX", "carbon-intensity/latest")


async def test_zones_without_access_lists(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    router.get("/zones").respond(json=load("zones_no_token.json"))
    access = await make(http, fake_time).zones()
    assert access["DE"] == frozenset()


async def test_zones_v4_list_shape(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    router.get("/zones").respond(json=[{"zoneKey": "DE", "displayName": "Germany", "access": ["*"]}])
    assert (await make(http, fake_time).zones()) == {"DE": frozenset({"*"})}


# ----- errors (notes §4) -----


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (401, "error_401_missing_token.json", ProviderAuthError),
        (401, "error_401_invalid_token.json", ProviderAuthError),
        (401, "error_401_invalid_token_short.json", ProviderAuthError),
        (401, "error_401_not_in_plan.json", ProviderNotEntitled),
        (404, "error_404_no_recent_data.json", NoDataForZone),
        (400, "error_400_bad_parameter.json", NoDataForZone),
    ],
)
async def test_definite_errors_are_mapped_and_not_retried(
    router: respx.Router,
    http: httpx.AsyncClient,
    fake_time: FakeTime,
    status: int,
    body: str,
    expected: type[ProviderError],
) -> None:
    route = router.get("/carbon-intensity/forecast").respond(status, json=load(body))
    provider = make(http, fake_time)
    with pytest.raises(expected) as info:
        await provider.forecast("DE")
    assert type(info.value) is expected
    assert route.call_count == 1
    assert not info.value.retryable
    assert state_of(provider.breaker) is CircuitState.CLOSED  # the upstream is up, it said no
    assert provider.status.last_error is not None


async def test_not_in_plan_message_keeps_upstream_words(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    router.get("/carbon-intensity/forecast").respond(401, json=load("error_401_not_in_plan.json"))
    with pytest.raises(ProviderNotEntitled, match="Request unauthorized for zoneKey=PT"):
        await make(http, fake_time).forecast("PT")


async def test_403_plain_text_is_auth_error(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    router.get("/carbon-intensity/latest").respond(403, text="Access denied")
    with pytest.raises(ProviderAuthError, match="access denied"):
        await make(http, fake_time).latest("DE")


async def test_500_legacy_body_is_retried_then_unavailable(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    route = router.get("/carbon-intensity/forecast").respond(500, json=load("error_500_legacy.json"))
    with pytest.raises(ProviderUnavailable, match="HTTP 500"):
        await make(http, fake_time, max_retries=2).forecast("DE")
    assert route.call_count == 3
    # full jitter with rng=0.5: 0.5 × 0.1, 0.5 × 0.2
    assert fake_time.sleeps == pytest.approx([0.05, 0.1])


async def test_5xx_then_success(router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime) -> None:
    route = router.get("/carbon-intensity/forecast").mock(
        side_effect=[httpx.Response(503, text="busy"), httpx.Response(200, json=load("forecast_DE.json"))]
    )
    got = await make(http, fake_time).forecast("DE")
    assert route.call_count == 2
    assert len(got.series.values) == 25


async def test_429_without_retry_after_is_rate_limited_after_retries(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    route = router.get("/carbon-intensity/forecast").respond(429)
    with pytest.raises(ProviderRateLimited) as info:
        await make(http, fake_time, max_retries=1).forecast("DE")
    assert route.call_count == 2
    assert info.value.retry_after_s is None


async def test_429_retry_after_is_honoured(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    route = router.get("/carbon-intensity/forecast").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "1"}),
            httpx.Response(200, json=load("forecast_DE.json")),
        ]
    )
    await make(http, fake_time, request_deadline_s=3.0).forecast("DE")
    assert route.call_count == 2
    assert fake_time.sleeps[0] >= 1.0


async def test_429_retry_after_beyond_deadline_gives_up_at_once(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    route = router.get("/carbon-intensity/forecast").respond(429, headers={"Retry-After": "30"})
    with pytest.raises(ProviderRateLimited) as info:
        await make(http, fake_time, request_deadline_s=3.0).forecast("DE")
    assert route.call_count == 1
    assert fake_time.sleeps == []
    assert info.value.retry_after_s == 30


@pytest.mark.parametrize(
    "body",
    [b"<html>oops</html>", b'{"zone": "DE", "forecast": "nope"}', b'{"zone": "DE"}', b"[1, 2]"],
)
async def test_malformed_bodies(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime, body: bytes
) -> None:
    route = router.get("/carbon-intensity/forecast").respond(200, content=body)
    before = upstream_count("forecast", "malformed")
    provider = make(http, fake_time)
    with pytest.raises(MalformedUpstreamResponse):
        await provider.forecast("DE")
    assert route.call_count == 1
    assert upstream_count("forecast", "malformed") == before + 1
    assert provider.status.last_success is None  # a body we cannot read is a failure, not a success
    assert (provider.status.last_error or "").startswith("MalformedUpstreamResponse")


async def test_non_numeric_intensity_is_malformed(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    body = {"zone": "DE", "forecast": [{"carbonIntensity": "high", "datetime": "2023-06-02T12:00:00.000Z"}]}
    router.get("/carbon-intensity/forecast").respond(json=body)
    with pytest.raises(MalformedUpstreamResponse):
        await make(http, fake_time).forecast("DE")


async def test_empty_forecast_is_no_data(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    router.get("/carbon-intensity/forecast").respond(json={"zone": "DE", "forecast": []})
    with pytest.raises(NoDataForZone):
        await make(http, fake_time).forecast("DE")


@pytest.mark.parametrize(
    "error",
    [httpx.ReadTimeout("read timed out"), httpx.ConnectTimeout("connect"), httpx.ConnectError("refused")],
)
async def test_transport_errors_are_retried_then_unavailable(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime, error: Exception
) -> None:
    route = router.get("/carbon-intensity/forecast").mock(side_effect=error)
    with pytest.raises(ProviderUnavailable) as info:
        await make(http, fake_time, max_retries=2).forecast("DE")
    assert route.call_count == 3
    assert info.value.retryable


async def test_slow_upstream_is_cut_by_the_deadline(router: respx.Router, http: httpx.AsyncClient) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, json=load("forecast_DE.json"))

    router.get("/carbon-intensity/forecast").mock(side_effect=slow)
    settings = ElectricityMapsSettings(
        api_key=SecretStr(TOKEN), request_deadline_s=0.2, read_timeout_s=5, max_retries=3
    )
    provider = ElectricityMapsProvider(http, settings)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ProviderUnavailable):
        await provider.forecast("DE")
    assert loop.time() - started < 0.4


async def test_unknown_zone_key_never_reaches_upstream(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    route = router.get("/carbon-intensity/forecast").respond(json=load("forecast_DE.json"))
    with pytest.raises(UnknownZone):
        await make(http, fake_time).forecast("DE&zone=FR")
    assert route.call_count == 0


# ----- circuit breaker -----


async def test_breaker_opens_after_failures_and_probes_after_reset(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime
) -> None:
    route = router.get("/carbon-intensity/forecast").respond(503)
    breaker = CircuitBreaker("em-test", failure_threshold=2, reset_s=30, clock=fake_time.monotonic)
    provider = make(http, fake_time, breaker=breaker, max_retries=0)
    for _ in range(2):
        with pytest.raises(ProviderUnavailable):
            await provider.forecast("DE")
    assert state_of(breaker) is CircuitState.OPEN
    calls = route.call_count
    with pytest.raises(ProviderUnavailable, match="circuit open"):
        await provider.forecast("DE")
    assert route.call_count == calls  # no request while open

    fake_time.now += 31
    assert state_of(breaker) is CircuitState.HALF_OPEN
    route.respond(json=load("forecast_DE.json"))
    await provider.forecast("DE")
    assert state_of(breaker) is CircuitState.CLOSED
    gauge = REGISTRY.get_sample_value("carbon_optimizer_circuit_state", {"upstream": "em-test"})
    assert gauge == 0


# ----- secrets -----


async def test_token_never_in_errors_reprs_or_logs(
    router: respx.Router, http: httpx.AsyncClient, fake_time: FakeTime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    router.get("/carbon-intensity/forecast").respond(401, json=load("error_401_invalid_token.json"))
    router.get("/carbon-intensity/history").mock(side_effect=httpx.ConnectError("refused"))
    provider = make(http, fake_time, max_retries=0)
    texts = [repr(provider), str(provider.status.as_dict())]
    for call in (provider.forecast, provider.history):
        with pytest.raises(ProviderError) as info:
            await call("DE")
        texts += [str(info.value), repr(info.value), info.value.message, str(info.value.__cause__)]
    texts.append(str(provider.status.as_dict()))
    texts.append(caplog.text)
    assert all(TOKEN not in text for text in texts)


async def test_provider_requires_a_key(http: httpx.AsyncClient) -> None:
    with pytest.raises(ValueError, match="API key"):
        ElectricityMapsProvider(http, ElectricityMapsSettings())
