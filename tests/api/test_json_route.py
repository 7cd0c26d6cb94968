"""/v1/optimize's fast path (api/json_route.py) answers exactly as FastAPI's own handler did.

The fast path validates the body with pydantic-core from the bytes; FastAPI decodes it with
`json.loads` and validates the Python objects. A body the fast path accepts must be one FastAPI
accepts, as the same model; everything else goes to FastAPI's handler, so its answers (the 422
naming the field, a body only `json.loads` can read) are FastAPI's by construction.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, MutableMapping
from typing import Any

import httpx
import opentelemetry.trace
import pytest
from asgi_lifespan import LifespanManager
from fastapi import Depends, FastAPI
from fastapi.dependencies.utils import solve_dependencies
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from pydantic import BaseModel, ValidationError
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.responses import Response

from carbon_optimizer.api.json_route import DirectRoutes, JsonBodyRoute
from carbon_optimizer.api.schemas import OptimizeRequest
from carbon_optimizer.app import AppOverrides, create_app
from carbon_optimizer.settings import Settings
from tests.fakes import fixed_clock

VALID: dict[str, Any] = {
    "workload": {"duration_minutes": 120, "vcpus": 4, "memory_gib": 8},
    "locations": [{"zone": "DE"}, {"provider": "aws", "region": "us-east-1"}],
    "window": {"earliest_start": "2026-06-03T10:00:00Z", "deadline": "2026-06-04T10:00:00Z"},
    "objective": {"mode": "carbon"},
}
JSON = {"content-type": "application/json", "cache-control": "no-cache", "x-request-id": "rid-1"}
PLUS_JSON = {**JSON, "content-type": "application/vnd.carbon+json"}


def _route() -> JsonBodyRoute:
    app = create_app(Settings(_env_file=None))
    found = [r for r in app.routes if isinstance(r, JsonBodyRoute) and r.path == "/v1/optimize"]
    assert len(found) == 1
    return found[0]


ROUTE = _route()


def framework(raw: bytes) -> BaseModel | None:
    """What FastAPI's handler makes of `raw`: `json.loads`, then the route's own body field."""
    try:
        decoded = json.loads(raw)
    except ValueError:
        return None
    assert ROUTE.body_field is not None
    value, errors = ROUTE.body_field.validate(decoded, {}, loc=("body",))
    return None if errors else value


def fast(raw: bytes) -> BaseModel | None:
    try:
        return OptimizeRequest.model_validate_json(raw)
    except ValidationError:
        return None


def shape(value: Any) -> Any:
    """A model's repr-exact content plus which fields were set, at every level (== ignores both)."""
    if isinstance(value, BaseModel):
        return (
            type(value).__name__,
            sorted(value.model_fields_set),
            {name: shape(getattr(value, name)) for name in type(value).model_fields},
        )
    if isinstance(value, list):
        return [shape(v) for v in value]
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    return (type(value).__name__, repr(value))


# Raw JSON fragments: valid values, wrong types, and what only one decoder might read alike.
_TRICKY = [
    "null", "true", "false", "0", "-0", "1", "3", "60", "60.0", "1e1", "1.5", "-1", "64", "65",
    "4096", "10080", "10081", "2016", "123456789012345678901234567890", "1e999", "NaN", "Infinity",
    "-Infinity", '"60"', '"3"', '" 3 "', '"true"', '"1"', '""', '" "', '"DE"', '" de "', '"aws"',
    '"us-east-1"', '"\\u0044E"', '"D\\u00c9"', '"\\ud800"', '"carbon"', '"2026-06-03T10:00:00Z"',
    '"2026-06-03T10:00:00"', '"2026-06-03 10:00:00+02:00"', '"1780000000"', "1780000000",
    '"2026-06-03"', "[]", "{}", '["aws"]', '{"zone": "DE"}',
]  # fmt: skip
TRICKY = st.sampled_from(_TRICKY)


def _chance(in_20: int) -> st.SearchStrategy[bool]:
    return st.sampled_from([True] * in_20 + [False] * (20 - in_20))


