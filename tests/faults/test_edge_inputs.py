"""Hostile inputs at the edge, in process (issue 11 items 3, 7, 11): each once was a 5xx or a leak.

Uses `create_app` itself (bundled data, fixed clock), so the whole middleware list is exercised.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import pytest

from carbon_optimizer.settings import Settings
from tests.api.conftest import make_client

KEY = "faults-key-0123456789abcdef0123"


def body(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "workload": {"duration_minutes": 120, "vcpus": 4, "memory_gib": 8},
        "locations": [{"zone": "DE"}, {"zone": "FR"}],
        "objective": {"mode": "carbon"},
    }
    base.update(overrides)
    return base


CALENDAR_ENDS = [
    (
        "earliest_start at the end of year 9999",
        body(window={"earliest_start": "9999-12-31T23:00:00Z"}),
        "window",
    ),
    ("deadline at the end of year 9999", body(window={"deadline": "9999-12-31T23:59:00Z"}), "window"),
    (
        "earliest_start before year 1 in UTC",
        body(window={"earliest_start": "0001-01-01T00:00:00+14:00"}),
        "window",
    ),
    ("earliest_start in year 1", body(window={"earliest_start": "0001-01-01T00:00:00Z"}), "window"),
    (
        "baseline start at the end of year 9999",
        body(baseline={"location": {"zone": "DE"}, "start": "9999-12-31T23:30:00Z"}),
        "baseline",
    ),
]


@pytest.mark.parametrize(("case", "payload", "field"), CALENDAR_ENDS, ids=[c[0] for c in CALENDAR_ENDS])
async def test_calendar_end_dates_are_422_naming_the_field(
    case: str, payload: dict[str, Any], field: str
) -> None:
    async with make_client() as client:
        response = await client.post("/v1/optimize", json=payload)
        # The same keep-alive client keeps working afterwards (an escaped OverflowError reset it).
        after = await client.get("/healthz")
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    locs = [err["loc"] for err in response.json()["errors"]]
    assert any(field in loc for loc in locs), locs
    assert after.status_code == 200


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("start=9999-12-31T00:00:00Z&end=9999-12-31T23:00:00Z", "start"),
        ("end=0001-01-01T00:00:00%2B14:00", "end"),
    ],
)
async def test_zone_series_at_calendar_ends_is_422(query: str, field: str) -> None:
    async with make_client() as client:
        response = await client.get(f"/v1/zones/DE/carbon-intensity?{query}")
    assert response.status_code == 422, response.text
    assert any(field in err["loc"] for err in response.json()["errors"])


async def test_estimate_start_at_the_calendar_end_is_422() -> None:
    payload = {
        "provider": "aws",
        "region": "us-east-1",
        "instance_type": "m5.large",
        "hours": 8000,
        "start": "9999-12-31T00:00:00Z",
    }
    async with make_client() as client:
        response = await client.post("/v1/estimate", json=payload)
    assert response.status_code == 422
    assert any("start" in err["loc"] for err in response.json()["errors"])


async def test_head_healthz_is_200() -> None:
    async with make_client() as client:
        response = await client.head("/healthz")
    assert response.status_code == 200
    assert response.content == b""


async def test_trailing_slash_redirect_does_not_reflect_the_host_header() -> None:
    async with make_client() as client:
        response = await client.get("/v1/regions/", headers={"host": "evil.example"})
    assert response.status_code in (307, 308)
    location = response.headers["location"]
    assert "evil.example" not in location
    assert location.startswith("/v1/regions")


async def test_oversized_url_and_headers_are_414_and_431_problems() -> None:
    async with make_client() as client:
        long_url = await client.get("/v1/regions?x=" + "a" * 9000)
        big_headers = await client.get("/v1/regions", headers={f"x-h{i}": "v" * 1000 for i in range(20)})
    assert long_url.status_code == 414
    assert big_headers.status_code == 431
    for response in (long_url, big_headers):
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == response.status_code


async def test_refused_cors_preflight_is_a_problem() -> None:
    settings = Settings(_env_file=None, cors_origins="https://app.example")
    async with make_client(settings) as client:
        refused = await client.options(
            "/v1/optimize",
            headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
        )
        allowed = await client.options(
            "/v1/optimize",
            headers={"origin": "https://app.example", "access-control-request-method": "POST"},
        )
    assert refused.status_code == 400
    assert refused.headers["content-type"] == "application/problem+json"
    assert "Disallowed CORS origin" in refused.json()["detail"]
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"


async def test_unauthenticated_body_is_never_read() -> None:
    # An ASGI-level probe: a 401 must go out before a single body chunk is pulled.
    from carbon_optimizer.app import create_app

    app = create_app(Settings(_env_file=None, api_keys=KEY))
    pulled = 0
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"{" * 1000, "more_body": True}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/optimize",
        "raw_path": b"/v1/optimize",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"200000")],
        "client": ("203.0.113.5", 1234),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 401
    assert pulled == 0


async def test_slow_body_is_408_after_the_body_deadline() -> None:
    import asyncio

    from carbon_optimizer.app import create_app

    app = create_app(Settings(_env_file=None, api_keys=KEY, edge={"body_timeout_s": 0.2}))
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(0.15)  # a trickle: each chunk in time, the whole body not
        return {"type": "http.request", "body": b" ", "more_body": True}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/optimize",
        "raw_path": b"/v1/optimize",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"x-api-key", KEY.encode())],
        "client": ("203.0.113.5", 1234),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    await asyncio.wait_for(app(scope, receive, send), timeout=5)
    assert sent[0]["status"] == 408


async def test_production_closes_docs_unless_explicitly_enabled() -> None:
    async with make_client(Settings(_env_file=None, environment="production")) as client:
        closed = [(await client.get(p)).status_code for p in ("/docs", "/openapi.json")]
    async with make_client(Settings(_env_file=None, environment="production", docs_enabled=True)) as client:
        opened = [(await client.get(p)).status_code for p in ("/docs", "/openapi.json")]
    assert closed == [404, 404]
    assert opened == [200, 200]
