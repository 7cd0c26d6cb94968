"""Every bad input in the contract gets its 4xx with a problem body naming the field; none gives 5xx."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

VALID: dict[str, Any] = {
    "workload": {"duration_minutes": 120, "vcpus": 4, "memory_gib": 8},
    "locations": [{"zone": "DE"}, {"provider": "aws", "region": "us-east-1"}],
    "window": {"earliest_start": "2026-06-03T10:00:00Z", "deadline": "2026-06-04T10:00:00Z"},
    "objective": {"mode": "carbon"},
}


def mutate(path: list[str | int], value: Any, *, delete: bool = False) -> dict[str, Any]:
    data = copy.deepcopy(VALID)
    target: Any = data
    for part in path[:-1]:
        target = target[part]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


def assert_problem(
    response: httpx.Response, status: int, loc: list[str | int] | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert problem["title"]
    assert "type" in problem
    if loc is not None:
        locs = [e["loc"] for e in problem["errors"]]
        assert any(found[: len(loc)] == loc for found in locs), locs
    return problem


CASES: list[tuple[str, dict[str, Any], list[str | int]]] = [
    (
        "missing duration",
        mutate(["workload", "duration_minutes"], None, delete=True),
        ["body", "workload", "duration_minutes"],
    ),
    ("duration zero", mutate(["workload", "duration_minutes"], 0), ["body", "workload", "duration_minutes"]),
    (
        "duration too long",
        mutate(["workload", "duration_minutes"], 10081),
        ["body", "workload", "duration_minutes"],
    ),
    ("vcpus zero", mutate(["workload", "vcpus"], 0), ["body", "workload", "vcpus"]),
    ("memory negative", mutate(["workload", "memory_gib"], -1), ["body", "workload", "memory_gib"]),
    ("power zero", mutate(["workload", "power_watts"], 0), ["body", "workload", "power_watts"]),
    ("unknown workload field", mutate(["workload", "cpus"], 4), ["body", "workload", "cpus"]),
    ("unknown top-level field", mutate(["objectve"], {"mode": "cost"}), ["body", "objectve"]),
    (
        "naive earliest_start",
        mutate(["window", "earliest_start"], "2026-06-03T10:00:00"),
        ["body", "window", "earliest_start"],
    ),
    ("naive deadline", mutate(["window", "deadline"], "2026-06-04T10:00:00"), ["body", "window", "deadline"]),
    (
        "deadline before duration",
        mutate(["window", "deadline"], "2026-06-03T11:00:00Z"),
        ["body", "window", "deadline"],
    ),
    (
        "window over 7 days",
        mutate(["window", "deadline"], "2026-06-11T10:00:00Z"),
        ["body", "window", "deadline"],
    ),
    ("bad step", mutate(["time_step_minutes"], 7), ["body", "time_step_minutes"]),
    ("max_results zero", mutate(["max_results"], 0), ["body", "max_results"]),
    ("max_results too many", mutate(["max_results"], 101), ["body", "max_results"]),
    ("empty locations", mutate(["locations"], []), ["body", "locations"]),
    ("too many locations", mutate(["locations"], [{"zone": "DE"}] * 201), ["body", "locations"]),
    ("unknown zone", mutate(["locations", 0], {"zone": "XX-NOPE"}), ["body", "locations", 0, "zone"]),
    (
        "unknown region",
        mutate(["locations", 1], {"provider": "aws", "region": "mars-1"}),
        ["body", "locations", 1, "region"],
    ),
    (
        "unknown provider",
        mutate(["locations", 1], {"provider": "ibm", "region": "us-south"}),
        ["body", "locations", 1, "provider"],
    ),
    (
        "zone and region",
        mutate(["locations", 0], {"zone": "DE", "provider": "aws", "region": "us-east-1"}),
        ["body", "locations", 0],
    ),
    ("region without provider", mutate(["locations", 0], {"region": "us-east-1"}), ["body", "locations", 0]),
    ("locations and providers", mutate(["providers"], ["aws"]), ["body"]),
    ("bad mode", mutate(["objective"], {"mode": "greenest"}), ["body", "objective", "mode"]),
    (
        "carbon weight above 1",
        mutate(["objective"], {"mode": "balanced", "carbon_weight": 1.5}),
        ["body", "objective", "carbon_weight"],
    ),
    ("monetized without price", mutate(["objective"], {"mode": "monetized"}), ["body", "objective"]),
    (
        "negative budget",
        mutate(["objective"], {"mode": "carbon_within_budget", "max_cost_increase_pct": -1}),
        ["body", "objective", "max_cost_increase_pct"],
    ),
    (
        "cost mode zone without price",
        mutate(["objective"], {"mode": "cost"}),
        ["body", "locations", 0, "price_usd_per_hour"],
    ),
    (
        "unknown gpu model",
        mutate(["workload", "gpu"], {"count": 1, "model": "Voodoo5"}),
        ["body", "workload", "gpu", "model"],
    ),
    ("gpu count zero", mutate(["workload", "gpu"], {"count": 0}), ["body", "workload", "gpu", "count"]),
    (
        "pinned type for unknown provider",
        mutate(["workload", "instance_types"], {"ibm": "x"}),
        ["body", "workload", "instance_types"],
    ),
    ("string for integer", mutate(["workload", "vcpus"], "eight"), ["body", "workload", "vcpus"]),
    (
        "baseline unknown zone",
        mutate(["baseline"], {"location": {"zone": "NOPE"}}),
        ["body", "baseline", "location", "zone"],
    ),
]


@pytest.mark.parametrize(("name", "payload", "loc"), CASES, ids=[c[0] for c in CASES])
async def test_bad_input_names_the_field(
    client: httpx.AsyncClient, name: str, payload: dict[str, Any], loc: list[str | int]
) -> None:
    response = await client.post("/v1/optimize", json=payload)
    assert_problem(response, 422, loc)
    assert "Traceback" not in response.text


async def test_invalid_json_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/optimize", content=b'{"workload": ', headers={"content-type": "application/json"}
    )
    assert_problem(response, 422)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
@pytest.mark.parametrize("field", ["memory_gib", "power_watts", "duration_minutes"])
async def test_non_finite_numbers_are_rejected(client: httpx.AsyncClient, token: str, field: str) -> None:
    text = json.dumps(VALID).replace(
        '"memory_gib": 8',
        f'"memory_gib": 8, "{field}": {token}' if field != "memory_gib" else f'"memory_gib": {token}',
    )
    if field == "duration_minutes":
        text = json.dumps(VALID).replace('"duration_minutes": 120', f'"duration_minutes": {token}')
    response = await client.post(
        "/v1/optimize", content=text.encode(), headers={"content-type": "application/json"}
    )
    assert_problem(response, 422, ["body", "workload", field])


async def test_undecodable_body_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/optimize", content=b'{"workload": "\xff\xfe"}', headers={"content-type": "application/json"}
    )
    assert_problem(response, 422, ["body"])


async def test_openapi_documents_errors_as_problem_json(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    responses = schema["paths"]["/v1/optimize"]["post"]["responses"]
    assert set(responses["422"]["content"]) == {"application/problem+json"}
    assert "HTTPValidationError" not in schema["components"]["schemas"]


async def test_wrong_content_type_is_415(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/optimize", content=json.dumps(VALID).encode(), headers={"content-type": "text/plain"}
    )
    assert_problem(response, 415)


async def test_json_suffix_media_type_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/optimize",
        content=json.dumps(VALID).encode(),
        headers={"content-type": "application/vnd.carbon+json; charset=utf-8"},
    )
    assert response.status_code == 200, response.text


async def test_body_over_limit_is_413(client: httpx.AsyncClient) -> None:
    huge = {**VALID, "padding": "x" * (300 * 1024)}
    response = await client.post("/v1/optimize", json=huge)
    assert_problem(response, 413)


async def test_streamed_body_over_limit_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b" " * 8192

    response = await client.post(
        "/v1/optimize", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_problem(response, 413)


async def test_unknown_route_and_method_are_problems(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/nope"), 404)
    assert_problem(await client.get("/v1/optimize"), 405)


async def test_request_id_is_echoed_or_minted(client: httpx.AsyncClient) -> None:
    echoed = await client.get("/healthz", headers={"x-request-id": "abc-123.x"})
    assert echoed.headers["x-request-id"] == "abc-123.x"
    minted = await client.get("/healthz", headers={"x-request-id": "bad id with spaces"})
    assert minted.headers["x-request-id"] != "bad id with spaces"
    assert len(minted.headers["x-request-id"]) == 32
    error = await client.post("/v1/optimize", json={}, headers={"x-request-id": "err-1"})
    assert error.headers["x-request-id"] == "err-1"
    ok = await client.post("/v1/optimize", json=VALID, headers={"x-request-id": "req-7"})
    assert ok.json()["request_id"] == "req-7"


async def test_zone_series_rejects_naive_and_reversed_times(client: httpx.AsyncClient) -> None:
    assert_problem(
        await client.get("/v1/zones/DE/carbon-intensity", params={"start": "2026-06-03T10:00:00"}),
        422,
        ["query", "start"],
    )
    reversed_range = {"start": "2026-06-03T10:00:00Z", "end": "2026-06-03T09:00:00Z"}
    assert_problem(
        await client.get("/v1/zones/DE/carbon-intensity", params=reversed_range), 422, ["query", "end"]
    )
    assert_problem(await client.get("/v1/zones/NOPE/carbon-intensity"), 422, ["path", "zone"])


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
paths = st.sampled_from(
    [
        ["workload", "duration_minutes"],
        ["workload", "vcpus"],
        ["workload", "memory_gib"],
        ["workload", "gpu"],
        ["workload", "power_watts"],
        ["workload", "instance_types"],
        ["locations"],
        ["locations", 0],
        ["window"],
        ["window", "earliest_start"],
        ["window", "deadline"],
        ["objective"],
        ["time_step_minutes"],
        ["max_results"],
        ["baseline"],
        ["providers"],
    ]
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=paths, value=json_values)
async def test_no_mutated_request_gives_a_5xx(
    client: httpx.AsyncClient, path: list[str | int], value: Any
) -> None:
    payload = mutate(path, value)
    response = await client.post("/v1/optimize", json=payload)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/problem+json")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=json_values)
async def test_no_arbitrary_body_gives_a_5xx(client: httpx.AsyncClient, value: Any) -> None:
    response = await client.post("/v1/optimize", json=value)
    assert response.status_code == 422