def _value(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Mostly a valid value, rarely a tricky one: a body should differ from a valid one in one place."""
    return _chance(19).flatmap(lambda ok: valid if ok else TRICKY)


def _obj(fields: dict[str, st.SearchStrategy[str]], required: tuple[str, ...] = ()) -> st.SearchStrategy[str]:
    """A JSON object of `required` (mostly) and some other `fields`; rarely an unknown or a repeated key."""

    def pick(draw: Any) -> list[tuple[str, st.SearchStrategy[str]]]:
        keys = [k for k in fields if draw(_chance(19 if k in required else 6))]
        items = [(k, _value(fields[k])) for k in keys]
        if keys and draw(_chance(1)):
            repeated = draw(st.sampled_from(keys))
            items.append((repeated, _value(fields[repeated])))
        if draw(_chance(1)):
            items.insert(draw(st.integers(0, len(items))), ("unknown", TRICKY))
        return items

    @st.composite
    def build(draw: Any) -> str:
        items = pick(draw)
        return "{" + ", ".join(f"{json.dumps(k)}: {draw(v)}" for k, v in items) + "}"

    return build()


def _list(item: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.lists(item, min_size=1, max_size=3).map(lambda items: "[" + ", ".join(items) + "]")


def _of(*values: str) -> st.SearchStrategy[str]:
    return st.sampled_from(values)


_INT = _of("1", "8", "32", "120")
_NUM = _of("1", "8", "32", "120", "0.5", "60.0")
_WHEN = _of('"2026-06-03T10:00:00Z"', '"2026-06-04T10:00:00+02:00"', '"2026-06-03T10:00:00.5Z"')
_PRICE = _of("0", "0.5", "12")
_LOCATION = st.one_of(
    _obj({"zone": _of('"DE"', '"FR"', '" DE "'), "price_usd_per_hour": _PRICE}, required=("zone",)),
    _obj(
        {
            "provider": _of('"aws"', '"gcp"'),
            "region": _of('"us-east-1"', '"europe-west1"'),
            "price_usd_per_hour": _PRICE,
        },
        required=("provider", "region"),
    ),
)
_FIELDS: dict[str, st.SearchStrategy[str]] = {
    "workload": _obj(
        {
            "duration_minutes": _INT,
            "vcpus": _INT,
            "memory_gib": _NUM,
            "gpu": _obj({"count": _of("1", "2"), "model": _of('"A100"', '"T4"')}),
            "instance_types": _obj({"aws": _of('"m5.large"'), "gcp": _of('" n2-standard-8 "')}),
            "power_watts": _NUM,
            "price_type": _of('"spot"', '"on_demand"'),
            "cpu_architecture": _of('"arm64"', '"any"', '"x86_64"'),
            "allow_burstable": _of("true", "false"),
        },
        required=("duration_minutes", "vcpus", "memory_gib"),
    ),
    "window": _obj({"earliest_start": _WHEN, "deadline": _WHEN}),
    "objective": _obj(
        {
            "mode": _of('"carbon"', '"cost"', '"balanced"', '"carbon_within_budget"'),
            "carbon_weight": _of("0", "0.3", "1"),
            "max_cost_increase_pct": _NUM,
            "carbon_price_usd_per_tonne": _NUM,
            "risk": _of('"p50"'),
        }
    ),
    "time_step_minutes": _of("5", "15", "30", "60"),
    "max_results": _of("1", "5", "100"),
    "max_per_location": _of("null", "1", "2016"),
    "baseline": _obj({"location": _LOCATION, "start": _WHEN}, required=("location",)),
    "signal": _of('"average"', '"marginal"'),  # marginal: validated here, refused later
    "record": _of("true", "false", "null"),
}
REQUEST = st.one_of(
    _obj({**_FIELDS, "locations": _list(_LOCATION)}, required=("workload", "locations")),
    _obj(
        {**_FIELDS, "providers": _list(_of('"aws"', '"azure"', '"lambda"'))},
        required=("workload", "providers"),
    ),
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=REQUEST)
def test_the_fast_path_accepts_only_what_fastapi_accepts_as_the_same_model(body: str) -> None:
    raw = body.encode()
    accepted = fast(raw)
    if accepted is not None:
        expected = framework(raw)
        assert expected is not None, body
        assert shape(accepted) == shape(expected), body


TRICKY_VALID = [
    {**VALID, "max_results": 3, "time_step_minutes": 60.0},
    {**VALID, "max_results": "3", "record": "true"},
    {**VALID, "max_results": 1e1, "record": 1},
    {**VALID, "locations": [{"zone": " DE "}, {"zone": "D\u00c9"}]},
    {**VALID, "window": {"earliest_start": 1780000000, "deadline": "1780086400"}},
    {**VALID, "window": {"earliest_start": "2026-06-03 10:00:00+02:00"}},
    {**VALID, "workload": {"duration_minutes": "120", "vcpus": 4.0, "memory_gib": "8.5"}},
    {**VALID, "locations": None, "providers": ["aws"]},
]


@pytest.mark.parametrize("body", TRICKY_VALID, ids=range(len(TRICKY_VALID)))
def test_bodies_both_paths_accept_make_the_same_model(body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    accepted = fast(raw)
    assert accepted is not None
    assert shape(accepted) == shape(framework(raw))


def test_a_duplicate_key_means_the_last_value_on_both_paths() -> None:
    raw = json.dumps(VALID)[:-1].encode() + b', "max_results": 3, "max_results": 4}'
    accepted = fast(raw)
    assert isinstance(accepted, OptimizeRequest)
    assert accepted.max_results == 4
    assert shape(accepted) == shape(framework(raw))


# --- through the app -------------------------------------------------------------------------


async def _client(**settings_kw: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(_env_file=None, **settings_kw), AppOverrides(clock=fixed_clock()))
    async with (
        LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://test") as c,
    ):
        yield c


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client():
        yield c


@pytest.fixture
def framework_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts FastAPI's dependency solving (its handler's validation step) per request."""
    calls: list[int] = []
    original = solve_dependencies

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return await original(*args, **kwargs)

    monkeypatch.setattr("fastapi.routing.solve_dependencies", counted)
    return calls


def _same_answer(a: httpx.Response, b: httpx.Response) -> None:
    assert (a.status_code, a.content) == (b.status_code, b.content)
    assert dict(a.headers) == dict(b.headers)


async def test_a_valid_json_body_skips_fastapis_handler_and_answers_as_it_does(
    client: httpx.AsyncClient, framework_calls: list[int]
) -> None:
    raw = json.dumps(VALID).encode()
    fast_answer = await client.post("/v1/optimize", content=raw, headers=JSON)
    assert framework_calls == []
    slow_answer = await client.post("/v1/optimize", content=raw, headers=PLUS_JSON)
    assert framework_calls == [1]
    assert fast_answer.status_code == 200
    assert fast_answer.headers["x-result-cache"] == "bypass"
    _same_answer(fast_answer, slow_answer)


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "APPLICATION/JSON"])
async def test_json_with_parameters_or_upper_case_takes_the_fast_path(
    client: httpx.AsyncClient, framework_calls: list[int], content_type: str
) -> None:
    response = await client.post(
        "/v1/optimize", content=json.dumps(VALID).encode(), headers={**JSON, "content-type": content_type}
    )
    assert response.status_code == 200
    assert framework_calls == []


