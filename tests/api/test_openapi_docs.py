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
