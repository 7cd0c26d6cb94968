"""The typed client: against the real app (ASGI transport), a real uvicorn server, and scripted failures.

Retries and timeouts are checked with httpx.MockTransport (the network boundary): a scripted
sequence of 429/503 answers, with and without Retry-After, and a transport that times out.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from carbon_optimizer.api.response_models import EstimateResponse
from carbon_optimizer.api.schemas import OptimizeRequest, OptimizeResponse
from carbon_optimizer.client import (
    ApiError,
    AsyncCarbonOptimizerClient,
    CarbonOptimizerClient,
    RetryPolicy,
    TransportError,
    parse_retry_after,
)
from tests.callers.conftest import LiveServer

PLAN = {
    "workload": {"duration_minutes": 60, "vcpus": 2, "memory_gib": 4},
    "locations": [{"provider": "aws", "region": "us-east-1"}, {"provider": "aws", "region": "eu-north-1"}],
}
ESTIMATE = {"provider": "aws", "region": "us-east-1", "instance_type": "m5.large", "hours": 2}


# ----- the real app, in process -----


async def test_async_client_against_the_app_through_asgi(asgi_app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=asgi_app)
    async with AsyncCarbonOptimizerClient("http://app", transport=transport) as client:
        plan = await client.optimize(OptimizeRequest.model_validate(PLAN))
        assert isinstance(plan, OptimizeResponse)
        assert plan.best.location.provider == "aws"
        assert plan.best.location.region in {"us-east-1", "eu-north-1"}
        assert plan.options[0] == plan.best
        estimate = await client.estimate(ESTIMATE)
        assert isinstance(estimate, EstimateResponse)
        assert estimate.instance_type == "m5.large"
        assert estimate.cost_usd == pytest.approx(estimate.price_usd_per_hour * 2)
        assert (await client.health())["status"] in {"ok", "degraded"}


async def test_server_side_validation_errors_arrive_as_api_error_with_the_problem(asgi_app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=asgi_app)
    async with AsyncCarbonOptimizerClient("http://app", transport=transport) as client:
        with pytest.raises(ApiError) as caught:
            await client.optimize({**PLAN, "locations": [{"zone": "NOT-A-ZONE"}]})
    assert caught.value.status == 422
    assert caught.value.problem is not None
    assert "NOT-A-ZONE" in (caught.value.problem.detail or "")


def test_requests_are_validated_locally_with_the_servers_models() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(500)

    transport = httpx.MockTransport(handler)
    with CarbonOptimizerClient("http://x", transport=transport) as client, pytest.raises(ValidationError):
        client.optimize(
            {"workload": {"duration_minutes": 0, "vcpus": 1, "memory_gib": 1}, "providers": ["aws"]}
        )
    assert calls == []


# ----- a real server -----


def test_sync_client_against_a_running_server(live_server: LiveServer) -> None:
    with CarbonOptimizerClient(live_server.url, api_key=live_server.api_key, timeout=30.0) as client:
        plan = client.optimize(PLAN)
        assert plan.best.carbon_source.startswith("fallback:")
        assert plan.savings is not None
        assert client.estimate(ESTIMATE).region == "us-east-1"


async def test_async_client_against_a_running_server(live_server: LiveServer) -> None:
    async with AsyncCarbonOptimizerClient(live_server.url, api_key=live_server.api_key) as client:
        plan = await client.optimize(PLAN)
    assert len(plan.options) >= 1


def test_a_missing_api_key_is_a_401_api_error_that_does_not_echo_keys(live_server: LiveServer) -> None:
    with CarbonOptimizerClient(live_server.url, api_key="wrong-key-abcdefghijklmnop") as client:
        with pytest.raises(ApiError) as caught:
            client.optimize(PLAN)
        assert "wrong-key" not in repr(client)
    assert caught.value.status == 401
    assert "wrong-key" not in str(caught.value)


# ----- retries, Retry-After, timeouts -----


def scripted(*responses: httpx.Response | Exception) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = queue.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    return httpx.MockTransport(handler), seen


def ok_health() -> httpx.Response:
    return httpx.Response(200, json={"status": "ok"})


def busy(status: int, retry_after: str | None = None) -> httpx.Response:
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    body = {"type": "about:blank", "title": "busy", "status": status}
    return httpx.Response(status, json=body, headers=headers)


def sync_client(
    transport: httpx.MockTransport, sleeps: list[float], attempts: int = 4
) -> CarbonOptimizerClient:
    retry = RetryPolicy(attempts=attempts, backoff_s=0.5, max_backoff_s=8.0, jitter=lambda: 1.0)
    return CarbonOptimizerClient(
        "http://x", api_key="k-0123456789", transport=transport, retry=retry, sleep=sleeps.append
    )


def test_retries_429_and_503_honouring_retry_after() -> None:
    transport, seen = scripted(busy(429, "3"), busy(503, "1"), ok_health())
    sleeps: list[float] = []
    with sync_client(transport, sleeps) as client:
        assert client.health() == {"status": "ok"}
    assert len(seen) == 3
    assert sleeps == [3.0, 1.0]
    assert all(r.headers["authorization"] == "Bearer k-0123456789" for r in seen)


def test_without_retry_after_backs_off_exponentially_up_to_the_cap() -> None:
    transport, _ = scripted(busy(503), busy(503), busy(503), busy(503), busy(503), ok_health())
    sleeps: list[float] = []
    with sync_client(transport, sleeps, attempts=6) as client:
        client.health()
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_retry_after_as_an_http_date_and_its_cap() -> None:
    now = datetime(2026, 6, 3, 10, 0, tzinfo=UTC)
    assert (
        parse_retry_after(
            format_datetime(datetime(2026, 6, 3, 10, 0, 42, tzinfo=UTC), usegmt=True), lambda: now
        )
        == 42
    )
    assert parse_retry_after("soon") is None
    assert RetryPolicy(max_backoff_s=5).delay(0, 3600) == 5


def test_gives_up_after_the_last_attempt_with_the_last_problem() -> None:
    transport, seen = scripted(busy(503, "0"), busy(503, "0"))
    sleeps: list[float] = []
    with sync_client(transport, sleeps, attempts=2) as client, pytest.raises(ApiError) as caught:
        client.health()
    assert caught.value.status == 503
    assert caught.value.retry_after_s == 0
    assert len(seen) == 2


def test_4xx_is_not_retried() -> None:
    transport, seen = scripted(busy(422))
    with sync_client(transport, []) as client, pytest.raises(ApiError):
        client.health()
    assert len(seen) == 1


def test_timeouts_are_retried_then_raised_as_transport_error() -> None:
    transport, seen = scripted(
        httpx.ReadTimeout("slow"), httpx.ConnectError("refused"), httpx.ReadTimeout("slow")
    )
    sleeps: list[float] = []
    with sync_client(transport, sleeps, attempts=3) as client, pytest.raises(TransportError):
        client.health()
    assert len(seen) == 3
    assert len(sleeps) == 2


async def test_async_retries_use_the_async_sleeper() -> None:
    transport, seen = scripted(busy(429, "2"), ok_health())
    sleeps: list[float] = []

    async def record(seconds: float) -> None:
        sleeps.append(seconds)

    async with AsyncCarbonOptimizerClient("http://x", transport=transport, sleep=record) as client:
        assert await client.health() == {"status": "ok"}
    assert sleeps == [2.0]
    assert len(seen) == 2


def test_the_timeout_reaches_the_wire() -> None:
    seen: list[dict[str, float | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return ok_health()

    transport = httpx.MockTransport(handler)
    with CarbonOptimizerClient("http://x", timeout=httpx.Timeout(7.0, connect=1.5), transport=transport) as c:
        c.health()
    assert seen == [{"connect": 1.5, "read": 7.0, "write": 7.0, "pool": 7.0}]