async def test_invalid_bodies_get_fastapis_own_422(
    client: httpx.AsyncClient, framework_calls: list[int]
) -> None:
    body = {**VALID, "workload": {**VALID["workload"], "vcpus": 0}}
    response = await client.post("/v1/optimize", content=json.dumps(body).encode(), headers=JSON)
    assert response.status_code == 422
    assert framework_calls == [1]
    assert [e["loc"] for e in response.json()["errors"]] == [["body", "workload", "vcpus"]]
    cut = b'{"workload": '
    broken = await client.post("/v1/optimize", content=cut, headers=JSON)
    assert broken.status_code == 422
    assert broken.json()["errors"][0]["msg"] == "JSON decode error"  # FastAPI's wording, not pydantic's
    assert broken.json()["errors"][0]["loc"] == ["body", len(cut)]
    assert (
        broken.json()["detail"] == f"Request body is not valid JSON: Expecting value at character {len(cut)}"
    )


@pytest.mark.parametrize(
    "encode",
    [lambda text: b"\xef\xbb\xbf" + text.encode(), lambda text: text.encode("utf-16")],
    ids=["utf-8 BOM", "utf-16"],
)
async def test_a_body_only_json_loads_can_read_is_still_answered(
    client: httpx.AsyncClient, framework_calls: list[int], encode: Callable[[str], bytes]
) -> None:
    text = json.dumps(VALID)
    plain = await client.post("/v1/optimize", content=text.encode(), headers=JSON)
    other = await client.post("/v1/optimize", content=encode(text), headers=JSON)
    assert framework_calls == [1]
    assert other.status_code == 200, other.text
    assert other.json()["options"] == plain.json()["options"]


