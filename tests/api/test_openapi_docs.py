"""The OpenAPI document and the self-hosted docs page, in-process.

The page must work with no internet (assets from the package, a CSP naming no third-party host),
every example body must answer 200, operationIds must be readable and unique, and every 200
response must carry a schema so generated clients get types.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from carbon_optimizer.api.docs import ASSET_PATHS
from carbon_optimizer.api.examples import example_bodies
from carbon_optimizer.settings import Settings
from tests.api.conftest import ClientFactory


async def test_docs_page_loads_its_assets_from_this_origin(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    html = page.text
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources, html
    assert all(s.startswith("/") for s in sources), sources  # nothing from a CDN
    csp = page.headers["content-security-policy"]
    assert "http" not in csp
    assert "'self'" in csp
    for path in ASSET_PATHS:
        asset = await client.get(path)
        assert asset.status_code == 200, path
        assert len(asset.content) > 1000
    assert "swagger-ui-bundle.js" in html
    assert "swagger-ui.css" in html


async def test_asset_routes_take_no_parameters(client: httpx.AsyncClient) -> None:
    # A query string cannot pick another file.
    plain = await client.get(ASSET_PATHS[0])
    asset = await client.get(ASSET_PATHS[0], params={"path": "/etc/passwd", "media_type": "text/plain"})
    assert asset.status_code == 200
    assert asset.content == plain.content
    assert asset.headers["content-type"].startswith("text/javascript")


async def test_docs_disabled_removes_page_assets_and_schema(client_factory: ClientFactory) -> None:
    async with client_factory(Settings(_env_file=None, docs_enabled=False)) as client:
        for path in ("/docs", "/openapi.json", *ASSET_PATHS):
            assert (await client.get(path)).status_code == 404, path


async def test_docs_and_assets_need_no_key_when_keys_are_configured(client_factory: ClientFactory) -> None:
    settings = Settings(_env_file=None, api_keys="a-long-enough-test-key-0123456789")
    async with client_factory(settings) as client:
        for path in ("/docs", "/openapi.json", *ASSET_PATHS):
            assert (await client.get(path)).status_code == 200, path
        assert (await client.post("/v1/optimize", json={})).status_code == 401


@pytest.mark.parametrize("name", sorted(example_bodies()))
async def test_every_documented_example_answers_200(client: httpx.AsyncClient, name: str) -> None:
    response = await client.post("/v1/optimize", json=example_bodies()[name])
    assert response.status_code == 200, response.text
    assert response.json()["options"]


async def test_the_default_example_is_a_whole_valid_body(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    content = schema["paths"]["/v1/optimize"]["post"]["requestBody"]["content"]["application/json"]
    examples: dict[str, Any] = content["examples"]
    assert list(examples) == list(example_bodies())
    first = next(iter(examples.values()))["value"]
    assert "string" not in str(first)
    assert ("locations" in first) != ("providers" in first)


async def test_operation_ids_are_readable_and_unique(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    ids = [op["operationId"] for item in schema["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    for op_id in ids:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", op_id), op_id
        assert not re.search(r"_(get|post)$", op_id), op_id  # not FastAPI's path-derived default
    assert "optimize" in ids


async def test_every_operation_documents_a_typed_200(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    for path, item in schema["paths"].items():
        for method, op in item.items():
            ok = op["responses"]["200"]
            ref = ok["content"]["application/json"]["schema"].get("$ref", "")
            assert ref.startswith("#/components/schemas/"), (method, path, ok)
            target = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
            assert target.get("properties"), (method, path)


async def test_edge_answers_are_documented_as_problems(client_factory: ClientFactory) -> None:
    settings = Settings(_env_file=None, api_keys="a-long-enough-test-key-0123456789")
    async with client_factory(settings) as client:
        schema = (await client.get("/openapi.json")).json()
    problem = "#/components/schemas/ProblemOut"
    optimize = schema["paths"]["/v1/optimize"]["post"]["responses"]
    for status in ("401", "413", "415", "422", "429", "503"):
        content = optimize[status]["content"]
        assert content["application/problem+json"]["schema"]["$ref"] == problem, status
    assert "infeasible" in schema["components"]["schemas"]["ProblemOut"]["properties"]
    assert set(schema["components"]["securitySchemes"]) == {"bearerAuth", "apiKeyHeader"}
    # probes need no key and their 503 stays the probe's own JSON
    readyz = schema["paths"]["/readyz"]["get"]
    assert readyz["security"] == []
    assert "application/json" in readyz["responses"]["503"]["content"]


async def test_documented_200_bodies_match_what_routes_serve(client: httpx.AsyncClient) -> None:
    from carbon_optimizer.api import schemas_out

    cases: list[tuple[str, type[BaseModel]]] = [
        ("/v1/regions?provider=gcp", schemas_out.RegionsOut),
        ("/v1/zones", schemas_out.ZonesOut),
        ("/v1/zones/DE/carbon-intensity", schemas_out.ZoneSeriesOut),
        ("/v1/prices?provider=aws&region=us-east-1&limit=3", schemas_out.PricesOut),
        ("/health", schemas_out.HealthOut),
        ("/healthz", schemas_out.LivenessOut),
        ("/readyz", schemas_out.ReadinessOut),
    ]
    for path, model in cases:
        response = await client.get(path)
        assert response.status_code == 200, path
        model.model_validate(response.json(), strict=False)
    body = {"provider": "aws", "region": "us-east-1", "instance_type": "m5.large", "hours": 2}
    estimate = await client.post("/v1/estimate", json=body)
    schemas_out.EstimateOut.model_validate(estimate.json())


async def test_every_schema_field_is_described(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    undescribed = [
        f"{name}.{prop}"
        for name, component in schema["components"]["schemas"].items()
        for prop, spec in component.get("properties", {}).items()
        if not spec.get("description")
    ]
    assert undescribed == []
    modes = schema["components"]["schemas"]["ObjectiveSpec"]["properties"]["mode"]["description"]
    for mode in ("carbon", "cost", "balanced", "carbon_within_budget", "monetized"):
        assert mode in modes
