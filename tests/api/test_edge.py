"""The one edge layer (issue 12): the order of its checks, what every answer carries, its metrics.

Driven over raw ASGI where the order matters (a body that never arrives shows whether the edge
tried to read it) and through httpx elsewhere; the app is a bare FastAPI app with the production
edge (`tests/api/_edge.py`), so these pin the edge, not the routes.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping, Sequence
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from prometheus_client import REGISTRY

from carbon_optimizer.settings import EdgeSettings, Settings
from tests.api._edge import client_for, tiny_edge

KEY = "test-key-edge-0123456789abcdef"


def make_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {"_env_file": None, "rate_limit": "1000/minute", "api_keys": KEY}
    base.update(overrides)
    return Settings(**base)


def tiny_app(settings: Settings) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        return {"item": item_id}

    @app.post("/v1/echo")
    async def echo(payload: dict[str, str]) -> dict[str, str]:
        return payload

    @app.get("/v1/away")
    async def away() -> RedirectResponse:
        return RedirectResponse("http://evil.example/v1/items/1?x=1")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return tiny_edge(app, settings)


async def call_raw(
    app: FastAPI,
    method: str,
    path: str,
    headers: Sequence[tuple[str, str]] = (),
    *,
    body: bytes | None = b"",
) -> tuple[int, dict[str, str], bytes]:
    """One request over raw ASGI; `body=None` is a client whose body never arrives."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "server": ("test", 80),
        "client": ("127.0.0.1", 40000),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
    }
    delivered = False

    async def receive() -> MutableMapping[str, Any]:
        nonlocal delivered
        if body is None or delivered:
            await asyncio.Event().wait()  # never: a stalled client
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    messages: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        messages.append(message)

    await asyncio.wait_for(app(scope, receive, send), timeout=5)
    start = messages[0]
    got = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    return start["status"], got, b"".join(m.get("body", b"") for m in messages[1:])


async def test_header_bounds_come_before_the_key_and_the_key_before_the_body() -> None:
    app = tiny_app(make_settings(max_body_bytes=1000, edge=EdgeSettings(body_timeout_s=0.2)))
    json_type = ("content-type", "application/json")
    # Declared too large: refused on the headers alone, even without a key.
    status, _, _ = await call_raw(app, "POST", "/v1/echo", [json_type, ("content-length", "5000")])
    assert status == 413
    # No key: 401 at once, though the body never arrives (it is never read), and the connection closes.
    status, headers, _ = await call_raw(app, "POST", "/v1/echo", [json_type], body=None)
    assert status == 401
    assert headers["connection"] == "close"
    # With the key the body is read, and a body that never arrives is a 408 after the timeout.
    status, _, _ = await call_raw(app, "POST", "/v1/echo", [json_type, ("x-api-key", KEY)], body=None)
    assert status == 408
    # Over the limit without a Content-Length: found while reading, after the key.
    big = b'{"a": "' + b"x" * 2000 + b'"}'
    assert (await call_raw(app, "POST", "/v1/echo", [json_type], body=big))[0] == 401
    assert (await call_raw(app, "POST", "/v1/echo", [json_type, ("x-api-key", KEY)], body=big))[0] == 413
    status, _, answer = await call_raw(
        app, "POST", "/v1/echo", [json_type, ("x-api-key", KEY)], body=b'{"a": "b"}'
    )
    assert (status, answer) == (200, b'{"a":"b"}')


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/v1/items/1", [], 401),
        ("GET", "/v1/items/" + "x" * 9000, [], 414),
        ("POST", "/v1/echo", [("content-type", "text/plain"), ("content-length", "2")], 415),
        ("GET", "/v1/items/1", [("x-api-key", KEY)], 200),
    ],
)
async def test_every_answer_carries_the_request_id_and_the_security_headers(
    method: str, path: str, headers: list[tuple[str, str]], status: int
) -> None:
    app = tiny_app(make_settings())
    got, echoed, _ = await call_raw(app, method, path, [*headers, ("x-request-id", "abc-123")])
    assert got == status
    assert echoed["x-request-id"] == "abc-123"
    assert echoed["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in echoed["content-security-policy"]
    _, minted, _ = await call_raw(app, method, path, [*headers, ("x-request-id", "bad id!")])
    assert minted["x-request-id"] != "bad id!"
    assert len(minted["x-request-id"]) == 32


async def test_redirects_stay_on_this_host_and_head_probes_get_no_body() -> None:
    app = tiny_app(make_settings())
    status, headers, _ = await call_raw(app, "GET", "/v1/away", [("x-api-key", KEY)])
    assert (status, headers["location"]) == (307, "/v1/items/1?x=1")
    status, headers, body = await call_raw(app, "HEAD", "/healthz")
    assert (status, body) == (200, b"")
    assert headers["x-request-id"]


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def test_the_instrumentators_series_by_route_template_status_class_and_method() -> None:
    item = {"method": "GET", "status": "2xx", "handler": "/v1/items/{item_id}"}
    denied = {**item, "status": "4xx"}
    untemplated = {"method": "GET", "status": "4xx", "handler": "none"}
    probe = {"method": "GET", "status": "2xx", "handler": "/healthz"}
    echo = {"handler": "/v1/echo"}
    names = [
        ("http_requests_total", item),
        ("http_requests_total", denied),
        ("http_requests_total", untemplated),
        ("http_requests_total", probe),
        ("http_request_duration_seconds_count", {"method": "GET", "handler": "/v1/items/{item_id}"}),
        ("http_request_duration_highr_seconds_count", {}),
        ("http_request_size_bytes_sum", echo),
        ("http_response_size_bytes_sum", echo),
    ]
    before = [sample(name, labels) for name, labels in names]
    body = b'{"key": "value"}'
    async with client_for(tiny_app(make_settings())) as client:
        keyed = {"X-API-Key": KEY}
        assert (await client.get("/v1/items/a", headers=keyed)).status_code == 200
        assert (await client.get("/v1/items/b", headers=keyed)).status_code == 200
        assert (await client.get("/v1/items/c")).status_code == 401
        assert (await client.get("/v1/nothing-here", headers=keyed)).status_code == 404
        assert (await client.get("/healthz")).status_code == 200
        echoed = await client.post(
            "/v1/echo", content=body, headers={**keyed, "Content-Type": "application/json"}
        )
    assert echoed.status_code == 200
    after = [sample(name, labels) for name, labels in names]
    delta = [round(a - b, 6) for a, b in zip(after, before, strict=True)]
    assert delta == [2, 1, 1, 0, 3, 5, len(body), int(echoed.headers["content-length"])]