async def test_errors_raised_by_the_answer_are_the_same_problems_on_both_paths(
    client: httpx.AsyncClient,
) -> None:
    for body in (
        {**VALID, "locations": [{"zone": "NOWHERE"}]},  # InvalidInput: unknown location
        {**VALID, "workload": {**VALID["workload"], "duration_minutes": 10080}},  # nothing feasible
    ):
        raw = json.dumps(body).encode()
        fast_answer = await client.post("/v1/optimize", content=raw, headers=JSON)
        slow_answer = await client.post("/v1/optimize", content=raw, headers=PLUS_JSON)
        assert fast_answer.status_code == 422, fast_answer.text
        assert fast_answer.headers["content-type"] == "application/problem+json"
        _same_answer(fast_answer, slow_answer)


async def test_the_unversioned_alias_takes_the_fast_path_too(
    client: httpx.AsyncClient, framework_calls: list[int]
) -> None:
    response = await client.post("/optimize", content=json.dumps(VALID).encode(), headers=JSON)
    assert response.status_code == 200
    assert framework_calls == []


async def test_other_methods_are_still_fastapis_405(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/optimize")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


async def test_without_the_edge_a_body_in_chunks_and_a_disconnect_are_read_as_fastapi_reads_them() -> None:
    """The route reads the body itself, so it must work behind any server, not only the edge's replay."""
    app = create_app(Settings(_env_file=None), AppOverrides(clock=fixed_clock()))
    app.user_middleware[:] = []
    raw = json.dumps(VALID).encode()

    async def call(messages: list[dict[str, Any]]) -> tuple[int, bytes]:
        sent: list[MutableMapping[str, Any]] = []
        pending = list(messages)

        async def receive() -> dict[str, Any]:
            return pending.pop(0) if pending else {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": "/v1/optimize", "raw_path": b"/v1/optimize", "query_string": b"",
            "root_path": "", "headers": [(b"content-type", b"application/json")],
            "client": ("127.0.0.1", 1), "server": ("test", 80),
        }  # fmt: skip
        await manager.app(scope, receive, send)
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

    async with LifespanManager(app) as manager:
        half = len(raw) // 2
        chunked = [
            {"type": "http.request", "body": raw[:half], "more_body": True},
            {"type": "http.request", "body": raw[half:], "more_body": False},
        ]
        status, content = await call(chunked)
        assert status == 200, content
        whole_status, whole = await call([{"type": "http.request", "body": raw, "more_body": False}])
        assert whole_status == 200
        assert json.loads(content)["options"] == json.loads(whole)["options"]
        # The client went away mid-body: what FastAPI's handler answers (its 400, our 422 problem).
        status, content = await call([{"type": "http.request", "body": raw[:half], "more_body": True}])
        assert status == 422, content


# --- the edge's direct call (DirectRoutes) -----------------------------------------------------


@pytest.fixture
def inner_layer_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Paths that went through Starlette's ExceptionMiddleware (FastAPI's inner layers and router)."""
    paths: list[str] = []
    original = ExceptionMiddleware.__call__

    async def counted(self: ExceptionMiddleware, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            paths.append(scope["path"])
        await original(self, scope, receive, send)

    monkeypatch.setattr(ExceptionMiddleware, "__call__", counted)
    return paths


async def test_the_edge_calls_the_route_directly_for_a_valid_body_only(
    client: httpx.AsyncClient, inner_layer_calls: list[str]
) -> None:
    raw = json.dumps(VALID).encode()
    assert (await client.post("/v1/optimize", content=raw, headers=JSON)).status_code == 200
    assert (await client.post("/optimize", content=raw, headers=JSON)).status_code == 200
    assert inner_layer_calls == []
    assert (await client.post("/v1/optimize", content=raw, headers=PLUS_JSON)).status_code == 200
    bad = json.dumps({**VALID, "max_results": 0}).encode()
    assert (await client.post("/v1/optimize", content=bad, headers=JSON)).status_code == 422
    assert (await client.get("/healthz")).status_code == 200
    assert inner_layer_calls == ["/v1/optimize", "/v1/optimize", "/healthz"]


async def test_an_error_of_a_direct_answer_is_mapped_by_the_apps_own_layers(
    client: httpx.AsyncClient, inner_layer_calls: list[str]
) -> None:
    raw = json.dumps({**VALID, "locations": [{"zone": "NOWHERE"}]}).encode()
    response = await client.post("/v1/optimize", content=raw, headers=JSON)
    assert inner_layer_calls == ["/v1/optimize"]  # re-raised inside them, not answered again
    assert response.status_code == 422
    assert response.json()["type"].endswith("/invalid-input")
    assert response.headers["x-request-id"] == "rid-1"
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_a_root_path_takes_the_apps_usual_path() -> None:
    app = create_app(Settings(_env_file=None), AppOverrides(clock=fixed_clock()))
    async with (
        LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app, root_path="/api"), base_url="http://test"
        ) as c,
    ):
        response = await c.post("/api/v1/optimize", content=json.dumps(VALID).encode(), headers=JSON)
    assert response.status_code == 200, response.text


def test_a_path_another_route_answers_first_is_never_called_directly() -> None:
    class _Route(JsonBodyRoute):
        body_model = OptimizeRequest

    async def endpoint(body: OptimizeRequest) -> dict[str, int]:
        return {}

    app = FastAPI()
    app.router.add_api_route("/shadowed", endpoint, methods=["POST"])  # an earlier plain route
    for path in ("/shadowed", "/direct"):
        app.router.add_api_route(path, endpoint, methods=["POST"], route_class_override=_Route)
    direct = DirectRoutes(app)

    def scope(method: str, path: str, root_path: str = "") -> dict[str, Any]:
        return {"type": "http", "method": method, "path": path, "root_path": root_path, "headers": []}

    assert direct.route_for(scope("POST", "/shadowed")) is None
    assert direct.route_for(scope("GET", "/direct")) is None
    assert direct.route_for(scope("POST", "/direct/")) is None
    assert direct.route_for(scope("POST", "/direct", root_path="/api")) is None
    found = scope("POST", "/direct")
    route = direct.route_for(found)
    assert isinstance(route, _Route)
    assert route.path == "/direct"
    # The keys the router's match would have set.
    assert (found["route"], found["endpoint"], found["path_params"]) == (route, endpoint, {})
    assert found["router"] is app.router


async def test_fastapi_never_looks_for_an_opentelemetry_provider_per_request(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only `opentelemetry-api` is installed, so no provider can exist: FastAPI's check is off."""
    looked: list[int] = []

    def provider() -> Any:
        looked.append(1)
        raise AssertionError("FastAPI asked for a tracer provider")

    monkeypatch.setattr(opentelemetry.trace, "get_tracer_provider", provider)
    response = await client.post("/v1/optimize", content=json.dumps(VALID).encode(), headers=JSON)
    assert response.status_code == 200
    assert (await client.get("/healthz")).status_code == 200
    assert looked == []


