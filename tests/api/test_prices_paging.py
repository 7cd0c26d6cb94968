"""GET /v1/prices: unknown regions are a 422 naming `region`, and the list pages with an opaque
cursor in a stable order (issue 13, item 8)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest


async def _get(client: httpx.AsyncClient, **params: Any) -> httpx.Response:
    return await client.get("/v1/prices", params=params)


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"region": "nope"}, "unknown region 'nope'"),
        ({"provider": "aws", "region": "nope"}, "unknown region 'nope' for provider 'aws'"),
        # a real region, but of another provider: said so
        (
            {"provider": "gcp", "region": "eu-west-1"},
            "unknown region 'eu-west-1' for provider 'gcp'; aws has it",
        ),
    ],
)
async def test_unknown_region_is_422_naming_region(
    client: httpx.AsyncClient, params: dict[str, str], says: str
) -> None:
    response = await _get(client, **params)
    assert response.status_code == 422
    problem = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    assert problem["detail"] == says
    assert [e["loc"] for e in problem["errors"]] == [["query", "region"]]


async def test_known_regions_still_answer(client: httpx.AsyncClient) -> None:
    # in the region catalog; only in the price tables (an AWS Local Zone); case-insensitive
    for params in (
        {"provider": "aws", "region": "eu-west-1"},
        {"region": "europe-west1"},
        {"provider": "aws", "region": "us-east-1-bos-1"},
        {"provider": "gcp", "region": "EUROPE-WEST1"},
    ):
        response = await _get(client, **params, limit=1)
        assert response.status_code == 200, (params, response.text)


async def test_cursor_pages_through_the_whole_list_in_a_stable_order(client: httpx.AsyncClient) -> None:
    everything = (await _get(client, provider="azure", region="eastus", limit=10000)).json()
    assert everything["truncated"] is False
    assert everything["next_cursor"] is None
    total = everything["count"]
    assert total > 25

    pages: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"provider": "azure", "region": "eastus", "limit": 10}
        if cursor is not None:
            params["cursor"] = cursor
        page = (await _get(client, **params)).json()
        pages.append(page)
        cursor = page["next_cursor"]
        assert page["truncated"] is (cursor is not None)
        if cursor is None:
            break
    rows = [row for page in pages for row in page["prices"]]
    assert rows == everything["prices"]  # no row lost or repeated, same order
    assert len(pages) == -(-total // 10)
    keys = [(r["provider"], r["region"], r["price_type"], r["instance_type"]) for r in rows]
    assert keys == sorted(keys)


async def test_a_cursor_is_tied_to_its_filters(client: httpx.AsyncClient) -> None:
    first = (await _get(client, provider="azure", limit=5)).json()
    cursor = first["next_cursor"]
    assert isinstance(cursor, str)
    assert not cursor.isdigit()  # opaque, not a bare offset
    again = (await _get(client, provider="azure", limit=5, cursor=cursor)).json()
    assert again["prices"][0] != first["prices"][0]
    for params in ({"provider": "gcp", "cursor": cursor}, {"provider": "azure", "cursor": "garbage!"}):
        response = await _get(client, **params)
        assert response.status_code == 422
        assert [e["loc"] for e in response.json()["errors"]] == [["query", "cursor"]]