async def test_a_route_with_a_dependency_always_takes_fastapis_handler() -> None:
    """The fast path runs no dependencies, so a route that has one (its own or the app's) never takes it."""
    seen: list[str] = []

    def dependency() -> None:
        seen.append("dependency")

    class _Route(JsonBodyRoute):
        body_model = OptimizeRequest

        async def answer(self, request: Any, body: Any, raw: bytes) -> Response:
            seen.append("fast")
            return Response(b"{}", media_type="application/json")

    async def endpoint(body: OptimizeRequest) -> dict[str, str]:
        seen.append("endpoint")
        return {}

    app = FastAPI(dependencies=[Depends(dependency)])
    app.router.add_api_route("/x", endpoint, methods=["POST"], route_class_override=_Route)
    assert (
        DirectRoutes(app).route_for({"type": "http", "method": "POST", "path": "/x", "root_path": ""}) is None
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        response = await c.post("/x", content=json.dumps(VALID).encode(), headers=JSON)
    assert response.status_code == 200
    assert seen == ["dependency", "endpoint"]


async def test_a_direct_answer_passes_through_cors_the_key_check_and_the_metrics(
    inner_layer_calls: list[str],
) -> None:
    """The direct call sits where the app did, inside the edge: CORS, the key and the series still apply."""
    key = "route-test-key-0123456789abcdefghij"
    settings = {"cors_origins": "https://app.example", "api_keys": key, "rate_limit_enabled": False}

    def count(status: str) -> float:
        labels = {"method": "POST", "status": status, "handler": "/v1/optimize"}
        return REGISTRY.get_sample_value("http_requests_total", labels) or 0.0

    before = count("2xx"), count("4xx")
    async for c in _client(**settings):
        raw = json.dumps(VALID).encode()
        refused = await c.post("/v1/optimize", content=raw, headers={**JSON, "origin": "https://app.example"})
        answered = await c.post(
            "/v1/optimize", content=raw, headers={**JSON, "origin": "https://app.example", "x-api-key": key}
        )
    assert refused.status_code == 401
    assert answered.status_code == 200
    assert answered.headers["access-control-allow-origin"] == "https://app.example"
    assert answered.headers["x-request-id"] == "rid-1"
    assert inner_layer_calls == []  # answered directly
    assert (count("2xx") - before[0], count("4xx") - before[1]) == (1.0, 1.0)
